"""Delivery to units: a unit's feed of messages, their delivery state, webhook administration."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from api.auth import AuthRoute, CurrentUser, DbSession, require
from cases import outbox

router = APIRouter(prefix="/api/v1/units", tags=["delivery"], route_class=AuthRoute)

Status = Literal["pending", "delivered", "failed", "feed_only"]


@router.get(
    "/{code}/feed",
    summary="A unit's messages (dispatch, rework, escalation, yellow light, returned by a child unit) "
    "with their delivery state",
    dependencies=[require("unit", "operator", "supervisor", "admin")],
)
async def feed(
    code: str,
    user: CurrentUser,
    session: DbSession,
    since: Annotated[
        str | None,
        Query(description="the `next` of the previous call (a message id), or an ISO 8601 time with offset"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Oldest first. A unit's users see their own unit only (404 for any other)."""
    return await outbox.feed(session, code, user, since, limit)


@router.get(
    "/{code}/outbox",
    summary="Delivery state of a unit's messages, newest first (for support)",
    dependencies=[require("admin", "supervisor")],
)
async def delivery_state(
    code: str,
    session: DbSession,
    status: Status | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    return await outbox.delivery_state(session, code, status, limit)


class WebhookBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: AnyHttpUrl | None = Field(description="where messages are posted; null removes the webhook")
    secret: str | None = Field(
        default=None,
        min_length=16,
        max_length=200,
        description="HMAC key of X-CityGrid-Signature; omitted: a new one is generated and returned once",
    )


@router.put(
    "/{code}/webhook",
    summary="Set or remove a unit's webhook",
    dependencies=[require("admin")],
)
async def set_webhook(code: str, body: WebhookBody, session: DbSession) -> dict[str, Any]:
    """The secret is write-only: a generated one is in this answer (``secret``) and never again."""
    url = str(body.url) if body.url is not None else None
    return await outbox.set_webhook(session, code, url, body.secret)


@router.post(
    "/{code}/outbox/{message_id}/retry",
    summary="Send a failed message again",
    dependencies=[require("admin")],
)
async def retry(code: str, message_id: int, session: DbSession) -> dict[str, Any]:
    return await outbox.retry(session, code, message_id)
