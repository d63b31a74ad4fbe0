"""Shared set-up of the benchmarks: the embedded cluster (or DATABASE_URL) and a seeded database."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from api import admin_db, cluster
from api.settings import Settings, get_settings

BENCH_DB = "citygrid_bench"


async def seeded_database() -> tuple[Settings, str]:
    """(settings, SQLAlchemy URL) of a database holding the Huaihua demo."""
    settings = get_settings()
    if settings.embedded:
        cluster.up(settings)
    await admin_db.ensure_seeded(settings, BENCH_DB, password="citygrid-demo")
    return settings, settings.url_for(BENCH_DB)


async def rate(label: str, n: int, call: Callable[[int], Awaitable[object]], warmup: int = 200) -> float:
    """Calls per second of ``call(i)`` for i in range(n), after a warm-up; printed."""
    for i in range(warmup):
        await call(i)
    started = time.perf_counter()
    for i in range(n):
        await call(i)
    per_s = n / (time.perf_counter() - started)
    print(f"  {label:<58} {per_s:>10,.0f} /s")
    return per_s


def ratio(label: str, value: float, baseline: float, target: float) -> bool:
    r = value / baseline
    ok = r >= target
    print(f"  {label:<58} {r:>10.2f}x  (target ≥ {target}x: {'met' if ok else 'NOT met'})")
    return ok
