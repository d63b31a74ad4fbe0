"""Who is calling: bearer-token authentication and role checks, run before anything else.

API.md fixes the order of checks: authentication (401) → role (403) → visibility (404) →
input (4xx) → state (409). Plain FastAPI gets only part of it right: it solves dependencies
(``CurrentUser``, ``require(...)``) before validating the endpoint's own path, query and body
parameters, but it reads and *parses* the body first — malformed JSON answers 422 before 401,
and a multipart upload from an anonymous caller is read and spooled before it is refused.

``AuthRoute`` closes that gap. A router opts in with ``APIRouter(..., route_class=AuthRoute)``;
each of its routes then looks at its own dependency tree once, at start-up, for
``current_user`` and for the role sets of ``require(...)``, and its handler checks the bearer
token and those roles before FastAPI touches the body. The principal is kept in the request
scope, so ``CurrentUser`` later returns it without a second lookup. ``AuthRoute`` also opens
the request's session (``DbSession``) and closes it when the endpoint has returned, so
``DbSession`` needs a router that opted in. Routes without ``CurrentUser``/``require`` (sign-in)
are not checked, and adopting ``AuthRoute`` changes no route's behaviour except to move 401/403
ahead of every 4xx. Dependencies added at ``include_router(dependencies=...)``
are not seen by the early check (FastAPI still enforces them, later): declare roles on the
router or the route. When a test overrides ``current_user`` or a role check through
``app.dependency_overrides``, the early check steps aside for the override.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.ext.asyncio import AsyncSession

from cases.accounts import ROLES, Principal, principal_for_token
from geo.errors import Forbidden, Unauthenticated
from geo.grid_index import GridIndex

if TYPE_CHECKING:
    from api.copies import Copies

_bearer = HTTPBearer(auto_error=False, description="The access token of POST /api/v1/auth/token")

STAFF = ("operator", "supervisor", "unit", "planner", "admin")

_PRINCIPAL_KEY = "citygrid.principal"  # request scope: the principal once authenticated
_ROLES_ATTR = "citygrid_roles"  # on require()'s check: the roles it admits


_SESSION_KEY = "citygrid.session"  # request scope: the request's session, opened by AuthRoute


async def get_session(request: Request) -> AsyncSession:
    """The request's session. ``AuthRoute`` opens it before anything else and closes it once
    the endpoint has returned: a plain dependency, not one with ``yield``, whose exit stack and
    cancel scope cost every request more than the rest of the dependency tree (measured)."""
    session = request.scope.get(_SESSION_KEY)
    if session is None:
        raise RuntimeError("DbSession needs a router with route_class=AuthRoute")
    return session


DbSession = Annotated[AsyncSession, Depends(get_session)]


def copies(request: Request) -> Copies | None:
    """The app's in-memory copies; None where no lifespan started them (the database answers)."""
    return request.app.state.copies


async def get_grid_index(request: Request) -> GridIndex | None:
    """The in-memory grid index, or None (not started, or reloading): callers then ask the database."""
    return kept.grid_index.current() if (kept := copies(request)) else None


Grids = Annotated[GridIndex | None, Depends(get_grid_index)]


async def _principal(request: Request, session: AsyncSession, token: str | None) -> Principal:
    cached = request.scope.get(_PRINCIPAL_KEY)
    if cached is not None:
        return cached
    if not token:
        raise Unauthenticated("send Authorization: Bearer <token>")
    principal = await principal_for_token(session, token, kept.tokens if (kept := copies(request)) else None)
    if principal is None:
        raise Unauthenticated("the token is unknown, expired or revoked")
    request.scope[_PRINCIPAL_KEY] = principal
    return principal


def forget_principal(request: Request, user_id: int) -> None:
    """After committing a change to a user's tokens or account: this process's copy of the
    user's principal is dropped at once (other processes drop theirs on the notification)."""
    if kept := copies(request):
        kept.tokens.forget(user_id)


async def access_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str | None:
    """The raw bearer token of the request, if any (sign-out revokes it)."""
    return credentials.credentials if credentials else None


AccessToken = Annotated[str | None, Depends(access_token)]


async def current_user(request: Request, session: DbSession, token: AccessToken) -> Principal:
    """The signed-in caller (401 ``unauthenticated`` without a valid token)."""
    return await _principal(request, session, token)


CurrentUser = Annotated[Principal, Depends(current_user)]


def _check_roles(user: Principal, roles: tuple[str, ...]) -> None:
    if not user.has(*roles):
        raise Forbidden(f"this needs one of the roles: {', '.join(roles)}")


def require(*roles: str) -> Any:
    """A dependency admitting callers holding any of ``roles`` (401 without a token, 403 otherwise).

    Use it in ``dependencies=[...]`` of a route or router, or as a parameter's ``Depends``."""
    unknown = set(roles).difference(ROLES)
    if not roles or unknown:
        raise ValueError(f"require() needs roles among {ROLES}, not {sorted(unknown) or 'none'}")

    async def check(user: CurrentUser) -> Principal:
        _check_roles(user, roles)
        return user

    setattr(check, _ROLES_ATTR, roles)
    return Depends(check)


@dataclass(frozen=True)
class _Requirement:
    """What a route demands of its caller, read from its dependency tree."""

    calls: frozenset[Callable[..., Any]]  # the dependencies the early check stands in for
    role_sets: tuple[tuple[str, ...], ...]  # every set must be met (each is any-of)


def _calls(dependant: Dependant) -> list[Callable[..., Any]]:
    """Every dependency in a route's tree."""
    calls, stack = [], list(dependant.dependencies)
    while stack:
        sub = stack.pop()
        if sub.call is not None:
            calls.append(sub.call)
        stack.extend(sub.dependencies)
    return calls


def _requirement(calls: list[Callable[..., Any]]) -> _Requirement | None:
    """What the early check stands in for: ``current_user`` and the ``require(...)`` checks."""
    checks = [c for c in calls if c is current_user or getattr(c, _ROLES_ATTR, None) is not None]
    role_sets = tuple(getattr(c, _ROLES_ATTR) for c in checks if c is not current_user)
    return _Requirement(frozenset(checks), role_sets) if checks else None


async def _admit(request: Request, session: AsyncSession, requirement: _Requirement) -> None:
    scheme, token = get_authorization_scheme_param(request.headers.get("Authorization"))
    user = await _principal(request, session, token if scheme.lower() == "bearer" else None)
    for roles in requirement.role_sets:
        _check_roles(user, roles)


class AuthRoute(APIRoute):
    """An ``APIRoute`` that authenticates and checks roles before the request body is read,
    and holds the request's session (``DbSession``): one connection, one transaction a request."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        calls = _calls(self.dependant)
        requirement = _requirement(calls)
        if requirement is None and get_session not in calls:
            return handler

        async def authenticated_first(request: Request) -> Response:
            session = request.app.state.db.sessions()
            request.scope[_SESSION_KEY] = session
            try:
                overrides = getattr(request.app, "dependency_overrides", None) or {}
                if requirement is not None and not any(call in overrides for call in requirement.calls):
                    await _admit(request, session, requirement)
                return await handler(request)
            finally:
                request.scope.pop(_SESSION_KEY, None)
                await session.close()

        return authenticated_first
