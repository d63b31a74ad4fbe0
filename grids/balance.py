"""Balanced beats (责任网格划分): a suggestion of contiguous beats of even workload for N collectors.

A grid's weight is ``weights["area"]`` × its share of its management area's m² plus
``weights["load"]`` × its share of the area's report load (grids.beats.load_of_grids). Beats
never mix management areas (collectors belong to one): the N collectors are first shared among
the areas in proportion to their weight (largest remainder, at least one each). Inside an area:

1. the adjacency graph: grids sharing an edge longer than ``MIN_SHARED_EDGE_M`` (a corner is no
   way through), computed once in PostGIS;
2. seeds spread by k-means on the grids' centroids (EPSG:4546 metres, weighted);
3. region growing: the lightest region with unassigned neighbours takes the one nearest its
   centroid, so every beat is connected from the start and weights stay close;
4. boundary swaps: a grid moves from a heavier beat to a lighter neighbouring one when that
   lowers Σ(weight − fair share)², never disconnecting its beat, preferring grids that have at
   least as many edges into the new beat as into the old (compact shapes).

``naive_split`` is the seed's way for comparison: consecutive runs of equally many grids in
code order. ``accept`` writes a (possibly edited) suggestion to ``beats``.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from geo.errors import InvalidInput
from grids.beats import (
    SMOOTHING,
    check_grids,
    check_weights,
    collector_ids,
    normalise_codes,
    spread,
    window_start,
)
from grids.codes import reading_order

MIN_SHARED_EDGE_M = 1.0
MAX_REFINE_PASSES = 200
# Beyond this deviation from a fair share, a beat may trade a little compactness for balance.
BALANCE_TOLERANCE = 0.02


@dataclass(frozen=True)
class ScopeGrid:
    code: str
    area_code: str
    area_m2: float
    load: float
    x: float  # EPSG:4546 easting of a point inside the grid
    y: float  # northing


_GRIDS = """
WITH loads AS (
    SELECT grid_code, count(*) AS n FROM reports
    WHERE received_at >= :since AND grid_code IS NOT NULL AND status <> 'merged' GROUP BY grid_code
)
SELECT g.code, g.area_code, g.area_m2, coalesce(l.n, 0) + CAST(:smooth AS double precision) AS load,
       ST_X(p.pt) AS x, ST_Y(p.pt) AS y, u.username
FROM unit_grids g
CROSS JOIN LATERAL (SELECT ST_Transform(ST_PointOnSurface(g.geom), 4546) AS pt) p
LEFT JOIN loads l ON l.grid_code = g.code
LEFT JOIN beats b ON b.grid_code = g.code
LEFT JOIN users u ON u.id = b.collector_id
WHERE CAST(:area AS text) IS NULL OR g.area_code = :area
ORDER BY g.code
"""

# Neighbours share an edge: the length of the intersection, in metres. Inside one area only.
_ADJACENCY = """
SELECT a.code AS a, b.code AS b
FROM unit_grids a JOIN unit_grids b
  ON a.code < b.code AND a.area_code = b.area_code AND a.geom && b.geom AND ST_Intersects(a.geom, b.geom)
WHERE (CAST(:area AS text) IS NULL OR a.area_code = :area)
  AND ST_Length(ST_Transform(ST_Intersection(a.geom, b.geom), 4546)) > :min_m
