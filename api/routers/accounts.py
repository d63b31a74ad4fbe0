"""Sign-in, sign-out and the caller's profile."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import JSONResponse

from api.auth import AccessToken, AuthRoute, CurrentUser, DbSession, forget_principal
from api.errors import problem
from cases.accounts import authenticate, issue_token, revoke_token
from geo.errors import TooManyAttempts
from geo.units import unit_by_id
from grids.beats import beat_of

router = APIRouter(prefix="/api/v1", tags=["accounts"], route_class=AuthRoute)


@router.post("/auth/token", summary="Sign in (OAuth2 password form)", response_model=None)
async def token(
    request: Request,
    session: DbSession,
    username: Annotated[str, Form(min_length=1, max_length=100)],
    password: Annotated[str, Form(min_length=1, max_length=200)],
) -> dict[str, Any] | JSONResponse:
    address = request.client.host if request.client else "unknown"
    try:
        user = await authenticate(session, username, password, address)
    except TooManyAttempts as exc:
        # The generic handler sets no Retry-After; API.md clients rely on it here.
        retry_after = {"Retry-After": str(exc.extra["retry_after_s"])}
        return problem(429, exc.code, exc.title, exc.detail, headers=retry_after, **exc.extra)
    ttl = request.app.state.settings.token_ttl_s
    access_token = await issue_token(session, user.id, ttl)
    await session.commit()
    return {
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": ttl,
        "roles": sorted(user.roles),
    }


@router.post("/auth/logout", status_code=204, summary="Sign out: revoke the caller's token")
async def logout(
    request: Request, user: CurrentUser, session: DbSession, access_token: AccessToken
) -> Response:
    if access_token:  # always set once CurrentUser has admitted the caller
        await revoke_token(session, access_token)
        await session.commit()
        forget_principal(request, user.id)
    return Response(status_code=204)


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
