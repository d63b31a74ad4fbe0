"""Collector beats (责任网格): which collector patrols which unit grids, and how even the work is.

Every grid has one collector (``beats``' primary key); a collector holds many grids, normally
all in one management area. A beat's workload is measured two ways: its area (patrol effort)
and its report load — the reports of its grids over the last year, plus one a grid so that a
quiet grid still counts. ``weight`` mixes the two shares (by default half each); a collector's
``weight`` is that mix relative to a fair share of their area (1.0 = exactly fair).
"""

from __future__ import annotations

import logging
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from geo.errors import InvalidInput, NotFound
from grids.codes import InvalidCode, parse_grid

log = logging.getLogger("citygrid.beats")

REPORT_WINDOW = timedelta(days=365)
SMOOTHING = 1.0  # reports a grid counts with none at all: quiet grids still need patrols
DEFAULT_WEIGHTS: dict[str, float] = {"area": 0.5, "load": 0.5}

# Merged reports are duplicates of one already counted; the others (rejected included) each
# took a collector's or an operator's time.
_LOADS = """
SELECT grid_code, count(*) AS n FROM reports
WHERE received_at >= :since AND grid_code IS NOT NULL AND status <> 'merged'
GROUP BY grid_code
"""


async def beat_of(session: AsyncSession, collector_id: int) -> list[str]:
    """The codes of the unit grids assigned to a collector, in code order."""
    rows = await session.scalars(
        text("SELECT grid_code FROM beats WHERE collector_id = :u ORDER BY grid_code"),
        {"u": collector_id},
    )
    return list(rows)


def window_start(since: datetime | None = None) -> datetime:
    return since or datetime.now(UTC) - REPORT_WINDOW


async def load_of_grids(
    session: AsyncSession, since: datetime | None = None, area_code: str | None = None
) -> dict[str, float]:
    """Report load per grid code: reports received since ``since`` (default: a year ago) + 1."""
    rows = await session.execute(
        text(f"""
        WITH loads AS ({_LOADS})
        SELECT g.code, coalesce(l.n, 0) AS n FROM unit_grids g LEFT JOIN loads l ON l.grid_code = g.code
        WHERE CAST(:area AS text) IS NULL OR g.area_code = :area"""),
        {"since": window_start(since), "area": area_code},
    )
    return {r.code.strip(): r.n + SMOOTHING for r in rows}


def check_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """``{"area": a, "load": l}`` normalised to sum 1 (InvalidInput for other keys or no weight)."""
    if weights is None:
        return dict(DEFAULT_WEIGHTS)
    unknown = set(weights) - set(DEFAULT_WEIGHTS)
    if unknown:
        raise InvalidInput(f"unknown weights {sorted(unknown)}: use area and load")
    values = {k: float(weights.get(k, 0.0)) for k in DEFAULT_WEIGHTS}
    if any(v < 0 for v in values.values()) or sum(values.values()) <= 0:
        raise InvalidInput("weights must be ≥ 0 and not all 0")
    total = sum(values.values())
    return {k: v / total for k, v in values.items()}


def spread(values: Iterable[float]) -> dict[str, float | int | None]:
    """min / median / max / mean and the coefficient of variation (population σ / mean)."""
    xs = [float(x) for x in values]
    if not xs:
        return {"n": 0, "min": None, "median": None, "max": None, "mean": None, "cv": None}
    mean = statistics.fmean(xs)
    cv = statistics.pstdev(xs) / mean if mean else None
    return {
        "n": len(xs),
        "min": round(min(xs), 4),
        "median": round(statistics.median(xs), 4),
        "max": round(max(xs), 4),
        "mean": round(mean, 4),
        "cv": None if cv is None else round(cv, 4),
    }


def normalise_codes(codes: Sequence[str]) -> list[str]:
    """Grid codes as stored (15 digits; legacy 14-digit codes widened), or InvalidInput naming each bad one."""
    out, bad = [], []
    for raw in codes:
        try:
            out.append(parse_grid(str(raw).strip()).code)
        except InvalidCode as exc:
            bad.append({"field": str(raw), "message": exc.reason})
    if bad:
        raise InvalidInput(f"{len(bad)} malformed grid codes", errors=bad)
    return list(dict.fromkeys(out))


async def check_grids(session: AsyncSession, codes: Sequence[str]) -> dict[str, str]:
    """Code → management area of each grid; InvalidInput (422) listing the unknown ones."""
    rows = await session.execute(
        text("SELECT code, area_code FROM unit_grids WHERE code = ANY(:c)"), {"c": list(codes)}
    )
    found = {r.code.strip(): r.area_code for r in rows}
    unknown = [c for c in codes if c not in found]
    if unknown:
        raise InvalidInput(
            f"{len(unknown)} unknown grid codes",
            errors=[{"field": c, "message": "no such unit grid"} for c in unknown[:100]],
        )
    return found


async def collector_ids(session: AsyncSession, usernames: Sequence[str]) -> dict[str, int]:
    """Username → id of enabled collectors: unknown users are 404, others than collectors 422."""
    rows = await session.execute(
        text("SELECT id, username, roles, disabled FROM users WHERE username = ANY(:u)"),
        {"u": list(usernames)},
    )
    found = {r.username: r for r in rows}
    missing = [u for u in usernames if u not in found]
    if missing:
        raise NotFound(f"no user {', '.join(missing)}")
    wrong = [
        {"field": u, "message": "disabled" if found[u].disabled else "not a collector"}
        for u in usernames
        if "collector" not in found[u].roles or found[u].disabled
    ]
    if wrong:
        raise InvalidInput("beats are for enabled collectors only", errors=wrong)
    return {u: found[u].id for u in usernames}


