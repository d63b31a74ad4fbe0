"""Dispatch rules over HTTP: the active set, YAML export and import as new versions, history,
activation, simulation on past cases and each rule's record (派遣规则管理)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from api.auth import AuthRoute, CurrentUser, DbSession, require
from api.uploads import MB, bounded_body
from cases import rule_quality, rule_sets
from cases.rules import load_rules
from geo.errors import InvalidInput, NotFound, UnsupportedMediaType

router = APIRouter(prefix="/api/v1/dispatch-rules", tags=["dispatch rules"], route_class=AuthRoute)

READERS = ("operator", "supervisor", "planner", "admin")
ANALYSTS = ("admin", "planner", "supervisor")

MAX_BODY_BYTES = 1 * MB  # a city's rule set is ~10 kB; far more is a mistake or abuse
MAX_SIMULATE_BYTES = 2 * MB  # a rule set as a JSON string, escaped
DRAIN_CAP_BYTES = 16 * MB
YAML_TYPES = frozenset(("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"))
JSON_TYPES = frozenset(("application/json",))

Version = Annotated[int, Path(ge=1, le=2_147_483_647, description="rule set version")]


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise InvalidInput(
            f"the body is not JSON at {where}: {exc.msg}",
            errors=[{"field": "body", "message": f"{where}: {exc.msg}", "line": exc.lineno}],  # type: ignore[dict-item]
        ) from exc
    except (ValueError, RecursionError) as exc:
        raise InvalidInput("the body is not JSON", errors=[{"field": "body", "message": str(exc)}]) from exc


@router.get("", summary="The active rule set with its version", dependencies=[require(*READERS)])
async def active(session: DbSession) -> dict[str, Any]:
    return await rule_sets.view(session)


@router.get(
    "/export",
    summary="A rule set as YAML (default: the active one)",
    dependencies=[require(*READERS)],
    response_class=Response,
    responses={200: {"content": {"application/yaml": {}}}},
)
async def export(
    session: DbSession, version: Annotated[int | None, Query(ge=1, le=2_147_483_647)] = None
) -> Response:
    body = await rule_sets.export_yaml(session, version)
    number = version or (await rule_sets.version_meta(session))["version"]
    return Response(
        body,
        media_type="application/yaml; charset=utf-8",
        headers={"Content-Disposition": f'inline; filename="dispatch-rules-v{number}.yaml"'},
    )


@router.put(
    "",
    status_code=201,
    summary="Store a new version from YAML (application/yaml) or JSON; active unless ?activate=false",
    dependencies=[require("admin")],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/yaml": {"schema": {"type": "string"}}, "application/json": {}},
        }
    },
)
async def put(
    request: Request,
    user: CurrentUser,
    session: DbSession,
    activate: Annotated[bool, Query(description="make the new version the active one")] = True,
) -> dict[str, Any]:
    media = _media_type(request)
    if media not in YAML_TYPES | JSON_TYPES:
        raise UnsupportedMediaType(
            f"send the rule set as application/yaml or application/json, not {media or 'no content type'}"
        )
    raw = await bounded_body(request, MAX_BODY_BYTES, DRAIN_CAP_BYTES)
    document = rule_sets.read_document(_json(raw) if media in JSON_TYPES else raw)
    await rule_sets.check(session, document)
    try:
        before: int | None = (await rule_sets.version_meta(session))["version"]
    except NotFound:
        before = None
    version = await rule_sets.create_version(session, document.rules, document.note, user.id, activate)
    await session.commit()
    warnings = rule_sets.warnings(document.rules)
    if document.version is not None and before is not None and document.version != before:
        warnings.append(
            f"the document was exported from version {document.version}, "
            f"but version {before} was active: changes made meanwhile are not in it"
        )
    return {"version": version, "active": activate, "rules": len(document.rules), "warnings": warnings}


@router.get("/versions", summary="Every version: who made it and when", dependencies=[require(*READERS)])
async def versions(session: DbSession) -> list[dict[str, Any]]:
    return await rule_sets.history(session)


@router.get("/versions/{version}", summary="One version with its rules", dependencies=[require(*READERS)])
async def one_version(version: Version, session: DbSession) -> dict[str, Any]:
    return await rule_sets.view(session, version)


@router.post(
    "/versions/{version}/activate",
    summary="Make a version (an older one, too) the active rule set",
    dependencies=[require("admin")],
)
async def activate_version(version: Version, user: CurrentUser, session: DbSession) -> dict[str, Any]:
    await rule_sets.activate(session, version, user.id)
    await session.commit()
    meta = await rule_sets.version_meta(session, version)
    # An old version may name units deactivated since: it is activated anyway, and told.
    rules = await load_rules(session, version)
    problems = await rule_sets.validate(session, rules)
    return {
        **meta,
        "warnings": [f"{p['field']} ({p.get('rule')}): {p['message']}" for p in problems]
        + rule_sets.warnings(rules),
    }


class SimulateBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    rules: StrictInt | str | dict[str, Any] | list[Any] | None = Field(
        default=None,
        description="a version number, a rule set as YAML text (or as JSON); omitted: the active set",
    )
    start: datetime = Field(alias="from", description="cases filed from (ISO 8601; naive: Asia/Shanghai)")
    end: datetime = Field(alias="to", description="… until before this time")


@router.post(
    "/simulate",
    summary="Where a period's cases would have gone under a rule set",
    dependencies=[require(*ANALYSTS)],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": SimulateBody.model_json_schema(by_alias=True)}},
        }
    },
)
async def simulate(request: Request, session: DbSession) -> dict[str, Any]:
    """``{"rules": <version> | "<YAML>" | {...}, "from", "to"}``; the body is read here, so that a
    pasted rule set is bounded (413) before it is parsed."""
    try:
        body = SimulateBody.model_validate_json(
            await bounded_body(request, MAX_SIMULATE_BYTES, DRAIN_CAP_BYTES)
        )
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(x) for x in e["loc"]) or "body", "message": e["msg"]} for e in exc.errors()
        ]
        raise InvalidInput("; ".join(f"{x['field']}: {x['message']}" for x in errors), errors=errors) from exc
    rules: Any = body.rules
    if rules is None:
        rules = (await rule_sets.version_meta(session))["version"]
    elif not isinstance(rules, int):
        document = rule_sets.read_document(rules)
        await rule_sets.check(session, document)
        rules = document.rules
    return await rule_quality.simulate(session, rules, body.start, body.end)


@router.get(
    "/quality",
    summary="Each rule's record: returns, re-dispatches, overdue",
    dependencies=[require(*ANALYSTS)],
)
async def quality(
    session: DbSession,
    version: Annotated[
        int | None, Query(ge=1, le=2_147_483_647, description="one version; default all")
    ] = None,
    start: Annotated[datetime | None, Query(alias="from", description="cases filed from (ISO 8601)")] = None,
    end: Annotated[datetime | None, Query(alias="to", description="… until before this time")] = None,
) -> dict[str, Any]:
    return await rule_quality.quality_report(session, version, start, end)
