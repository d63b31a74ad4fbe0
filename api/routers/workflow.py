"""The closed loop over HTTP: report actions, case actions, case reads and the queues.

Annotations are evaluated eagerly here (no ``from __future__ import annotations``): the case
action endpoints are made in a loop, and FastAPI must see each one's own body model.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from api.auth import AuthRoute, CurrentUser, DbSession, require
from api.routers.reports import form_with_photos, photo_store
from cases import reading, workflow
from cases.lifecycle import ACTIONS
from cases.photos import discard
from cases.reports import get as get_report
from cases.rules import suggest
from geo.errors import InvalidInput

router = APIRouter(prefix="/api/v1", tags=["workflow"], route_class=AuthRoute)

RejectReason = Literal["out_of_scope", "not_found_on_site", "duplicate", "outside_jurisdiction", "invalid"]
ReturnReason = Literal["not_our_responsibility", "wrong_location", "needs_another_unit", "other"]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int | None = Field(default=None, description="the version read; 409 version_conflict if stale")
    note: str | None = Field(default=None, max_length=2000)


class RejectBody(Body):
    reason: RejectReason


class MergeBody(Body):
    case: str = Field(min_length=3, max_length=40, description="number of the open case")


class DispatchBody(Body):
    unit: str | None = Field(default=None, description="unit code; omitted: the rules' suggestion")
    deadline_class: str | None = None
    priority: int | None = Field(default=None, ge=1, le=5)


class ReturnBody(Body):
    reason: ReturnReason


class ExtensionBody(Body):
    amount: float = Field(gt=0, le=365)
    unit: Literal["natural_hour", "working_hour", "working_day"] = "working_day"
    reason: str = Field(min_length=1, max_length=2000)


class ReasonBody(Body):
    reason: str = Field(min_length=1, max_length=2000)


class EscalateBody(Body):
    note: str = Field(min_length=1, max_length=2000)


def _case_input(body: Body) -> workflow.CaseInput:
    data = body.model_dump()
    return workflow.CaseInput(
        version=data.get("version"),
        note=data.get("note"),
        reason=data.get("reason"),
        unit=data.get("unit"),
        deadline_class=data.get("deadline_class"),
        priority=data.get("priority"),
        amount=data.get("amount"),
        amount_unit=data.get("unit") if isinstance(body, ExtensionBody) else "working_day",
    )


# --- report actions ---------------------------------------------------------------------------


@router.post(
    "/reports/{report_id}/file",
    summary="立案: file a report as a case",
    dependencies=[require("operator", "supervisor")],
)
async def file(
    report_id: int, user: CurrentUser, session: DbSession, body: Body | None = None
) -> dict[str, Any]:
    body = body or Body()
    number = await workflow.file_report(session, user, report_id, body.version, body.note)
    return await reading.get_case(session, number, user)


@router.post(
    "/reports/{report_id}/reject",
    summary="不予立案: reject a report with a reason",
    dependencies=[require("operator", "supervisor")],
)
async def reject(report_id: int, body: RejectBody, user: CurrentUser, session: DbSession) -> dict[str, Any]:
    await workflow.reject_report(session, user, report_id, body.reason, body.note)
    return await get_report(session, report_id, user)


@router.post(
    "/reports/{report_id}/merge",
    summary="Attach a report to an open case (重复上报)",
    dependencies=[require("operator", "supervisor")],
)
async def merge(report_id: int, body: MergeBody, user: CurrentUser, session: DbSession) -> dict[str, Any]:
    number = await workflow.merge_report(session, user, report_id, body.case, body.note)
    return await reading.get_case(session, number, user)


@router.post(
    "/reports/{report_id}/request_verification",
    summary="核实: send a verify task to the beat owner",
    dependencies=[require("operator", "supervisor")],
)
async def request_verification(
    report_id: int, user: CurrentUser, session: DbSession, body: Body | None = None
) -> dict[str, Any]:
    await workflow.request_verification(session, user, report_id, (body or Body()).note)
    return await get_report(session, report_id, user)


@router.post(
    "/reports/{report_id}/self_handle",
    summary="自处理: fixed on the spot (multipart: action + photos)",
    dependencies=[require("collector")],
)
async def self_handle(
    report_id: int, request: Request, user: CurrentUser, session: DbSession
) -> dict[str, Any]:
    store = photo_store(request)
    body, photos = await form_with_photos(request, Body, "action", minimum=1, default="{}")
    try:
        number = await workflow.self_handle(session, store, user, report_id, body.note, photos)
    except BaseException:
        discard(photos)
        raise
    return await reading.get_case(session, number, user)


@router.get("/reports/{report_id}/duplicates", summary="Open cases this report may repeat")
async def report_duplicates(report_id: int, user: CurrentUser, session: DbSession) -> list[dict[str, Any]]:
    return await reading.duplicates(session, report_id, user)


@router.get(
    "/intake",
    summary="The operators' intake queue: reports waiting, with flags and duplicates",
    dependencies=[require("operator", "supervisor")],
)
async def intake(
    session: DbSession, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> list[dict[str, Any]]:
    return await reading.intake_queue(session, limit)


# --- case actions -----------------------------------------------------------------------------

CASE_BODIES: dict[str, type[Body]] = {
    "dispatch": DispatchBody,
    "subdispatch": DispatchBody,
    "sign": Body,
    "return": ReturnBody,
    "request_extension": ExtensionBody,
    "approve_extension": Body,
    "deny_extension": Body,
    "suspend": ReasonBody,
    "resume": Body,
    "close": Body,
    "cancel": ReasonBody,
    "escalate": EscalateBody,
}
OPTIONAL_BODY = {"dispatch", "sign", "approve_extension", "deny_extension", "resume", "close"}


def _roles(action: str) -> tuple[str, ...]:
    roles = set(ACTIONS[action].roles)
    return tuple(sorted(roles | ({"supervisor"} if "operator" in roles else set())))


def _case_endpoint(action: str, model: type[Body]) -> Callable[..., Awaitable[dict[str, Any]]]:
    if action in OPTIONAL_BODY:

        async def endpoint(
            number: str, request: Request, user: CurrentUser, session: DbSession, body: model | None = None
        ) -> dict[str, Any]:  # type: ignore[valid-type]
            await workflow.act(
                session, photo_store(request), user, number, action, _case_input(body or model())
            )
            return await reading.get_case(session, number, user, check=False)
    else:

        async def endpoint(
            number: str,
            request: Request,
            body: model,
            user: CurrentUser,  # type: ignore[valid-type]
            session: DbSession,
        ) -> dict[str, Any]:
            await workflow.act(session, photo_store(request), user, number, action, _case_input(body))
            return await reading.get_case(session, number, user, check=False)

    return endpoint


for _action, _model in CASE_BODIES.items():
    router.add_api_route(
        f"/cases/{{number}}/{_action}",
        _case_endpoint(_action, _model),
        methods=["POST"],
        summary=f"{ACTIONS[_action].chinese}: {_action}",
        dependencies=[require(*_roles(_action))],
        name=f"case_{_action}",
    )


@router.post(
    "/cases/{number}/handle",
    summary="处置反馈: report back (multipart: action + photos)",
    dependencies=[require("unit")],
)
async def handle(number: str, request: Request, user: CurrentUser, session: DbSession) -> dict[str, Any]:
    store = photo_store(request)
    body, photos = await form_with_photos(request, Body, "action", minimum=1, default="{}")
    try:
        await workflow.act(session, store, user, number, "handle", _case_input(body), photos)
    except BaseException:
        discard(photos)
        raise
    return await reading.get_case(session, number, user)


# --- reading ------------------------------------------------------------------------------------


@router.get("/cases", summary="The case queue with filters and keyset pagination")
async def cases(
    user: CurrentUser,
    session: DbSession,
    status: Annotated[list[str] | None, Query(description="one or more statuses")] = None,
    district: Annotated[str | None, Query(description="management area code or name")] = None,
    street: str | None = None,
    grid: str | None = None,
    category: Annotated[str | None, Query(alias="class", pattern=r"^\d{2}(\d{3})?$")] = None,
    unit: Annotated[str | None, Query(description="unit code")] = None,
    overdue: bool | None = None,
    light: Literal["green", "yellow", "red"] | None = None,
    escalated: bool | None = None,
    bbox: Annotated[str | None, Query(pattern=r"^-?[\d.]+(,-?[\d.]+){3}$")] = None,
    q: Annotated[str | None, Query(alias="text", max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    after: Annotated[int | None, Query(description="the `next` cursor of the previous page")] = None,
) -> dict[str, Any]:
    box = tuple(float(v) for v in bbox.split(",")) if bbox else None
    if box and not (box[0] < box[2] and box[1] < box[3]):
        raise InvalidInput(
            "bbox must be minLon,minLat,maxLon,maxLat", errors=[{"field": "bbox", "message": "min < max"}]
        )
    f = reading.CaseFilter(status, district, street, grid, category, unit, overdue, light, escalated, box, q)
    return await reading.list_cases(session, user, f, limit, after)


@router.get("/cases/{number}", summary="One case")
async def case(number: str, user: CurrentUser, session: DbSession) -> dict[str, Any]:
    return await reading.get_case(session, number, user)


@router.get("/cases/{number}/history", summary="The append-only event log of a case")
async def case_history(number: str, user: CurrentUser, session: DbSession) -> list[dict[str, Any]]:
    return await reading.history(session, number, user)


@router.get(
    "/cases/{number}/dispatch-suggestion",
    summary="Where the rules would send the case, and why",
    dependencies=[require("operator", "supervisor")],
)
async def dispatch_suggestion(number: str, user: CurrentUser, session: DbSession) -> dict[str, Any]:
    row = await reading.case_row(session, number, user)
    return (await suggest(session, workflow.facts(row))).as_dict()