_ASSIGN = """
INSERT INTO beats (grid_code, collector_id)
SELECT g, CAST(:uid AS integer) FROM unnest(CAST(:codes AS text[])) AS g
ON CONFLICT (grid_code) DO UPDATE SET collector_id = EXCLUDED.collector_id, assigned_at = now()
WHERE beats.collector_id <> EXCLUDED.collector_id
"""


async def assign(
    session: AsyncSession, grid_codes: Sequence[str], collector_username: str, planner_id: int | None = None
) -> dict[str, Any]:
    """Move grids to a collector's beat (grids not named stay where they are); the caller commits.

    Unknown users are NotFound, non-collectors and unknown or malformed codes InvalidInput. A beat
    spanning management areas is allowed here (a stand-in, say) but said in ``warnings``.
    """
    (uid,) = (await collector_ids(session, [collector_username])).values()
    codes = normalise_codes(grid_codes)
    if not codes:
        raise InvalidInput("no grid codes given")
    await check_grids(session, codes)
    previous = await session.execute(
        text(
            "SELECT u.username, count(*) AS n FROM beats b JOIN users u ON u.id = b.collector_id "
            "WHERE b.grid_code = ANY(:c) AND b.collector_id <> :uid GROUP BY u.username"
        ),
        {"c": codes, "uid": uid},
    )
    moved_from = {r.username: r.n for r in previous}
    await session.execute(text(_ASSIGN), {"codes": codes, "uid": uid})
    areas = list(
        await session.scalars(
            text(
                "SELECT DISTINCT g.area_code FROM beats b JOIN unit_grids g ON g.code = b.grid_code "
                "WHERE b.collector_id = :uid ORDER BY 1"
            ),
            {"uid": uid},
        )
    )
    total = await session.scalar(text("SELECT count(*) FROM beats WHERE collector_id = :uid"), {"uid": uid})
    # beats has no assigned_by column: the planner is on record in the log only.
    log.info("planner %s assigned %d grids to %s", planner_id, len(codes), collector_username)
    warnings = [f"the beat now spans the management areas {', '.join(areas)}"] if len(areas) > 1 else []
    return {
        "collector": collector_username,
        "assigned": codes,
        "moved_from": moved_from,
        "beat_grids": total,
        "areas": areas,
        "warnings": warnings,
    }


_SUMMARY = f"""
WITH loads AS ({_LOADS})
SELECT u.username, u.display_name, g.area_code, count(g.code) AS grids,
       coalesce(sum(g.area_m2), 0) AS area_m2,
       coalesce(sum(coalesce(l.n, 0) + CAST(:smooth AS double precision)), 0) AS load
FROM users u
LEFT JOIN beats b ON b.collector_id = u.id
LEFT JOIN unit_grids g ON g.code = b.grid_code
LEFT JOIN loads l ON l.grid_code = g.code
WHERE 'collector' = ANY(u.roles) AND NOT u.disabled
GROUP BY u.username, u.display_name, g.area_code
ORDER BY u.username
"""
_AREA_TOTALS = f"""
WITH loads AS ({_LOADS})
SELECT g.area_code, count(*) AS grids, sum(g.area_m2) AS area_m2,
       sum(coalesce(l.n, 0) + CAST(:smooth AS double precision)) AS load,
       count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM beats b WHERE b.grid_code = g.code)) AS unassigned
FROM unit_grids g LEFT JOIN loads l ON l.grid_code = g.code
GROUP BY g.area_code ORDER BY g.area_code
"""


async def beats_summary(
    session: AsyncSession, since: datetime | None = None, weights: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """Per collector: grids, area (m²), report load and weight; the balance per management area.

    A collector's area is the one holding most of their grids; collectors without a beat are
    listed (``grids`` 0) but left out of the balance.
    """
    w = check_weights(weights)
    params = {"since": window_start(since), "smooth": SMOOTHING}
    totals = {r.area_code: r for r in await session.execute(text(_AREA_TOTALS), params)}
    parts: dict[str, list[Any]] = defaultdict(list)
    names: dict[str, str] = {}
    for r in await session.execute(text(_SUMMARY), params):
        names[r.username] = r.display_name
        if r.area_code is not None:
            parts[r.username].append(r)
    main_area = {u: max(ps, key=lambda p: p.grids).area_code for u, ps in parts.items()}
    k = Counter(main_area.values())
    collectors = []
    for username, display_name in names.items():
        ps = parts.get(username, [])
        weight = sum(
            (
                w["area"] * p.area_m2 / totals[p.area_code].area_m2
                + w["load"] * p.load / totals[p.area_code].load
            )
            * k[p.area_code]
            for p in ps
        )
        collectors.append(
            {
                "username": username,
                "display_name": display_name,
                "area": main_area.get(username),
                "areas": sorted(p.area_code for p in ps),
                "grids": sum(p.grids for p in ps),
                "area_m2": round(sum(p.area_m2 for p in ps), 1),
                "load": sum(p.load for p in ps),
                "weight": round(weight, 4),
            }
        )
    active = [c for c in collectors if c["grids"]]

    def balance(cs: list[dict[str, Any]]) -> dict[str, Any]:
        return {m: spread(c[m] for c in cs) for m in ("grids", "area_m2", "load", "weight")}

    return {
        "since": params["since"].isoformat(),
        "weights": w,
        "collectors": collectors,
        "idle": [c["username"] for c in collectors if not c["grids"]],
        "areas": {
            a: {
                "grids": t.grids,
                "area_m2": round(t.area_m2, 1),
                "load": t.load,
                "unassigned": t.unassigned,
                "collectors": k[a],
            }
            for a, t in totals.items()
        },
        "balance": {
            "all": balance(active),
            "by_area": {a: balance([c for c in active if c["area"] == a]) for a in totals},
        },
    }
