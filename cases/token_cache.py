"""The principals of recently used tokens, kept in one process (saves every request its token query).

The copy is trusted only while the process's ``Listener`` listens: triggers (migration 0006)
announce every change to tokens, users and unit codes on ``citygrid_auth`` with the user's id
('*': everyone), and the entries of that user are dropped. A revocation therefore takes effect
in every process within the notification's delay, and at once in the process that made it
(``forget`` after its commit). A lookup that overlapped any eviction is not cached, so an
answer read before a change cannot outlive the change's notification.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from cases.accounts import Principal
from geo.pg import Listener

CHANNEL = "citygrid_auth"


@dataclass(frozen=True)
class _Entry:
    principal: Principal
    until: float  # time.monotonic(): the token's expiry or the entry's age limit, the sooner


class TokenCache:
    def __init__(self, listener: Listener, max_entries: int = 10_000, max_age_s: float = 300.0) -> None:
        self.listener = listener
        self.max_entries = max_entries
        self.max_age_s = max_age_s
        self.generation = 0  # bumped by every eviction
        self._entries: dict[bytes, _Entry] = {}
        listener.on(CHANNEL, self._notified)
        listener.on_reset(lambda: self.forget(None))

    def get(self, token_hash: bytes) -> Principal | None:
        entry = self._entries.get(token_hash)
        if entry is None or not self.listener.live:
            return None
        if entry.until <= time.monotonic():
            self._entries.pop(token_hash, None)
            return None
        return entry.principal

    def put(self, token_hash: bytes, principal: Principal, expires_at: datetime, generation: int) -> None:
        """Keep a lookup's answer, unless an eviction happened since ``generation`` was read."""
        if generation != self.generation or not self.listener.live:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.pop(next(iter(self._entries)))  # the oldest
        left_s = (expires_at - datetime.now(UTC)).total_seconds()
        self._entries[token_hash] = _Entry(principal, time.monotonic() + min(left_s, self.max_age_s))

    def forget(self, user_id: int | None) -> None:
        """Drop the entries of one user, or of everyone (None)."""
        self.generation += 1
        if user_id is None:
            self._entries.clear()
        else:
            for key in [k for k, e in self._entries.items() if e.principal.id == user_id]:
                del self._entries[key]

    def _notified(self, payload: str) -> None:
        self.forget(int(payload) if payload.isdigit() else None)
