"""Who is calling: bearer-token authentication and role checks, as FastAPI dependencies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from cases.accounts import Principal, principal_for_token
from geo.errors import Forbidden, Unauthenticated
from geo.grid_index import GridIndex

_bearer = HTTPBearer(auto_error=False, description="The access token of POST /api/v1/auth/token")

STAFF = ("operator", "supervisor", "unit", "planner", "admin")


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.db.sessions() as session:
        yield session


DbSession = Annotated[AsyncSession, Depends(get_session)]


def get_grid_index(request: Request) -> GridIndex | None:
    """The in-process grid index when it is loaded and current; None: ask the database."""
    keeper = request.app.state.grid_index
    return keeper.current() if keeper is not None else None


Grids = Annotated[GridIndex | None, Depends(get_grid_index)]


async def current_user(
    session: DbSession,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthenticated("send Authorization: Bearer <token>")
    principal = await principal_for_token(session, credentials.credentials)
    if principal is None:
        raise Unauthenticated("the token is unknown, expired or revoked")
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]


def require(*roles: str):
    """A dependency admitting callers holding any of ``roles`` (403 otherwise)."""

    async def check(user: CurrentUser) -> Principal:
        if not user.has(*roles):
            raise Forbidden(f"this needs one of the roles: {', '.join(roles)}")
        return user

    return Depends(check)