"""


async def scope_grids(
    session: AsyncSession, area_code: str | None = None, since: datetime | None = None
) -> tuple[list[ScopeGrid], dict[str, str]]:
    """The grids of an area (or all) with area, load and centroid; and their current collectors."""
    rows = await session.execute(
        text(_GRIDS), {"since": window_start(since), "smooth": SMOOTHING, "area": area_code}
    )
    grids, current = [], {}
    for r in rows:
        code = r.code.strip()
        grids.append(ScopeGrid(code, r.area_code, r.area_m2, float(r.load), r.x, r.y))
        if r.username:
            current[code] = r.username
    return grids, current


async def adjacency(
    session: AsyncSession, area_code: str | None = None, min_shared_m: float = MIN_SHARED_EDGE_M
) -> dict[str, set[str]]:
    """Grid code → the codes it shares an edge (longer than ``min_shared_m``) with, same area only."""
    nbrs: dict[str, set[str]] = defaultdict(set)
    for r in await session.execute(text(_ADJACENCY), {"area": area_code, "min_m": min_shared_m}):
        a, b = r.a.strip(), r.b.strip()
        nbrs[a].add(b)
        nbrs[b].add(a)
    return nbrs


def grid_weights(grids: Sequence[ScopeGrid], weights: Mapping[str, float]) -> np.ndarray:
    """Each grid's weight as a share of its management area (the weights of an area sum to 1)."""
    m2: dict[str, float] = defaultdict(float)
    load: dict[str, float] = defaultdict(float)
    for g in grids:
        m2[g.area_code] += g.area_m2
        load[g.area_code] += g.load
    return np.array(
        [
            weights["area"] * g.area_m2 / m2[g.area_code] + weights["load"] * g.load / load[g.area_code]
            for g in grids
        ]
    )


def allocate(n: int, shares: Mapping[str, float]) -> dict[str, int]:
    """``n`` collectors over the keys in proportion to ``shares``: largest remainder, at least one each."""
    if n < len(shares):
        raise InvalidInput(f"{n} collectors cannot cover {len(shares)} management areas (one at least each)")
    total = sum(shares.values())
    exact = {a: n * s / total for a, s in shares.items()}
    quota = {a: max(1, int(x)) for a, x in exact.items()}
    for a in sorted(shares, key=lambda a: quota[a] - exact[a]):
        if sum(quota.values()) >= n:
            break
        quota[a] += 1
    while sum(quota.values()) > n:  # the "at least one" floors took too many: give back the largest
        a = max((a for a in quota if quota[a] > 1), key=lambda a: quota[a] - exact[a])
        quota[a] -= 1
    return quota


# --- the partition of one area -------------------------------------------------------------


def _components(nodes: Sequence[int], nbrs: Sequence[Sequence[int]]) -> list[list[int]]:
    inside, seen, out = set(nodes), set(), []
    for start in nodes:
        if start in seen:
            continue
        seen.add(start)
        comp, queue = [], deque([start])
        while queue:
            v = queue.popleft()
            comp.append(v)
            for u in nbrs[v]:
                if u in inside and u not in seen:
                    seen.add(u)
                    queue.append(u)
        out.append(comp)
    return out


def _connected_without(members: set[int], removed: int, nbrs: Sequence[Sequence[int]]) -> bool:
    """Is ``members`` minus ``removed`` still one connected piece?"""
    rest = members - {removed}
    if not rest:
        return False
    start = next(iter(rest))
    seen, queue = {start}, deque([start])
    while queue:
        for u in nbrs[queue.popleft()]:
            if u in rest and u not in seen:
                seen.add(u)
                queue.append(u)
    return len(seen) == len(rest)


