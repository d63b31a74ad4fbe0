"""User administration (系统管理): accounts, roles, unit binding and passwords; role ``admin`` only."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from api.auth import AuthRoute, CurrentUser, DbSession, forget_principal, require
from cases import accounts

router = APIRouter(
    prefix="/api/v1/admin", tags=["admin"], dependencies=[require("admin")], route_class=AuthRoute
)

Role = Literal["collector", "operator", "supervisor", "unit", "planner", "admin"]
assert set(get_args(Role)) == set(accounts.ROLES), "Role must list exactly cases.accounts.ROLES"

Username = Annotated[
    str,
    Field(pattern=r"^[a-z0-9][a-z0-9._-]{1,63}$", description="2-64 of a-z 0-9 . _ -, e.g. collector79"),
]
DisplayName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Roles = Annotated[list[Role], Field(min_length=1, description="a non-empty set of roles")]
UnitCode = Annotated[
    str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=64, description="unit code, e.g. water")
]
Password = Annotated[str, Field(min_length=accounts.MIN_PASSWORD_LENGTH, max_length=200)]


class NewUserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Username
    display_name: DisplayName
    roles: Roles
    unit: UnitCode | None = Field(default=None, description="required iff roles include unit")
    password: Password


class UserPatch(BaseModel):
    """Only the fields sent change; ``unit: null`` unbinds, ``disabled: true`` revokes all tokens."""

    model_config = ConfigDict(extra="forbid")

    display_name: DisplayName | None = None
    roles: Roles | None = None
    unit: UnitCode | None = None
    disabled: bool | None = None

    @field_validator("display_name", "roles", "disabled", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Defaults are not validated, so a None here was sent explicitly.
        if value is None:
            raise ValueError("may be left out but not null")
        return value


class PasswordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: Password


async def _existing_user(username: str, session: DbSession) -> dict[str, Any]:
    # A dependency, so an unknown user is 404 before the body is validated (API.md order).
    return await accounts.get_user(session, username)


ExistingUser = Annotated[dict[str, Any], Depends(_existing_user)]


@router.post("/users", status_code=201, summary="Create a user")
async def create_user(body: NewUserIn, session: DbSession, response: Response) -> dict[str, Any]:
    user = await accounts.create_user(
        session,
        accounts.NewUser(body.username, body.display_name, frozenset(body.roles), body.password, body.unit),
    )
    await session.commit()
    response.headers["Location"] = f"/api/v1/admin/users/{user['username']}"
    return user


@router.get("/users", summary="Users, by role, unit and status")
async def list_users(
    session: DbSession,
    role: Annotated[Role | None, Query(description="only users holding this role")] = None,
    unit: Annotated[str | None, Query(description="only users bound to this unit code")] = None,
    disabled: Annotated[bool | None, Query(description="only disabled (true) or enabled (false)")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[dict[str, Any]]:
    return await accounts.list_users(session, role, unit, disabled, limit, offset)


@router.get("/users/{username}", summary="One user")
async def get_user(user: ExistingUser) -> dict[str, Any]:
    return user


@router.patch("/users/{username}", summary="Change name, roles, unit; disable or enable")
async def update_user(
    request: Request, admin: CurrentUser, _: ExistingUser, username: str, body: UserPatch, session: DbSession
) -> dict[str, Any]:
    sent = body.model_fields_set
    changes = accounts.UserChanges(
        display_name=body.display_name,
        roles=frozenset(body.roles) if body.roles is not None else None,
        unit=body.unit if "unit" in sent else accounts.UNSET,
        disabled=body.disabled,
    )
    user = await accounts.update_user(session, username, changes, actor_id=admin.id)
    await session.commit()
    forget_principal(request, user["id"])
    return user


@router.post(
    "/users/{username}/password", status_code=204, summary="Reset a password (revokes the user's tokens)"
)
async def reset_password(
    request: Request, user: ExistingUser, username: str, body: PasswordIn, session: DbSession
) -> Response:
    await accounts.reset_password(session, username, body.password)
    await session.commit()
    forget_principal(request, user["id"])
    return Response(status_code=204)
