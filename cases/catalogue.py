"""The catalogue of matter classes (事项, GB/T 47678.5-2026) with their deadline classes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


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