def _kmeans_seeds(xy: np.ndarray, w: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    """k grids spread over the area: weighted k-means (k-means++ start), each centre's nearest grid."""
    n = len(xy)
    centres = [xy[int(np.argmax(w))]]
    for _ in range(1, k):
        d2 = np.min([((xy - c) ** 2).sum(axis=1) for c in centres], axis=0) * w
        centres.append(xy[int(rng.choice(n, p=d2 / d2.sum()))] if d2.sum() > 0 else xy[int(rng.integers(n))])
    c = np.array(centres)
    for _ in range(30):
        label = np.argmin(((xy[:, None, :] - c[None, :, :]) ** 2).sum(axis=2), axis=1)
        moved = c.copy()
        for j in range(k):
            mask = label == j
            if mask.any():
                moved[j] = np.average(xy[mask], axis=0, weights=w[mask])
        if np.allclose(moved, c):
            break
        c = moved
    seeds: list[int] = []
    for centre in c:
        for i in np.argsort(((xy - centre) ** 2).sum(axis=1)):
            if int(i) not in seeds:
                seeds.append(int(i))
                break
    return seeds


def _grow(
    nodes: Sequence[int],
    nbrs: Sequence[Sequence[int]],
    w: np.ndarray,
    xy: np.ndarray,
    k: int,
    rng: np.random.Generator,
) -> dict[int, int]:
    """Region growing from k seeds over one connected component: lightest region first."""
    local = np.array(nodes)
    seeds = [int(local[i]) for i in _kmeans_seeds(xy[local], w[local], k, rng)]
    label: dict[int, int] = {}
    weight = np.zeros(k)
    sx, sy, sw = np.zeros(k), np.zeros(k), np.zeros(k)  # running weighted centroid of each region
    frontier: list[set[int]] = [set() for _ in range(k)]
    inside = set(nodes)

    def take(v: int, r: int) -> None:
        label[v] = r
        weight[r] += w[v]
        sx[r] += xy[v, 0] * w[v]
        sy[r] += xy[v, 1] * w[v]
        sw[r] += w[v]
        for u in nbrs[v]:
            if u in label:
                frontier[label[u]].discard(v)
            elif u in inside:
                frontier[r].add(u)

    for r, s in enumerate(seeds):
        take(s, r)
    while len(label) < len(nodes):
        open_regions = [r for r in range(k) if frontier[r]]
        r = min(open_regions, key=lambda q: weight[q])
        cx, cy = sx[r] / sw[r], sy[r] / sw[r]
        v = min(frontier[r], key=lambda u: (xy[u, 0] - cx) ** 2 + (xy[u, 1] - cy) ** 2)
        take(v, r)
    return label


def _refine(label: dict[int, int], nbrs: Sequence[Sequence[int]], w: np.ndarray) -> None:
    """Boundary swaps lowering Σ(weight − share)² without disconnecting a beat (in place)."""
    members: dict[int, set[int]] = defaultdict(set)
    weight: dict[int, float] = defaultdict(float)
    for v, r in label.items():
        members[r].add(v)
        weight[r] += w[v]
    target = sum(weight.values()) / max(len(weight), 1)
    for compact_only in (True, False, True):
        for _ in range(MAX_REFINE_PASSES):
            moves = []
            for v, r in label.items():
                counts: dict[int, int] = defaultdict(int)
                for u in nbrs[v]:
                    if u in label:
                        counts[label[u]] += 1
                for s, into in counts.items():
                    if s == r:
                        continue
                    slack = weight[r] - weight[s] - w[v]
                    if slack <= 1e-12:
                        continue
                    if into < counts.get(r, 0) and (
                        compact_only
                        or (
                            weight[r] <= target * (1 + BALANCE_TOLERANCE)
                            and weight[s] >= target * (1 - BALANCE_TOLERANCE)
                        )
                    ):
                        continue
                    moves.append((w[v] * slack, into - counts.get(r, 0), v, s))
            if not moves:
                break
            moved = 0
            for _, _, v, s in sorted(moves, reverse=True):
                r = label[v]
                if r == s or weight[r] - weight[s] - w[v] <= 1e-12:
                    continue  # an earlier move of this pass changed the picture
                if not any(label.get(u) == s for u in nbrs[v]):
                    continue
                if not _connected_without(members[r], v, nbrs):
                    continue
                members[r].discard(v)
                members[s].add(v)
                weight[r] -= w[v]
                weight[s] += w[v]
                label[v] = s
                moved += 1
            if not moved:
                break


def partition(
    xy: np.ndarray, w: np.ndarray, nbrs: Sequence[Sequence[int]], k: int, seed: int = 0
) -> np.ndarray:
    """Labels 0..k-1 for the grids of one area: contiguous regions of similar total weight.

    A part of the area not connected to the rest (an island) gets collectors in proportion to its
    weight; one too light for a collector of its own joins the nearest region (that beat then
    is not contiguous, which the suggestion reports).
    """
    n = len(w)
    if k > n:
        raise InvalidInput(f"{k} collectors for {n} grids: a beat needs at least one grid")
    rng = np.random.default_rng(seed)
    comps = sorted(_components(range(n), nbrs), key=lambda c: -w[c].sum())
    # Largest remainder without a minimum: a small island is no reason for a collector of its own.
    exact = [k * float(w[c].sum()) / float(w.sum()) for c in comps]
    quota = {i: int(x) for i, x in enumerate(exact)}
    for i in sorted(range(len(comps)), key=lambda i: int(exact[i]) - exact[i])[: k - sum(quota.values())]:
        quota[i] += 1
    label = np.full(n, -1)
    next_label = 0
    for i, comp in enumerate(comps):
        q = min(quota.get(i, 0), len(comp))
        if q == 0:
            continue
        part = _grow(comp, nbrs, w, xy, q, rng) if q > 1 else dict.fromkeys(comp, 0)
        _refine(part, nbrs, w)
        for v, r in part.items():
            label[v] = next_label + r
        next_label += q
    for comp in comps:
        if label[comp[0]] >= 0:
            continue
        centre = xy[comp].mean(axis=0)
        assigned = np.flatnonzero(label >= 0)
        nearest = assigned[np.argmin(((xy[assigned] - centre) ** 2).sum(axis=1))]
        label[comp] = label[nearest]
    return label


# --- suggestion ----------------------------------------------------------------------------


def naive_split(grids: Sequence[ScopeGrid], quotas: Mapping[str, int]) -> dict[str, int]:
    """What the seed does: per area, consecutive runs of equally many grids in code order."""
    by_area: dict[str, list[str]] = defaultdict(list)
    for g in sorted(grids, key=lambda g: g.code):
        by_area[g.area_code].append(g.code)
    out, base = {}, 0
    for area in sorted(by_area):
        codes, k = by_area[area], quotas[area]
        for i in range(k):
            for code in codes[i * len(codes) // k : (i + 1) * len(codes) // k]:
                out[code] = base + i
        base += k
    return out


def beat_balance(
    grids: Sequence[ScopeGrid], assignment: Mapping[str, Any], weights: Mapping[str, float]
) -> dict[str, dict[str, Any]]:
    """min/median/max/cv per beat of grids, m², load and weight (1.0 = a fair share of its area).

    ``assignment``: grid code → beat (an index or a username); grids without one are left out.
    """
    w = grid_weights(grids, weights)
    per: dict[Any, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    area_of: dict[Any, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for g, wg in zip(grids, w, strict=True):
        beat = assignment.get(g.code)
        if beat is None:
            continue
        p = per[beat]
        p["grids"] += 1
        p["area_m2"] += g.area_m2
        p["load"] += g.load
        p["weight"] += wg
        area_of[beat][g.area_code] += 1
    main = {b: max(a, key=lambda x: a[x]) for b, a in area_of.items()}
    k: dict[str, int] = defaultdict(int)
    for a in main.values():
        k[a] += 1
    for b, p in per.items():
        p["weight"] *= k[main[b]]  # share of the area's fair share
    return {m: spread(p[m] for p in per.values()) for m in ("grids", "area_m2", "load", "weight")}


@dataclass
class Suggestion:
    n: int
    area: str | None
    weights: dict[str, float]
    since: datetime
    assignment: dict[str, int]  # grid code → beat index
    beats: list[dict[str, Any]] = field(default_factory=list)
    balance: dict[str, dict[str, Any]] = field(default_factory=dict)  # current / suggested / naive

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "area": self.area,
            "weights": self.weights,
            "since": self.since.isoformat(),
            "beats": self.beats,
            "balance": self.balance,
            "assignment": self.assignment,
        }


def _connected(codes: Sequence[str], nbrs: Mapping[str, set[str]]) -> bool:
    inside = set(codes)
    if not inside:
        return False
    start = next(iter(inside))
    seen, queue = {start}, deque([start])
    while queue:
        for u in nbrs.get(queue.popleft(), ()):
            if u in inside and u not in seen:
                seen.add(u)
                queue.append(u)
    return len(seen) == len(inside)


def _propose(
    beats: dict[int, list[str]], current: Mapping[str, str], w: Mapping[str, float]
) -> dict[int, str]:
    """Index → the collector holding most of that beat's weight now (each collector once)."""
    overlap: dict[tuple[int, str], float] = defaultdict(float)
    for i, codes in beats.items():
        for c in codes:
            if c in current:
                overlap[(i, current[c])] += w[c]
    taken_i: set[int] = set()
    taken_u: set[str] = set()
    out: dict[int, str] = {}
    for (i, u), _ in sorted(overlap.items(), key=lambda kv: -kv[1]):
        if i not in taken_i and u not in taken_u:
            out[i] = u
            taken_i.add(i)
            taken_u.add(u)
    return out


async def suggest(
    session: AsyncSession,
    n_collectors: int,
    area_code: str | None = None,
    weights: Mapping[str, float] | None = None,
    since: datetime | None = None,
) -> Suggestion:
    """Contiguous beats of balanced weight for ``n_collectors`` (in one area, or shared over all)."""
    wts = check_weights(weights)
    if n_collectors < 1:
        raise InvalidInput("at least one collector")
    grids, current = await scope_grids(session, area_code, since)
    if not grids:
        raise InvalidInput(f"no grids in management area {area_code!r}")
    nbrs = await adjacency(session, area_code)
    w = grid_weights(grids, wts)
    m2: dict[str, float] = defaultdict(float)
    load: dict[str, float] = defaultdict(float)
    for g in grids:
        m2[g.area_code] += g.area_m2
        load[g.area_code] += g.load
    city_share = {
        a: wts["area"] * m2[a] / sum(m2.values()) + wts["load"] * load[a] / sum(load.values()) for a in m2
    }
    quotas = allocate(n_collectors, city_share)
    index = {g.code: i for i, g in enumerate(grids)}
    xy = np.array([(g.x, g.y) for g in grids])
    assignment: dict[str, int] = {}
    base = 0
    for area in sorted(quotas):
        members = [i for i, g in enumerate(grids) if g.area_code == area]
        local = {v: j for j, v in enumerate(members)}
        # Sorted: the result must not depend on the iteration order of sets of strings (hash seed).
        local_nbrs = [
            sorted(local[index[u]] for u in nbrs.get(grids[v].code, ()) if index[u] in local) for v in members
        ]
        labels = partition(xy[members], w[members], local_nbrs, quotas[area])
        # Number the beats in reading order (north→south, west→east) of their centroids.
        k = quotas[area]
        centres = [tuple(xy[members][labels == r].mean(axis=0)) for r in range(k)]
        order = {r: pos for pos, r in enumerate(reading_order(centres, row_height=1000.0))}
        for j, v in enumerate(members):
            assignment[grids[v].code] = base + order[int(labels[j])]
        base += k

    weight_of = {g.code: float(wg) for g, wg in zip(grids, w, strict=True)}
    per_beat: dict[int, list[str]] = defaultdict(list)
    for code, i in assignment.items():
        per_beat[i].append(code)
    proposed = _propose(per_beat, current, weight_of)
    by_code = {g.code: g for g in grids}
    beats = []
    for i in sorted(per_beat):
        codes = per_beat[i]
        area = by_code[codes[0]].area_code
        beats.append(
            {
                "index": i,
                "area": area,
                "grids": len(codes),
                "area_m2": round(sum(by_code[c].area_m2 for c in codes), 1),
                "load": sum(by_code[c].load for c in codes),
                "weight": round(sum(weight_of[c] for c in codes) * quotas[area], 4),
                "connected": _connected(codes, nbrs),
                "proposed_collector": proposed.get(i),
            }
        )
    balance = {
        "current": beat_balance(grids, current, wts),
        "suggested": beat_balance(grids, assignment, wts),
        "naive": beat_balance(grids, naive_split(grids, quotas), wts),
    }
    return Suggestion(n_collectors, area_code, wts, window_start(since), assignment, beats, balance)


# --- acceptance ----------------------------------------------------------------------------

_ACCEPT = """
INSERT INTO beats (grid_code, collector_id)
SELECT g, u FROM unnest(CAST(:codes AS text[]), CAST(:uids AS int[])) AS t(g, u)
ON CONFLICT (grid_code) DO UPDATE SET collector_id = EXCLUDED.collector_id, assigned_at = now()
WHERE beats.collector_id <> EXCLUDED.collector_id
"""


async def accept(
    session: AsyncSession,
    assignment: Mapping[str, int],
    collectors: Mapping[int, str],
    planner_id: int | None = None,
) -> dict[str, Any]:
    """Write a suggestion (grid → index, index → username) to ``beats``; the caller commits.

    All or nothing: every index needs a distinct enabled collector, every grid must exist, and a
    beat must not mix management areas. Grids not in ``assignment`` keep their collector.
    """
    if not assignment:
        raise InvalidInput("the assignment is empty")
    raw_codes = list(assignment)
    codes = normalise_codes(raw_codes)
    index_of = {parse: assignment[raw] for raw, parse in zip(raw_codes, codes, strict=True)}
    missing = sorted({i for i in index_of.values() if i not in collectors})
    if missing:
        raise InvalidInput(f"no collector named for the beats {', '.join(map(str, missing))}")
    used = {i: collectors[i] for i in sorted(set(index_of.values()))}
    twice = sorted({u for u in used.values() if list(used.values()).count(u) > 1})
    if twice:
        raise InvalidInput(f"a collector can hold one beat only: {', '.join(twice)}")
    ids = await collector_ids(session, list(used.values()))
    area_of = await check_grids(session, codes)
    areas: dict[int, set[str]] = defaultdict(set)
    for code, i in index_of.items():
        areas[i].add(area_of[code])
    mixed = [
        {"field": str(i), "message": f"mixes the management areas {', '.join(sorted(a))}"}
        for i, a in areas.items()
        if len(a) > 1
    ]
    if mixed:
        raise InvalidInput("a beat never mixes management areas", errors=mixed)
    changed = await session.execute(
        text(_ACCEPT),
        {"codes": list(index_of), "uids": [ids[used[i]] for i in index_of.values()]},
    )
    counts: dict[str, int] = defaultdict(int)
    for i in index_of.values():
        counts[used[i]] += 1
    return {
        "collectors": dict(sorted(counts.items())),
        "grids": len(index_of),
        "moved": changed.rowcount,
        "planner_id": planner_id,
    }


async def beats_geojson(
    session: AsyncSession,
    assignment: Mapping[str, int],
    properties: Mapping[int, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The beats dissolved, one feature per index (RFC 7946: lon/lat, exterior rings counter-clockwise).

    ``parts`` > 1 means the beat is not one piece (grids touching at a corner do not join).
    """
    rows = await session.execute(
        text("""
        SELECT i, n, ST_NumGeometries(geom) AS parts, ST_AsGeoJSON(ST_ForcePolygonCCW(geom), 7) AS gj
        FROM (SELECT t.i, count(*) AS n, ST_Union(g.geom) AS geom
              FROM unnest(CAST(:codes AS text[]), CAST(:idx AS int[])) AS t(c, i)
              JOIN unit_grids g ON g.code = t.c GROUP BY t.i) s
        ORDER BY i"""),
        {"codes": list(assignment), "idx": [int(i) for i in assignment.values()]},
    )
    props = properties or {}
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": json.loads(r.gj),
                "properties": {**props.get(r.i, {}), "index": r.i, "grids": r.n, "parts": r.parts},
            }
            for r in rows
        ],
    }
