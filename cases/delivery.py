"""The sender: posts pending outbox messages to the units' webhooks, from inside the service.

All state is in the ``outbox`` table, so the sender survives restarts: a new process simply
picks up what is due. A message is *claimed* in a short transaction that moves its
``next_attempt_at`` one lease ahead (``FOR UPDATE SKIP LOCKED``), then posted outside any
transaction, then its outcome is recorded. Several service processes can run a sender each:
the claim hands every due message to one of them, and a message whose sender died
mid-delivery becomes due again when its lease runs out. Delivery is therefore at least once
(a receiver that answered but whose answer was lost sees the message again, with the same
``X-CityGrid-Idempotency-Key``); no ordering between messages is promised (receivers order by
``event.at``).

A request carries the message's payload as JSON and the headers

* ``X-CityGrid-Signature: sha256=<hex HMAC-SHA256 of the exact body, keyed with the unit's
  webhook secret>`` (absent when the unit has no secret);
* ``X-CityGrid-Idempotency-Key``, ``X-CityGrid-Event`` (the message kind),
  ``X-CityGrid-Message-Id`` and ``X-CityGrid-Attempt``.

A 2xx answer delivers the message; anything else (another status, a refused connection, a
timeout) is a failed attempt, retried after an exponentially growing, jittered delay, until
``max_attempts`` make it ``failed`` (an administrator can retry it; the feed shows it all the
while). The sender also runs ``enqueue_yellow`` on a timer, so yellow lights need no cron.

Settings come from ``CITYGRID_DELIVERY_*`` environment variables (``DeliveryConfig``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cases.outbox import CHANNEL, canonical_body, enqueue_yellow
from geo.pg import Listener

log = logging.getLogger("citygrid.delivery")

USER_AGENT = "CityGrid-Outbox/1"


class DeliveryConfig(BaseSettings):
    """How the sender paces itself (environment: ``CITYGRID_DELIVERY_<FIELD>``)."""

    model_config = SettingsConfigDict(env_prefix="CITYGRID_DELIVERY_", extra="ignore")

    enabled: bool = True
    poll_s: float = 5.0  # longest sleep; NOTIFY and the next due time usually wake it sooner
    concurrency: int = 8  # requests in flight at once
    timeout_s: float = 10.0  # per request
    lease_s: float = 60.0  # a claim older than this is taken to be abandoned; must exceed timeout_s
    backoff_base_s: float = 2.0  # wait after the n-th failed attempt: base · 2^(n-1), jittered
    backoff_cap_s: float = 600.0
    max_attempts: int = 12
    yellow_every_s: float = 30.0
    stop_grace_s: float = 5.0  # on stop, how long requests in flight may still finish


def backoff(attempts: int, config: DeliveryConfig) -> float:
    """Seconds to wait after ``attempts`` failed attempts: half fixed, half random ("equal
    jitter"), so receivers coming back up are not hit by every sender at the same instant."""
    delay = min(config.backoff_cap_s, config.backoff_base_s * 2 ** max(0, attempts - 1))
    return delay / 2 + random.uniform(0, delay / 2)


def sign(secret: str, body: bytes) -> str:
    """The ``X-CityGrid-Signature`` value of a body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Message:
    """A claimed message and where it goes."""

    id: int
    kind: str
    payload: dict[str, Any]
    idempotency_key: str
    attempts: int  # including this one
    unit_code: str
    url: str | None
    secret: str | None


_CLAIM = """
WITH due AS (
    SELECT id FROM outbox
    WHERE status = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at, id
    LIMIT :n
    FOR UPDATE SKIP LOCKED
)
UPDATE outbox o
SET attempts = o.attempts + 1, next_attempt_at = now() + make_interval(secs => :lease)
FROM due, units u
WHERE o.id = due.id AND u.id = o.unit_id
RETURNING o.id, o.kind, o.payload, o.idempotency_key, o.attempts, u.code AS unit_code,
          u.webhook_url AS url, u.webhook_secret AS secret
"""

_DELIVERED = """
UPDATE outbox SET status = 'delivered', delivered_at = now(), last_error = NULL
WHERE id = :id AND status = 'pending'
"""

# Only while the claim is still ours: a sender whose lease ran out must not overwrite the state
# a later attempt wrote.
_FAILED = """
UPDATE outbox
SET status = CASE WHEN attempts >= :max THEN 'failed' ELSE 'pending' END,
    last_error = :error, next_attempt_at = now() + make_interval(secs => :delay)
WHERE id = :id AND status = 'pending' AND attempts = :attempts
"""

# The webhook was removed after the message was queued: the unit reads it from its feed.
_NO_WEBHOOK = """
UPDATE outbox SET status = 'feed_only', attempts = attempts - 1, last_error = NULL
WHERE id = :id AND status = 'pending' AND attempts = :attempts
"""

_NEXT_DUE = """
SELECT extract(epoch FROM min(next_attempt_at) - now()) FROM outbox WHERE status = 'pending'
"""

# An orderly stop gives back what it had claimed, so the next process need not wait out the lease.
_RELEASE = "UPDATE outbox SET next_attempt_at = now() WHERE id = ANY(:ids) AND status = 'pending'"


class Sender:
    """Delivers the outbox in the background of the service: ``await start()`` … ``await stop()``."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        listener: Listener | None = None,
        config: DeliveryConfig | None = None,
    ) -> None:
        """``listener``, the process's LISTEN connection (subscribed here, before it starts),
        wakes the sender when a message commits; without it, or while it is down, it polls."""
        self.sessions = sessions
        self.config = config or DeliveryConfig()
        if self.config.lease_s <= self.config.timeout_s:
            raise ValueError("lease_s must exceed timeout_s, or a slow request would be sent twice at once")
        self._client: httpx.AsyncClient | None = None
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._yellow_due = float("-inf")
        self._stopping = False
        if listener is not None:
            listener.on(CHANNEL, lambda _: self.wake())
            listener.on_reset(self.wake)  # messages may have come while nobody listened

    # --- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Begin delivering; returns at once (the database may still be coming up)."""
        if not self.config.enabled or self._loop is not None:
            return
        self._client = httpx.AsyncClient(
            timeout=self.config.timeout_s,
            follow_redirects=False,  # a webhook answers itself; a redirect is a misconfiguration
            headers={"User-Agent": USER_AGENT},
        )
        self._stopping = False
        self._loop = asyncio.create_task(self._run(), name="outbox-sender")

    async def stop(self) -> None:
        """Stop claiming; let requests in flight finish for ``stop_grace_s``, give back the rest."""
        if self._loop is None:
            return
        # The flag too: Python 3.11 can lose a cancellation that races with a wake-up.
        self._stopping = True
        self._loop.cancel()
        await asyncio.wait([self._loop])  # not `await`: a cancel of our caller must still reach it
        self._loop = None
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()), timeout=self.config.stop_grace_s)
        left = list(self._inflight)
        for task in self._inflight.values():
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        self._inflight.clear()
        if left:
            try:
                async with self.sessions() as session:
                    await session.execute(text(_RELEASE), {"ids": left})
                    await session.commit()
            except Exception:  # the leases run out by themselves
                log.warning("could not release claimed messages %s on stop", left, exc_info=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def wake(self) -> None:
        """Look for due messages now (NOTIFY calls this)."""
        self._wake.set()

    # --- the loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            delay = self.config.poll_s
            try:
                await self._yellow()
                free = self.config.concurrency - len(self._inflight)
                if free > 0:
                    claimed = await self.claim(free)
                    for message in claimed:
                        self._spawn(message)
                    if len(claimed) == free:
                        continue  # more may be due right now
                    delay = await self._until_next_due()
            except Exception:  # a background loop must outlive a database restart or a bug
                log.exception("outbox sender: round failed; next try in %.1f s", delay)
            await self._sleep(delay)

    async def _sleep(self, seconds: float) -> None:
        # asyncio.timeout, not wait_for: in 3.11 wait_for may swallow a cancel arriving with the wake-up.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds)):
                await self._wake.wait()
        self._wake.clear()

    async def _until_next_due(self) -> float:
        async with self.sessions() as session:
            seconds = await session.scalar(text(_NEXT_DUE))
        until_yellow = self._yellow_due - time.monotonic()
        candidates = [self.config.poll_s, until_yellow]
        if seconds is not None:
            candidates.append(float(seconds))
        return max(0.0, min(candidates))

    async def _yellow(self) -> None:
        if time.monotonic() < self._yellow_due:
            return
        self._yellow_due = time.monotonic() + self.config.yellow_every_s
        async with self.sessions() as session:
            queued = await enqueue_yellow(session)
            await session.commit()
        if queued:
            log.info("queued %d yellow-light messages", queued)

    # --- one message --------------------------------------------------------------------

    async def claim(self, limit: int) -> list[Message]:
        """Claim up to ``limit`` due messages for one lease (committed before any is sent)."""
        async with self.sessions() as session:
            rows = (await session.execute(text(_CLAIM), {"n": limit, "lease": self.config.lease_s})).all()
            await session.commit()
        return [Message(**row._asdict()) for row in rows]

    def _spawn(self, message: Message) -> None:
        task = asyncio.create_task(self._deliver(message), name=f"outbox-{message.id}")
        self._inflight[message.id] = task

        def done(_: asyncio.Task[None]) -> None:
            self._inflight.pop(message.id, None)
            self.wake()  # a slot is free

        task.add_done_callback(done)

    async def _deliver(self, message: Message) -> None:
        try:
            if not message.url:
                await self._record(_NO_WEBHOOK, id=message.id, attempts=message.attempts)
                return
            error = await self.post(message)
            if error is None:
                await self._record(_DELIVERED, id=message.id)
                return
            failed = message.attempts >= self.config.max_attempts
            log.log(
                logging.ERROR if failed else logging.WARNING,
                "outbox %d to %s, attempt %d%s: %s",
                message.id,
                message.unit_code,
                message.attempts,
                " (giving up)" if failed else "",
                error,
            )
            await self._record(
                _FAILED,
                id=message.id,
                attempts=message.attempts,
                max=self.config.max_attempts,
                error=error,
                delay=backoff(message.attempts, self.config),
            )
        except Exception:  # recording failed: the lease runs out and the message is sent again
            log.exception("outbox %d: could not record the outcome", message.id)

    async def post(self, message: Message) -> str | None:
        """Post one message; None when the receiver took it, else what went wrong."""
        assert self._client is not None and message.url is not None
        body = canonical_body(message.payload)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "X-CityGrid-Idempotency-Key": message.idempotency_key,
            "X-CityGrid-Event": message.kind,
            "X-CityGrid-Message-Id": str(message.id),
            "X-CityGrid-Attempt": str(message.attempts),
        }
        if message.secret:
            headers["X-CityGrid-Signature"] = sign(message.secret, body)
        try:
            response = await self._client.post(message.url, content=body, headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            return f"{type(error).__name__}: {error}"[:500] or type(error).__name__
        if response.is_success:
            return None
        return f"HTTP {response.status_code}: {response.text[:200]}"[:500]

    async def _record(self, sql: str, **params: Any) -> None:
        async with self.sessions() as session:
            await session.execute(text(sql), params)
            await session.commit()
