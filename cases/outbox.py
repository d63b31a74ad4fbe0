"""The outbox to responsible units: what a unit is told, written in the transaction of the event.

A dispatch (派遣), a rework (返工), an escalation (督办), an approaching deadline (黄灯) and a
case a child unit handed back to its dispatch center (二级回退) each become one ``outbox`` row
for the unit concerned, inserted by the same transaction that changes
the case, so a message exists exactly when its change was committed. Units with a webhook get
the row ``pending`` and ``cases.delivery.Sender`` posts it; units without one get it
``feed_only`` and read it from their feed. Every row carries an idempotency key (one per
message, the same on every retry): delivery is at least once, the key lets a receiver drop repeats.

Feed order: rows of the outbox become visible in id order. Inserts take one transaction-scoped
advisory lock, held until commit, so a reader who has seen message *n* can never later find a
message below *n* appear (without it a slow transaction could commit a lower id after a faster
one, and a poller following ``since=<id>`` would miss it). The lock is taken only by
transactions that enqueue, just before they commit, so it serialises only their last moments.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from cases.accounts import Principal
from cases.workflow import EVENT_HOOKS
from geo.errors import Conflict, InvalidInput, NotFound

KINDS: Final = ("dispatch", "rework", "escalation", "yellow", "returned")
STATUSES: Final = ("pending", "delivered", "failed", "feed_only")
CHANNEL: Final = "citygrid_outbox"  # NOTIFY channel: the sender wakes when a pending row commits
FEED_ROLES: Final = ("operator", "supervisor", "admin")  # who reads any unit's feed
YELLOW_NOTE: Final = "处置时限即将到期（黄灯）"

_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('citygrid.outbox', 0))"
_NOTIFY = f"SELECT pg_notify('{CHANNEL}', '')"


class NotRetryable(Conflict):
    code = "not_retryable"
    title = "Only a failed message of a unit with a webhook can be retried"


# --- which events make a message -----------------------------------------------------------


def kind_for(action: str, to_status: str | None) -> str | None:
    """The message an event means for the unit, or None when the unit need not be told."""
    if action in ("dispatch", "subdispatch"):  # 二级派遣 is a dispatch to the child unit
        return "dispatch"
    if action == "check_result" and to_status == "dispatched":  # 核查 not passed: 返工
        return "rework"
    if action == "escalate":
        return "escalation"
    if action == "return" and to_status == "dispatched":
        # 二级回退: the case is back with the dispatch center that handed it down, which must
        # dispatch it again; a return to the command center (to ``returned``) is the console's.
        return "returned"
    return None


# The message as a unit system reads it; one expression for event messages and yellow lights.
# Aliases: c = cases, u = units (the recipient), m = matter_classes, r = the case's first report.
_PAYLOAD = """
jsonb_build_object(
    'kind', {kind},
    'idempotency_key', {key},
    'case', jsonb_build_object(
        'number', c.number,
        'status', c.status,
        'kind', c.kind,
        'category', c.category,
        'category_name', m.name,
        'description', c.description,
        'location', jsonb_build_object('lon', ST_X(c.geom), 'lat', ST_Y(c.geom), 'crs', 'cgcs2000'),
        'grid', c.grid_code::text,
        'address', r.address,
        'priority', c.priority,
        'deadline_at', c.deadline_at,
        'yellow_at', c.yellow_at,
        'escalated', c.escalated,
        'rework_count', c.rework_count,
        'unit', jsonb_build_object('code', u.code, 'name', u.name)
    ),
    'event', {event}
)"""

# pending only when there is somewhere to post to; the URL itself is read again at send time.
_STATUS = "CASE WHEN coalesce(u.webhook_url, '') <> '' THEN 'pending' ELSE 'feed_only' END"

_EVENT_KEY = "CAST(:kind AS text) || ':' || c.number || ':' || e.id"
_EVENT_PAYLOAD = _PAYLOAD.format(
    kind="CAST(:kind AS text)",
    key=_EVENT_KEY,
    event="jsonb_build_object('id', e.id, 'at', e.at, 'action', e.action, 'note', e.payload->>'note')",
)
_ENQUEUE_EVENT = f"""
INSERT INTO outbox (unit_id, case_id, event_id, kind, payload, idempotency_key, status)
SELECT u.id, c.id, e.id, :kind, {_EVENT_PAYLOAD}, {_EVENT_KEY}, {_STATUS}
FROM case_events e
JOIN cases c ON c.id = e.case_id
JOIN units u ON u.id = coalesce((SELECT id FROM units WHERE code = CAST(:unit_code AS text)), c.unit_id)
JOIN matter_classes m ON m.code = c.category
LEFT JOIN reports r ON r.id = c.report_id
WHERE e.id = :event_id
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id, status
"""


async def enqueue_for_event(session: AsyncSession, event: Mapping[str, Any]) -> int | None:
    """Queue the unit's message for a case event, if the event calls for one; the outbox id.

    ``event`` holds at least ``id``, ``action`` and ``to_status`` (and ``payload``); the event
    row and the case as changed by it must be visible to ``session``. No commit: the row is
    part of the caller's transaction. Calling it twice for one event queues one message.
    """
    kind = kind_for(event["action"], event.get("to_status"))
    if kind is None:
        return None
    payload = event.get("payload") or {}
    # A (sub)dispatch names its unit; every other message goes to the unit holding the case.
    unit_code = payload.get("unit") if kind == "dispatch" and isinstance(payload, Mapping) else None
    await session.execute(text(_LOCK))
    row = (
        await session.execute(
            text(_ENQUEUE_EVENT), {"kind": kind, "event_id": event["id"], "unit_code": unit_code}
        )
    ).first()
    if row is None:  # no unit (an escalation before dispatch) or already queued
        return None
    if row.status == "pending":
        await session.execute(text(_NOTIFY))  # delivered by PostgreSQL at commit, never before
    return row.id


async def on_event(session: AsyncSession, event: dict[str, Any]) -> None:
    """Workflow hook (``cases.workflow.EVENT_HOOKS``): queue what the event means for a unit.

    Called in the action's transaction right after its ``case_events`` row is inserted, with
    ``id, case_id, action, from_status, to_status, payload`` of that row.
    """
    if event.get("case_id") is None:
        return  # report events (before filing) concern no unit
    await enqueue_for_event(session, event)


# Every case event passes by the outbox, whoever carries out the action (API, CLI, hooks of tasks).
if on_event not in EVENT_HOOKS:
    EVENT_HOOKS.append(on_event)


# --- the yellow light ---------------------------------------------------------------------------

# A case is due when its handling stage is 80 % used. It is told again only for a later yellow
# time (an extension or a resumption moves yellow_at past the last notice), never twice for one.
# SKIP LOCKED: a case locked by a running action is taken on the next round instead of waited for;
# the UPDATE marks and the INSERT queues in one statement, so a concurrent run finds nothing left.
# The version is not bumped: the notice changes nothing a client edits.
_YELLOW_KEY = "'yellow:' || c.number || ':' || floor(extract(epoch FROM c.yellow_at))::bigint"
_YELLOW_PAYLOAD = _PAYLOAD.format(
    kind="'yellow'",
    key=_YELLOW_KEY,
    event="jsonb_build_object('id', NULL, 'at', CAST(:now AS timestamptz), 'action', 'yellow', "
    "'note', CAST(:note AS text))",
)
_ENQUEUE_YELLOW = f"""
WITH due AS (
    SELECT id FROM cases
    WHERE status = 'dispatched' AND unit_id IS NOT NULL
      AND yellow_at <= CAST(:now AS timestamptz) AND CAST(:now AS timestamptz) < deadline_at
      AND (yellow_notified_at IS NULL OR yellow_notified_at < yellow_at)
    ORDER BY id
    FOR UPDATE SKIP LOCKED
), marked AS (
    UPDATE cases c SET yellow_notified_at = CAST(:now AS timestamptz) FROM due WHERE c.id = due.id
    RETURNING c.*
)
INSERT INTO outbox (unit_id, case_id, kind, payload, idempotency_key, status)
SELECT u.id, c.id, 'yellow', {_YELLOW_PAYLOAD}, {_YELLOW_KEY}, {_STATUS}
FROM marked c
JOIN units u ON u.id = c.unit_id
JOIN matter_classes m ON m.code = c.category
LEFT JOIN reports r ON r.id = c.report_id
ORDER BY c.id
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING status
"""


async def enqueue_yellow(session: AsyncSession, now: datetime | None = None) -> int:
    """Queue a ``yellow`` message for every dispatched case that turned yellow and was not yet
    told; how many were queued. Idempotent and safe to run from several processes. No commit."""
    at = now if now is not None else await session.scalar(text("SELECT now()"))
    await session.execute(text(_LOCK))
    statuses = (
        (await session.execute(text(_ENQUEUE_YELLOW), {"now": at, "note": YELLOW_NOTE})).scalars().all()
    )
    if "pending" in statuses:
        await session.execute(text(_NOTIFY))
    return len(statuses)


# --- reading: the unit's feed and the support view ------------------------------------------------

_MESSAGE = """
SELECT o.id, o.kind, o.status, o.attempts, o.last_error, o.next_attempt_at, o.created_at,
       o.delivered_at, o.idempotency_key, o.event_id, o.payload, c.number AS case_number
