"""Responsible units (责任单位): who owns components and areas, and who handles cases."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_SELECT = (
    "SELECT u.code, u.name, u.kind, p.code AS parent, u.area_code, u.region_code, "
    "u.dispatch_center FROM units u LEFT JOIN units p ON p.id = u.parent_id"
)


def _unit(row: Any) -> dict[str, Any]:
    return {
        "code": row.code,
        "name": row.name,
        "kind": row.kind,
        "parent": row.parent,
        "area": row.area_code,
        "region": row.region_code,
        "dispatch_center": row.dispatch_center,
    }


async def list_units(session: AsyncSession, kind: str | None = None) -> list[dict[str, Any]]:
    rows = await session.execute(
        text(f"{_SELECT} WHERE u.active AND (CAST(:k AS text) IS NULL OR u.kind = :k) ORDER BY u.code"),
        {"k": kind},
    )
    return [_unit(r) for r in rows]


async def unit_by_id(session: AsyncSession, unit_id: int) -> dict[str, Any] | None:
    row = (await session.execute(text(f"{_SELECT} WHERE u.id = :id"), {"id": unit_id})).first()
    return _unit(row) if row else None
