"""Photos, served only to who may see them; originals are kept untouched as evidence."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse

from api.auth import AuthRoute, CurrentUser, DbSession, require
from cases.photos import StoredPhoto, visible_photo

router = APIRouter(prefix="/api/v1/photos", tags=["photos"], route_class=AuthRoute)

# Content-addressed: a photo id never changes its bytes, so clients may keep it for long.
CACHE = "private, max-age=604800, immutable"


def _cached(request: Request, etag: str) -> Response | None:
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": CACHE})
    return None


def _serve(request: Request, photo: StoredPhoto, variant: str, path, media_type: str) -> Response:
    etag = f'"{photo.sha256}-{variant}"'
    return _cached(request, etag) or FileResponse(
        path, media_type=media_type, headers={"ETag": etag, "Cache-Control": CACHE}
    )


@router.get("/{photo_id}", summary="A photo: auto-rotated, all metadata stripped")
async def photo(photo_id: int, request: Request, user: CurrentUser, session: DbSession) -> Response:
    found = await visible_photo(session, photo_id, user)
    store = request.app.state.photo_store
    path = await asyncio.to_thread(store.public, found.sha256, found.content_type)
    return _serve(request, found, "public", path, found.content_type)


@router.get("/{photo_id}/thumbnail", summary="A 320 px JPEG thumbnail")
async def thumbnail(photo_id: int, request: Request, user: CurrentUser, session: DbSession) -> Response:
    found = await visible_photo(session, photo_id, user)
    path = await asyncio.to_thread(request.app.state.photo_store.thumbnail, found.sha256)
    return _serve(request, found, "thumb", path, "image/jpeg")


@router.get(
    "/{photo_id}/original",
    summary="The original file as received (evidence)",
    dependencies=[require("operator", "supervisor")],
)
async def original(photo_id: int, request: Request, user: CurrentUser, session: DbSession) -> Response:
    found = await visible_photo(session, photo_id, user)
    return _serve(
        request, found, "original", request.app.state.photo_store.path_of(found.sha256), found.content_type
    )