FROM outbox o LEFT JOIN cases c ON c.id = o.case_id
"""


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def shape(row: Any) -> dict[str, Any]:
    """A message with its delivery state, as the API shows it."""
    return {
        "id": row.id,
        "kind": row.kind,
        "case": row.case_number,
        "idempotency_key": row.idempotency_key,
        "created_at": _iso(row.created_at),
        "status": row.status,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "next_attempt_at": _iso(row.next_attempt_at) if row.status == "pending" else None,
        "delivered_at": _iso(row.delivered_at),
        "payload": row.payload,
    }


async def _unit(session: AsyncSession, code: str) -> Any:
    row = (
        await session.execute(
            text("SELECT id, code, name, webhook_url, webhook_secret FROM units WHERE code = :c"), {"c": code}
        )
    ).first()
    if row is None:
        raise NotFound(f"no unit {code}")
    return row


def parse_since(since: str | None) -> int | datetime | None:
    """A feed cursor: a message id (exact) or an ISO 8601 time with offset (created after it)."""
    if since is None or since == "":
        return None
    if since.isdigit():
        return int(since)
    try:
        at = datetime.fromisoformat(since)
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise InvalidInput(
            f"since must be a message id or an ISO time with offset, not {since!r}",
            errors=[{"field": "since", "message": "a message id or an ISO 8601 time with offset"}],
        )
    return at


async def feed(
    session: AsyncSession, code: str, viewer: Principal, since: str | None = None, limit: int = 100
) -> dict[str, Any]:
    """A unit's messages after ``since``, oldest first, with their delivery state.

    A unit's users read their own unit's feed only (any other is 404, as if it did not exist);
    operators, supervisors and administrators read every unit's. ``next`` is the cursor to
    pass as ``since`` on the next call.
    """
    if not viewer.has(*FEED_ROLES) and viewer.unit_code != code:
        raise NotFound(f"no unit {code}")
    unit = await _unit(session, code)
    cursor = parse_since(since)
    after_id = cursor if isinstance(cursor, int) else 0
    after_at = cursor if isinstance(cursor, datetime) else None
    rows = (
        await session.execute(
            text(
                f"{_MESSAGE} WHERE o.unit_id = :u AND o.id > :after "
                "AND (CAST(:at AS timestamptz) IS NULL OR o.created_at > :at) ORDER BY o.id LIMIT :limit"
            ),
            {"u": unit.id, "after": after_id, "at": after_at, "limit": limit},
        )
    ).all()
    last = rows[-1].id if rows else (after_id or None)
    return {"unit": code, "messages": [shape(r) for r in rows], "next": last}


async def delivery_state(
    session: AsyncSession, code: str, status: str | None = None, limit: int = 100
) -> dict[str, Any]:
    """For support: the unit's webhook (never its secret), counts by status and the latest messages."""
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"unknown status {status!r}", errors=[{"field": "status", "message": "unknown"}])
    unit = await _unit(session, code)
    counts = dict(
        (
            await session.execute(
                text("SELECT status, count(*) FROM outbox WHERE unit_id = :u GROUP BY status"), {"u": unit.id}
            )
        ).all()
    )
    rows = (
        await session.execute(
            text(
                f"{_MESSAGE} WHERE o.unit_id = :u AND (CAST(:s AS text) IS NULL OR o.status = :s) "
                "ORDER BY o.id DESC LIMIT :limit"
            ),
            {"u": unit.id, "s": status, "limit": limit},
        )
    ).all()
    return {
        "unit": code,
        "webhook": {"url": unit.webhook_url, "secret_set": bool(unit.webhook_secret)},
        "counts": {s: counts.get(s, 0) for s in STATUSES},
        "messages": [shape(r) for r in rows],
    }


