"""The catalogue of matter classes (事项, GB/T 47678.5-2026) with their deadline classes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from geo.pg import Listener, Statement, raw_connection

CHANNEL = "citygrid_catalogue"  # NOTIFY on any change to matter_classes (migration 0006)


async def list_matter_classes(session: AsyncSession, kind: str | None = None) -> list[dict[str, Any]]:
    rows = await session.execute(
        text(
            "SELECT m.code, m.kind, m.major_code, m.major_name, m.name, m.component_class, "
            "m.deadline_class, d.name AS deadline_name, d.unit AS deadline_unit, "
            "d.amount AS deadline_amount, m.filing_condition, m.closing_condition "
            "FROM matter_classes m JOIN deadline_classes d ON d.code = m.deadline_class "
            "WHERE m.active AND (CAST(:kind AS text) IS NULL OR m.kind = :kind) ORDER BY m.code"
        ),
        {"kind": kind},
    )
    return [
        {
            "code": r.code,
            "kind": r.kind,
            "major_code": r.major_code,
            "major": r.major_name,
            "name": r.name,
            "component_class": r.component_class,
            "deadline_class": r.deadline_class,
            "deadline": {
                "name": r.deadline_name,
                "unit": r.deadline_unit,
                "amount": float(r.deadline_amount),
            },
            "filing_condition": r.filing_condition,
            "closing_condition": r.closing_condition,
        }
        for r in rows
    ]


@dataclass(frozen=True)
class MatterClass:
    """What a report's checks need of its matter class."""

    code: str
    kind: str
    component_class: str | None


_ACTIVE = "SELECT code::text AS code, kind, component_class FROM matter_classes WHERE active"
_ONE = Statement(f"{_ACTIVE} AND code = :c")
_ALL = Statement(_ACTIVE)


class MatterCatalogue:
    """The active matter classes in memory, for the submission path.

    Dropped on every change (NOTIFY) and reloaded on next use; while the listener is down each
    lookup asks the database. A load that overlapped a change is used once, not kept.
    """

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self._classes: dict[str, MatterClass] | None = None
        self._generation = 0
        listener.on(CHANNEL, lambda _: self._drop())
        listener.on_reset(self._drop)

    def _drop(self) -> None:
        self._classes = None
        self._generation += 1

    async def get(self, session: AsyncSession, code: str) -> MatterClass | None:
        if not self.listener.live:
            return await matter_class(session, code)
        classes = self._classes
        if classes is None:
            generation = self._generation
            rows = await _ALL.fetch(await raw_connection(session), {})
            classes = {r["code"]: MatterClass(*r) for r in rows}
            if generation == self._generation:
                self._classes = classes
        return classes.get(code)


async def matter_class(
    session: AsyncSession, code: str, catalogue: MatterCatalogue | None = None
) -> MatterClass | None:
    """The active matter class ``code``, from ``catalogue`` when there is one."""
    if catalogue is not None:
        return await catalogue.get(session, code)
    row = await _ONE.fetchrow(await raw_connection(session), {"c": code})
    return MatterClass(*row) if row else None
