"""Collector beats (责任网格): which collector patrols which unit grids."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


async def beat_of(session: AsyncSession, collector_id: int) -> list[str]:
    """The codes of the unit grids assigned to a collector, in code order."""
    rows = await session.scalars(
        text("SELECT grid_code FROM beats WHERE collector_id = :u ORDER BY grid_code"),
        {"u": collector_id},
    )
    return list(rows)