# --- administration -------------------------------------------------------------------------------


async def set_webhook(
    session: AsyncSession, code: str, url: str | None, secret: str | None = None
) -> dict[str, Any]:
    """Set (or with ``url=None`` remove) a unit's webhook; commits.

    The secret is write-only: one given by the caller is stored and never shown; without one a
    new random secret is made and returned in this answer only. Removing the webhook turns the
    unit's pending messages into feed messages. Messages already ``feed_only`` stay so: a new
    webhook receives what is queued from now on (the feed holds the past).
    """
    unit = await _unit(session, code)
    generated = None
    if url is None:
        secret = None
    elif secret is None:
        generated = secret = secrets.token_urlsafe(32)
    await session.execute(
        text("UPDATE units SET webhook_url = :url, webhook_secret = :secret WHERE id = :u"),
        {"url": url, "secret": secret, "u": unit.id},
    )
    if url is None:
        await session.execute(
            text("UPDATE outbox SET status = 'feed_only' WHERE unit_id = :u AND status = 'pending'"),
            {"u": unit.id},
        )
    await session.commit()
    return {"unit": code, "url": url, "secret_set": secret is not None, "secret": generated}


async def retry(session: AsyncSession, code: str, message_id: int) -> dict[str, Any]:
    """Send a failed message again now, with a fresh round of attempts; commits."""
    unit = await _unit(session, code)
    status = await session.scalar(
        text("SELECT status FROM outbox WHERE id = :id AND unit_id = :u FOR UPDATE"),
        {"id": message_id, "u": unit.id},
    )
    if status is None:
        raise NotFound(f"no message {message_id} for unit {code}")
    if status != "failed" or not unit.webhook_url:
        reason = "the unit has no webhook" if status == "failed" else f"the message is {status}"
        raise NotRetryable(f"message {message_id} cannot be retried: {reason}", current_status=status)
    # last_error stays: it tells support what went wrong until the next attempt says otherwise.
    await session.execute(
        text(
            "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = now(), delivered_at = NULL "
            "WHERE id = :id"
        ),
        {"id": message_id},
    )
    await session.execute(text(_NOTIFY))
    # Read before the commit: once committed, a sender may claim it at once.
    row = (await session.execute(text(f"{_MESSAGE} WHERE o.id = :id"), {"id": message_id})).one()
    await session.commit()
    return shape(row)


def canonical_body(payload: Mapping[str, Any]) -> bytes:
    """The bytes posted (and signed): the same for every attempt of a message."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()
