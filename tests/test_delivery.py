"""Delivery to units: the outbox written with the event, the sender posting to a real local HTTP
receiver (signatures, retries, restarts, two senders), the feed, webhook administration and the
yellow light. Every test works on its own clone: units' webhooks change."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from api import admin_db
from api.db import Database
from api.routers import feed as feed_router
from api.settings import Settings
from cases import outbox
from cases.delivery import DeliveryConfig, Sender, backoff
from cases.workflow import EVENT_HOOKS
from geo.errors import Conflict
from geo.pg import Listener
from tests.conftest import PASSWORD, CloneDb, make_app
from tests.test_workflow import filed, handle, post, result, task_of

# --- a real webhook receiver ------------------------------------------------------------------


@dataclass
class Hit:
    headers: dict[str, str]
    body: bytes
    at: float  # monotonic

    @property
    def key(self) -> str:
        return self.headers["x-citygrid-idempotency-key"]


@dataclass
class Receiver:
    """A minimal HTTP/1.1 server on 127.0.0.1. ``script`` answers the first requests in turn
    (a status code, or ``"drop"``: take the message, then close without answering); later
    requests get 200. ``processed`` is what a receiver deduplicating by key keeps."""

    script: list[str] = field(default_factory=list)
    delay_s: float = 0.0
    hits: list[Hit] = field(default_factory=list)
    processed: dict[str, dict[str, Any]] = field(default_factory=dict)
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/citygrid/hook"

    async def start(self, port: int = 0) -> Receiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = {
                k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in head[1:] if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            hit = Hit(headers, body, time.monotonic())
            self.hits.append(hit)
            self.processed.setdefault(hit.key, json.loads(body))  # idempotent by key
            await asyncio.sleep(self.delay_s)
            action = self.script.pop(0) if self.script else "200"
            if action == "drop":
                return
            writer.write(f"HTTP/1.1 {action} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".encode())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def keys(self) -> list[str]:
        return [h.key for h in self.hits]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fast(**overrides: Any) -> DeliveryConfig:
    """Sender settings for tests: quick polls, short backoff and leases, no yellow timer."""
    values: dict[str, Any] = {
        "poll_s": 0.1,
        "timeout_s": 1.0,
        "lease_s": 2.0,
        "backoff_base_s": 0.1,
        "backoff_cap_s": 1.0,
        "yellow_every_s": 3600.0,
        "stop_grace_s": 0.5,
    }
    return DeliveryConfig(**{**values, **overrides})


async def until(check: Callable[[], Awaitable[bool]], within: float = 8.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.02)


# --- a service of our own, on a throwaway database -----------------------------------------------


@dataclass
class Env:
    url: str
    db: Database
    client: httpx.AsyncClient
    spot: dict[str, Any]
    tokens: dict[str, str] = field(default_factory=dict)
    senders: list[Sender] = field(default_factory=list)
    listeners: list[Listener] = field(default_factory=list)

    async def login(self, username: str) -> dict[str, str]:
        if username not in self.tokens:
            r = await self.client.post(
                "/api/v1/auth/token", data={"username": username, "password": PASSWORD}
            )
            assert r.status_code == 200, r.text
            self.tokens[username] = r.json()["access_token"]
        return {"Authorization": f"Bearer {self.tokens[username]}"}

    async def sender(self, config: DeliveryConfig | None = None) -> Sender:
        """A started sender, as the service's lifespan would start it."""
        listener = Listener(admin_db.dsn(self.url))
        sender = Sender(self.db.sessions, listener=listener, config=config or fast())
        await listener.start()
        await sender.start()
        self.senders.append(sender)
        self.listeners.append(listener)
        return sender

    async def rows(self, sql: str, **params: Any) -> list[Any]:
        async with self.db.sessions() as session:
            return (await session.execute(text(sql), params)).all()

    async def messages(self, unit: str) -> list[Any]:
        return await self.rows(
            "SELECT o.* FROM outbox o JOIN units u ON u.id = o.unit_id WHERE u.code = :u ORDER BY o.id",
            u=unit,
        )


def serves_feed(app: Any) -> bool:
    """Whether the app already includes the feed router (FastAPI ≥ 0.16x keeps included routers whole)."""
    return any(
        getattr(r, "original_router", None) is feed_router.router
        or getattr(r, "path", None) == "/api/v1/units/{code}/feed"
        for r in app.routes
    )


