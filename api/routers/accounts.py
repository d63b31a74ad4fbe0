"""Sign-in and the caller's profile."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request

from api.auth import CurrentUser, DbSession
from cases.accounts import authenticate, issue_token
from geo.units import unit_by_id
from grids.beats import beat_of

router = APIRouter(prefix="/api/v1", tags=["accounts"])


@router.post("/auth/token", summary="Sign in (OAuth2 password form)")
async def token(
    request: Request,
    session: DbSession,
    username: Annotated[str, Form(min_length=1, max_length=100)],
    password: Annotated[str, Form(min_length=1, max_length=200)],
) -> dict[str, Any]:
    address = request.client.host if request.client else "unknown"
    user = await authenticate(session, username, password, address)
    ttl = request.app.state.settings.token_ttl_s
    access_token = await issue_token(session, user.id, ttl)
    await session.commit()
    return {
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": ttl,
        "roles": sorted(user.roles),
    }


@router.get("/me", summary="The caller's profile; a collector's beat")
async def me(user: CurrentUser, session: DbSession) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "id": user.id,
        "username": user.username,
        "display_name": user.display_name,
        "roles": sorted(user.roles),
        "unit": None,
    }
    if user.unit_id is not None:
        unit = await unit_by_id(session, user.unit_id)
        profile["unit"] = {"code": unit["code"], "name": unit["name"]} if unit else None
    if user.has("collector"):
        profile["beat"] = await beat_of(session, user.id)
    return profile
