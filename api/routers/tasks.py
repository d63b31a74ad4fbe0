"""Collector tasks (核实 verify, 核查 check): the collector's list and their results (API.md)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.auth import AuthRoute, CurrentUser, DbSession, require
from api.routers.reports import Location, form_with_photos, photo_store
from api.uploads import Limits
from cases import tasks
from cases.photo_store import PhotoStore
from cases.photos import CheckedPhoto, discard
from geo.errors import NotFound

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"], route_class=AuthRoute)


class ResultPart(BaseModel):
    """The JSON part ``result`` of API.md."""

    client_id: str = Field(min_length=8, max_length=100)
    outcome: Literal["confirmed", "not_found", "fixed", "not_fixed"]
    note: str | None = Field(default=None, max_length=2000)
    location: Location

    def to_input(self) -> tasks.ResultInput:
        return tasks.ResultInput(
            client_id=self.client_id,
            outcome=self.outcome,
            lon=self.location.lon,
            lat=self.location.lat,
            crs=self.location.crs.value,
            accuracy_m=self.location.accuracy_m,
            note=self.note or "",  # absent, null and "" are the same note
        )


async def _drain(request: Request, cap: int = Limits().max_body_bytes) -> None:
    """Read and drop the unread body, so that a client still sending it can read the answer."""
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > cap:
            break


def _thumbnails(store: PhotoStore, photos: list[CheckedPhoto]) -> None:
    for photo in photos:
        store.thumbnail(photo.sha256)


@router.get("", summary="The caller's tasks, open ones first", dependencies=[require("collector")])
async def list_tasks(
    user: CurrentUser,
    session: DbSession,
    status: Annotated[Literal["open", "done", "cancelled"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> list[dict[str, Any]]:
    return await tasks.list_tasks(session, user.id, status, limit)


@router.get(
    "/{task_id}",
    summary="One task (a collector sees only their own)",
    dependencies=[require("collector", *tasks.READ_ALL)],
)
async def get_task(task_id: int, user: CurrentUser, session: DbSession) -> dict[str, Any]:
    return await tasks.get_task(session, task_id, user)


@router.post(
    "/{task_id}/result",
    summary="Report the result of a task with photos (idempotent on client_id)",
    dependencies=[require("collector")],
)
async def submit_result(
    task_id: int, request: Request, user: CurrentUser, session: DbSession, background: BackgroundTasks
) -> JSONResponse:
    # Visibility (404) comes before input errors; the connection goes back to the pool before the
    # upload is read, which may take long on a mobile link.
    try:
        await tasks.own_task_kind(session, task_id, user)
    except NotFound:
        await _drain(request)
        raise
    finally:
        await session.rollback()
    store = photo_store(request)
    part, photos = await form_with_photos(request, ResultPart, "result", minimum=0)
    try:
        body, recorded = await tasks.submit_result(session, store, user, task_id, part.to_input(), photos)
    except BaseException:
        discard(photos)
        raise
    if recorded:
        background.add_task(asyncio.to_thread, _thumbnails, store, photos)
    else:
        discard(photos)  # a retry: the first request's files are the stored ones
    return JSONResponse(body, status_code=200, background=background)