@pytest.fixture
async def env(settings: Settings, clone_db: CloneDb) -> AsyncIterator[Env]:
    url = await clone_db()
    db = Database(url, pool_size=5)
    app = make_app(settings, db)
    if not serves_feed(app):
        app.include_router(feed_router.router)  # until api/app.py registers it
    async with db.sessions() as session:
        spot = (
            await session.execute(
                text("""
            SELECT ST_X(ST_PointOnSurface(g.geom)) AS x, ST_Y(ST_PointOnSurface(g.geom)) AS y
            FROM beats b JOIN users u ON u.id = b.collector_id JOIN unit_grids g ON g.code = b.grid_code
            WHERE u.username = 'collector07' ORDER BY g.code LIMIT 1 OFFSET 5""")
            )
        ).one()
    transport = httpx.ASGITransport(app=app, client=("127.0.0.9", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://citygrid.test") as client:
        e = Env(url, db, client, {"x": spot.x, "y": spot.y})
        try:
            yield e
        finally:
            for sender in e.senders:
                await sender.stop()
            for listener in e.listeners:
                await listener.stop()
    await db.dispose()


async def set_webhook(env: Env, unit: str, url: str | None, secret: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"url": url}
    if secret is not None:
        body["secret"] = secret
    r = await env.client.put(f"/api/v1/units/{unit}/webhook", json=body, headers=await env.login("admin"))
    assert r.status_code == 200, r.text
    return r.json()


async def queued(env: Env, number: str, action: str) -> Any:
    """The message the workflow queued for the case's latest ``action`` event (it must exist)."""
    [row] = await env.rows(
        "SELECT o.* FROM outbox o WHERE o.event_id = (SELECT max(e.id) FROM case_events e "
        "JOIN cases c ON c.id = e.case_id WHERE c.number = :n AND e.action = :a)",
        n=number,
        a=action,
    )
    return row


async def dispatch_to(env: Env, unit: str) -> str:
    """A new case dispatched to ``unit`` through the API, with its message queued; its number."""
    case = await filed(env.client, env.login, env.spot)
    r = await post(env.client, env.login, "operator01", f"/cases/{case['number']}/dispatch", {"unit": unit})
    assert r.status_code == 200, r.text
    await queued(env, case["number"], "dispatch")
    return case["number"]


def verify(hit: Hit, secret: str) -> None:
    """What a unit's system does first: check the signature of the exact bytes received."""
    expected = "sha256=" + hmac.new(secret.encode(), hit.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(hit.headers["x-citygrid-signature"], expected)


# --- the outbox is part of the event's transaction ---------------------------------------------


async def _insert_event(session: Any, case_id: int, action: str, to_status: str, payload: dict) -> dict:
    row = (
        await session.execute(
            text(
                "INSERT INTO case_events (case_id, action, from_status, to_status, payload) "
                "VALUES (:c, :a, 'filed', :t, CAST(:p AS jsonb)) "
                "RETURNING id, case_id, action, from_status, to_status, payload"
            ),
            {"c": case_id, "a": action, "t": to_status, "p": json.dumps(payload)},
        )
    ).one()
    return dict(row._mapping)


async def test_message_only_with_its_event(env: Env) -> None:
    case = await filed(env.client, env.login, env.spot)
    number = case["number"]
    case_id = (await env.rows("SELECT id FROM cases WHERE number = :n", n=number))[0].id
    dispatch = (
        "UPDATE cases SET status = 'dispatched', unit_id = (SELECT id FROM units WHERE code = 'water') "
        "WHERE id = :c"
    )

    async with env.db.sessions() as session:  # an action that fails after its event: rolled back
        await session.execute(text(dispatch), {"c": case_id})
        event = await _insert_event(session, case_id, "dispatch", "dispatched", {"unit": "water"})
        await outbox.on_event(session, event)
        inside = await session.scalar(text("SELECT count(*) FROM outbox WHERE case_id = :c"), {"c": case_id})
        await session.rollback()
    assert inside == 1
    assert not await env.rows("SELECT 1 FROM outbox WHERE case_id = :c", c=case_id)

    async with env.db.sessions() as session:
        await session.execute(text(dispatch), {"c": case_id})
        event = await _insert_event(
            session, case_id, "dispatch", "dispatched", {"unit": "water", "note": "速办"}
        )
        await outbox.on_event(session, event)
        await outbox.on_event(session, event)  # a hook run twice queues one message
        sign = await _insert_event(session, case_id, "sign", "dispatched", {})
        await outbox.on_event(session, sign)  # nothing to tell the unit
        await session.commit()
    [row] = await env.rows("SELECT * FROM outbox WHERE case_id = :c", c=case_id)
    assert row.event_id == event["id"] and row.kind == "dispatch"
    assert row.idempotency_key == f"dispatch:{number}:{event['id']}"
    assert row.status == "feed_only" and row.attempts == 0  # water has no webhook
    p = row.payload
    assert p["kind"] == "dispatch" and p["idempotency_key"] == row.idempotency_key
    assert p["case"]["number"] == number and p["case"]["status"] == "dispatched"
    assert p["case"]["unit"]["code"] == "water" and p["case"]["category"] == case["category"]
    assert p["case"]["location"]["crs"] == "cgcs2000" and p["case"]["grid"] == case["grid"]
    assert p["event"] == {"id": event["id"], "at": p["event"]["at"], "action": "dispatch", "note": "速办"}

    assert outbox.kind_for("check_result", "dispatched") == "rework"
    assert outbox.kind_for("check_result", "checked") is None
    assert outbox.kind_for("escalate", "filed") == "escalation"
    assert outbox.kind_for("return", "returned") is None
    assert outbox.kind_for("return", "dispatched") == "returned"


async def test_dispatch_rework_and_escalation_reach_the_unit(env: Env) -> None:
    receiver = await Receiver().start()
    hook = await set_webhook(env, "hw-hc", receiver.url)
    case = await filed(env.client, env.login, env.spot)
    number = case["number"]
    # An escalation before dispatch concerns no unit yet.
    r = await post(env.client, env.login, "supervisor01", f"/cases/{number}/escalate", {"note": "尽快"})
    assert r.status_code == 200, r.text
    assert not await env.messages("hw-hc")

    r = await post(env.client, env.login, "operator01", f"/cases/{number}/dispatch", {"unit": "hw-hc"})
    case = r.json()
    await queued(env, number, "dispatch")
    r = await post(
        env.client, env.login, "supervisor01", f"/cases/{number}/escalate", {"note": "督办：今日办结"}
    )
    assert r.status_code == 200, r.text
    await queued(env, number, "escalate")
    assert (await handle(env.client, env.login, case)).status_code == 200
    task = await task_of(env.client, env.login, "collector07", number=number)
    assert (await result(env.client, env.login, "collector07", task, "not_fixed")).status_code == 200
    await queued(env, number, "check_result")

    sender = await env.sender()
    await until(lambda: _all_delivered(env, "hw-hc", 3), what="three deliveries")
    await sender.stop()
    rows = await env.messages("hw-hc")
    assert [m.kind for m in rows] == ["dispatch", "escalation", "rework"]
    assert sorted(receiver.keys()) == sorted(m.idempotency_key for m in rows)
    by_kind = {h.headers["x-citygrid-event"]: h for h in receiver.hits}
    for hit in receiver.hits:
        verify(hit, hook["secret"])
    assert json.loads(by_kind["escalation"].body)["event"]["note"] == "督办：今日办结"
    rework = json.loads(by_kind["rework"].body)
    assert rework["case"]["status"] == "dispatched" and rework["case"]["rework_count"] == 1
    await receiver.stop()


async def test_subdispatch_tells_the_child_unit(env: Env) -> None:
    number = await dispatch_to(env, "cgj-hc")  # a dispatch center
    r = await post(env.client, env.login, "unit-cgj-hc", f"/cases/{number}/subdispatch", {"unit": "hw-hc"})
    assert r.status_code == 200, r.text
    message = await queued(env, number, "subdispatch")
    assert message.kind == "dispatch" and message.payload["event"]["action"] == "subdispatch"
    assert message.payload["case"]["unit"]["code"] == "hw-hc"
    assert [m.kind for m in await env.messages("hw-hc")] == ["dispatch"]
    assert [m.kind for m in await env.messages("cgj-hc")] == ["dispatch"]  # its own, earlier


async def test_a_child_units_return_tells_the_dispatch_center(env: Env) -> None:
    number = await dispatch_to(env, "cgj-hc")
    r = await post(env.client, env.login, "unit-cgj-hc", f"/cases/{number}/subdispatch", {"unit": "hw-hc"})
    assert r.status_code == 200, r.text
    r = await post(
        env.client, env.login, "unit-hw-hc", f"/cases/{number}/return", {"reason": "not_our_responsibility"}
    )
    assert r.status_code == 200, r.text
    message = await queued(env, number, "return")
    assert message.kind == "returned" and message.payload["event"]["action"] == "return"
    assert message.payload["case"]["unit"]["code"] == "cgj-hc"
    assert message.payload["case"]["status"] == "dispatched"
    assert [m.kind for m in await env.messages("cgj-hc")] == ["dispatch", "returned"]
    assert [m.kind for m in await env.messages("hw-hc")] == ["dispatch"]


async def _all_delivered(env: Env, unit: str, n: int) -> bool:
    rows = await env.messages(unit)
    return len(rows) == n and all(m.status == "delivered" for m in rows)


async def test_action_rolled_back_after_the_hook_leaves_no_message(env: Env) -> None:
    case = await filed(env.client, env.login, env.spot)
    path = f"/cases/{case['number']}/dispatch"

    async def refuse(session: Any, event: dict[str, Any]) -> None:  # runs after the outbox's hook
        if event["action"] == "dispatch":
            assert await session.scalar(
                text("SELECT count(*) FROM outbox WHERE event_id = :e"), {"e": event["id"]}
            )
            raise Conflict("refused after the message was written")

    EVENT_HOOKS.append(refuse)
    try:
        assert (await post(env.client, env.login, "operator01", path, {"unit": "gas"})).status_code == 409
    finally:
        EVENT_HOOKS.remove(refuse)
    assert await env.messages("gas") == []

    assert (await post(env.client, env.login, "operator01", path, {"unit": "gas"})).status_code == 200
    [row] = await env.messages("gas")
    assert row.kind == "dispatch" and row.payload["case"]["number"] == case["number"]


# --- delivery ---------------------------------------------------------------------------------


async def test_a_new_message_wakes_the_sender(env: Env) -> None:
    receiver = await Receiver().start()
    await set_webhook(env, "water", receiver.url)
    await env.sender(fast(poll_s=60.0))
    await asyncio.sleep(0.5)  # its first round found nothing: it sleeps until polled or told
    await dispatch_to(env, "water")
    await until(lambda: _all_delivered(env, "water", 1), within=10.0, what="delivery on NOTIFY")
    await receiver.stop()


async def test_delivered_signed_with_key(env: Env) -> None:
    receiver = await Receiver().start()
    hook = await set_webhook(env, "water", receiver.url)
    assert hook["secret"] and hook["secret_set"] and hook["url"] == receiver.url
    number = await dispatch_to(env, "water")
    [queued] = await env.messages("water")
    assert queued.status == "pending"

    await env.sender()
    await until(lambda: _all_delivered(env, "water", 1), what="delivery")
    [hit] = receiver.hits
    verify(hit, hook["secret"])
    assert hit.headers["content-type"].startswith("application/json")
    assert hit.key == queued.idempotency_key and hit.headers["x-citygrid-event"] == "dispatch"
    body = json.loads(hit.body)
    assert body["case"]["number"] == number and body["idempotency_key"] == hit.key
    assert body["case"]["unit"]["code"] == "water" and body["case"]["deadline_at"]

    r = await env.client.get("/api/v1/units/water/outbox", headers=await env.login("supervisor01"))
    state = r.json()
    assert state["webhook"] == {"url": receiver.url, "secret_set": True}  # the secret is never shown
    assert state["counts"]["delivered"] == 1
    [m] = state["messages"]
    assert m["status"] == "delivered" and m["attempts"] == 1 and m["delivered_at"] and m["last_error"] is None
    await receiver.stop()


async def test_failing_receiver_recovers_without_loss(env: Env) -> None:
    # Three 500s, then a message taken whose answer is lost (at least once), then all well.
    receiver = await Receiver(script=["500", "500", "500", "drop"]).start()
    hook = await set_webhook(env, "water", receiver.url)
    numbers = [await dispatch_to(env, "water") for _ in range(2)]
    config = fast(backoff_base_s=0.2)
    await env.sender(config)

    async def failing_visible() -> bool:
        r = await env.client.get("/api/v1/units/water/outbox", headers=await env.login("admin"))
        return any(m["last_error"] and m["status"] == "pending" for m in r.json()["messages"])

    await until(failing_visible, what="a failed attempt to show")
    await until(lambda: _all_delivered(env, "water", 2), what="recovery")

    rows = await env.messages("water")
    assert len(receiver.hits) == 6 and sum(m.attempts for m in rows) == 6
    assert set(receiver.processed) == {m.idempotency_key for m in rows}  # nothing lost
    assert sorted(p["case"]["number"] for p in receiver.processed.values()) == sorted(numbers)
    for m in rows:
        hits = [h for h in receiver.hits if h.key == m.idempotency_key]
        assert len(hits) == m.attempts and m.last_error is None
        assert [h.headers["x-citygrid-attempt"] for h in hits] == [str(i + 1) for i in range(len(hits))]
        assert len({h.body for h in hits}) == 1  # a retry is the same message
        for h in hits:
            verify(h, hook["secret"])
        for n, (a, b) in enumerate(itertools.pairwise(hits), start=1):
            assert b.at - a.at >= 0.5 * config.backoff_base_s * 2 ** (n - 1) - 0.02  # backed off
    await receiver.stop()


async def test_gives_up_then_admin_retries(env: Env) -> None:
    receiver = await Receiver(script=["503", "503"]).start()
    await set_webhook(env, "water", receiver.url)
    await dispatch_to(env, "water")
    await env.sender(fast(max_attempts=2, backoff_base_s=0.05))

    async def failed() -> bool:
        return [m.status for m in await env.messages("water")] == ["failed"]

    await until(failed, what="giving up")
    r = await env.client.get("/api/v1/units/water/feed", headers=await env.login("unit-water"))
    [m] = r.json()["messages"]
    assert m["status"] == "failed" and m["attempts"] == 2 and m["last_error"].startswith("HTTP 503")

    path = f"/api/v1/units/water/outbox/{m['id']}/retry"
    assert (await env.client.post(path, headers=await env.login("supervisor01"))).status_code == 403
    assert (
        await env.client.post(f"/api/v1/units/gas/outbox/{m['id']}/retry", headers=await env.login("admin"))
    ).status_code == 404
    r = await env.client.post(path, headers=await env.login("admin"))
    assert r.status_code == 200 and r.json()["status"] == "pending" and r.json()["attempts"] == 0
    await until(lambda: _all_delivered(env, "water", 1), what="delivery after the retry")
    assert len(receiver.hits) == 3
    r = await env.client.post(path, headers=await env.login("admin"))
    assert r.status_code == 409 and r.json()["code"] == "not_retryable"
    await receiver.stop()


async def test_delivery_resumes_after_restart(env: Env) -> None:
    port = free_port()  # the receiver is down: nothing listens there yet
    hook = await set_webhook(env, "water", f"http://127.0.0.1:{port}/citygrid/hook")
    await dispatch_to(env, "water")
    await dispatch_to(env, "water")
    first = await env.sender(fast(backoff_base_s=0.05, backoff_cap_s=0.2))

    async def tried() -> bool:
        return all(m.attempts >= 2 for m in await env.messages("water"))

    await until(tried, what="attempts against the dead receiver")
    async with asyncio.timeout(5):
        await first.stop()  # the service goes down with its messages pending
    rows = await env.messages("water")
    assert all(m.status == "pending" and "ConnectError" in m.last_error for m in rows)

    receiver = await Receiver().start(port)
    await env.sender()  # the restarted service
    await until(lambda: _all_delivered(env, "water", 2), what="delivery after the restart")
    assert sorted(receiver.keys()) == sorted(m.idempotency_key for m in rows)
    for hit in receiver.hits:
        verify(hit, hook["secret"])
    await receiver.stop()


async def test_stop_racing_a_wake_up(env: Env) -> None:
    # Python 3.11's asyncio.wait_for loses a cancel arriving in the tick its event fires, and every
    # finished delivery wakes the sender: its stop must not depend on that cancel.
    for _ in range(3):
        sender = await env.sender(fast(poll_s=5.0))
        await asyncio.sleep(0.2)  # asleep until the next poll
        sender.wake()
        await asyncio.sleep(0)  # the wake-up is under way…
        began = time.monotonic()
        async with asyncio.timeout(3):
            await sender.stop()  # …as the stop comes
        assert time.monotonic() - began < 1.0


async def test_abandoned_claim_is_sent_after_its_lease(env: Env) -> None:
    receiver = await Receiver().start()
    await set_webhook(env, "water", receiver.url)
    await dispatch_to(env, "water")
    # A process claims the message and dies before posting it.
    crashed = Sender(env.db.sessions, config=fast(lease_s=1.2, timeout_s=0.5))
    [claimed] = await crashed.claim(10)
    claimed_at = time.monotonic()

    await env.sender()
    await asyncio.sleep(0.5)
    assert receiver.hits == []  # the lease holds: no second sender posts it meanwhile
    await until(lambda: _all_delivered(env, "water", 1), what="delivery after the lease")
    [hit] = receiver.hits
    assert hit.at - claimed_at >= 1.1 and hit.key == claimed.idempotency_key
    assert hit.headers["x-citygrid-attempt"] == "2"
    await receiver.stop()


async def test_two_senders_never_send_one_message_twice(env: Env) -> None:
    receiver = await Receiver(delay_s=0.05).start()
    await set_webhook(env, "water", receiver.url)
    number = await dispatch_to(env, "water")
    case_id = (await env.rows("SELECT id FROM cases WHERE number = :n", n=number))[0].id
    async with env.db.sessions() as session:
        for _ in range(15):
            event = await _insert_event(session, case_id, "escalate", "dispatched", {"note": "督办"})
            await outbox.on_event(session, event)
        await session.commit()
    await asyncio.gather(env.sender(fast(concurrency=4)), env.sender(fast(concurrency=4)))
    await until(lambda: _all_delivered(env, "water", 16), what="sixteen deliveries")
    assert len(receiver.hits) == 16 and len(set(receiver.keys())) == 16
    await receiver.stop()


# --- units without a webhook: the feed ---------------------------------------------------------


async def test_feed_for_a_unit_without_webhook(env: Env) -> None:
    first = await dispatch_to(env, "drainage")
    second = await dispatch_to(env, "drainage")
    await dispatch_to(env, "power")  # another unit's message
    me = await env.login("unit-drainage")

    r = await env.client.get("/api/v1/units/drainage/feed", headers=me)
    assert r.status_code == 200, r.text
    page = r.json()
    assert [m["payload"]["case"]["number"] for m in page["messages"]] == [first, second]
    assert all(m["status"] == "feed_only" and m["kind"] == "dispatch" for m in page["messages"])
    cursor = page["messages"][0]["id"]
    r = await env.client.get("/api/v1/units/drainage/feed", params={"since": cursor}, headers=me)
    assert [m["payload"]["case"]["number"] for m in r.json()["messages"]] == [second]
    assert r.json()["next"] == page["messages"][1]["id"]
    r = await env.client.get("/api/v1/units/drainage/feed", params={"since": page["next"]}, headers=me)
    assert r.json() == {"unit": "drainage", "messages": [], "next": page["next"]}
    created = page["messages"][0]["created_at"]
    r = await env.client.get("/api/v1/units/drainage/feed", params={"since": created}, headers=me)
    assert [m["payload"]["case"]["number"] for m in r.json()["messages"]] == [second]

    other = await env.login("unit-power")
    assert (await env.client.get("/api/v1/units/drainage/feed", headers=other)).status_code == 404
    assert (await env.client.get("/api/v1/units/nowhere/feed", headers=me)).status_code == 404
    for who in ("operator01", "supervisor01", "admin"):
        r = await env.client.get("/api/v1/units/drainage/feed", headers=await env.login(who))
        assert r.status_code == 200 and len(r.json()["messages"]) == 2
    assert (
        await env.client.get("/api/v1/units/drainage/feed", headers=await env.login("collector07"))
    ).status_code == 403
    assert (await env.client.get("/api/v1/units/drainage/feed")).status_code == 401
    r = await env.client.get("/api/v1/units/drainage/feed", params={"since": "yesterday"}, headers=me)
    assert r.status_code == 422
    assert (await env.client.get("/api/v1/units/drainage/outbox", headers=me)).status_code == 403

    # A unit system is not posted feed messages, even by a running sender.
    await env.sender()
    await asyncio.sleep(0.3)
    assert {m.status for m in await env.messages("drainage")} == {"feed_only"}


async def test_webhook_administration(env: Env) -> None:
    supervisor = await env.login("supervisor01")
    body = {"url": "https://units.example/hook"}
    assert (
        await env.client.put("/api/v1/units/water/webhook", json=body, headers=supervisor)
    ).status_code == 403
    chosen = await set_webhook(env, "water", "https://units.example/hook", secret="s" * 20)
    assert chosen["secret"] is None and chosen["secret_set"]  # a secret given is never echoed
    r = await env.client.put(
        "/api/v1/units/water/webhook", json={"url": "ftp://x"}, headers=await env.login("admin")
    )
    assert r.status_code == 422
    await dispatch_to(env, "water")
    assert [m.status for m in await env.messages("water")] == ["pending"]
    removed = await set_webhook(env, "water", None)
    assert removed == {"unit": "water", "url": None, "secret_set": False, "secret": None}
    assert [m.status for m in await env.messages("water")] == ["feed_only"]  # back to the feed


# --- the yellow light --------------------------------------------------------------------------


async def test_yellow_light_told_once(env: Env) -> None:
    number = await dispatch_to(env, "gas")
    ids = {"n": number}
    async with env.db.sessions() as session:
        await session.execute(
            text("UPDATE cases SET yellow_at = now() - interval '1 minute' WHERE number = :n"), ids
        )
        await session.commit()

    async def run() -> int:
        async with env.db.sessions() as session:
            n = await outbox.enqueue_yellow(session)
            await session.commit()
            return n

    assert await run() == 1
    assert await run() == 0
    assert sum(await asyncio.gather(run(), run())) == 0
    yellow = [m for m in await env.messages("gas") if m.kind == "yellow"]
    assert len(yellow) == 1 and yellow[0].status == "feed_only" and yellow[0].event_id is None
    assert yellow[0].payload["case"]["number"] == number and yellow[0].payload["event"]["action"] == "yellow"
    assert yellow[0].idempotency_key.startswith(f"yellow:{number}:")

    # A later yellow time (an extension moved the deadline) is told once more.
    async with env.db.sessions() as session:
        await session.execute(
            text(
                "UPDATE cases SET yellow_at = clock_timestamp(), deadline_at = deadline_at + interval '1 day' "
                "WHERE number = :n"
            ),
            ids,
        )
        await session.commit()
    assert sum(await asyncio.gather(run(), run())) == 1
    assert len([m for m in await env.messages("gas") if m.kind == "yellow"]) == 2


async def test_sender_runs_the_yellow_timer(env: Env) -> None:
    receiver = await Receiver().start()
    hook = await set_webhook(env, "gas", receiver.url)
    number = await dispatch_to(env, "gas")
    async with env.db.sessions() as session:
        await session.execute(
            text("UPDATE cases SET yellow_at = now() - interval '1 minute' WHERE number = :n"), {"n": number}
        )
        await session.commit()
    await env.sender(fast(yellow_every_s=0.2))
    await until(lambda: _all_delivered(env, "gas", 2), what="the dispatch and the yellow light")
    assert sorted(h.headers["x-citygrid-event"] for h in receiver.hits) == ["dispatch", "yellow"]
    for hit in receiver.hits:
        verify(hit, hook["secret"])
    await receiver.stop()


def test_backoff_grows_with_jitter_and_cap() -> None:
    config = fast(backoff_base_s=2.0, backoff_cap_s=600.0)
    for attempts, full in ((1, 2.0), (2, 4.0), (5, 32.0), (12, 600.0), (30, 600.0)):
        for _ in range(20):
            assert full / 2 <= backoff(attempts, config) <= full
