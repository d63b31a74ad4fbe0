"""Geocoding: a place description for a point (reverse), places for what a caller says (search).

Reverse geocoding gives the text an operator reads on the phone to a unit, e.g.
"鹤城区 城中街道 迎丰社区 网格 431202001003012，迎丰中路 23 号附近，供水井盖 43120201001000123 东 12 米":
the grid from the locator, then one SQL statement for the nearest road, door plate, landmark
and component (each a KNN scan on its GiST index, re-ranked by geodesic distance).

Search takes free text as typed by an operator: full-width digits and letters, spaces, a
trailing 号 or 附近; a 16/17-digit component code; a road with a door number (迎丰中路23号);
two roads of a crossing (人民路与迎丰中路交叉口); or part of the name of a road, landmark,
compound or community. Road types are interchangeable (湖天路 finds 湖天大道). Names are
matched by exact, prefix, infix and trigram similarity (pg_trgm: its GIN indexes on
roads.name and landmarks.name serve LIKE, ``%`` and ``<%``; Chinese characters are word
characters in the C.UTF-8 database, so every character takes part in the trigrams).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from geo.codes import InvalidCode, validate_component, widen_legacy_component
from geo.crs import CRS, from_cgcs2000, to_cgcs2000
from geo.errors import InvalidInput, NotFound, OutsideJurisdiction
from geo.grid_index import GridIndex
from geo.locator import Location, locate, locate_many
from geo.pg import raw_connection

__all__ = ["normalise", "resolve", "reverse", "search"]

# How far reverse geocoding looks for each kind of reference (m).
ROAD_M = 200.0
ADDRESS_M = 100.0
LANDMARK_M = 300.0
COMPONENT_M = 30.0
NEAR_ROAD_M = 30.0  # closer than this a point is "on" the road (迎丰中路附近)
_KNN = 4  # KNN in degrees is not metric: rank a few by geodesic distance

_DIRECTIONS = ("北", "东北", "东", "东南", "南", "西南", "西", "西北")

_REVERSE = f"""
WITH p AS (SELECT ST_SetSRID(ST_MakePoint($1, $2), 4490) AS g)
SELECT rd.id AS road_id, rd.name AS road, rd.dist AS road_m,
       ad.id AS address_id, ad.label AS address, ad.number AS address_number, ad.road AS address_road,
       ad.dist AS address_m, ad.x AS address_x, ad.y AS address_y,
       lm.id AS landmark_id, lm.name AS landmark, lm.kind AS landmark_kind, lm.dist AS landmark_m,
       lm.az AS landmark_az, lm.x AS landmark_x, lm.y AS landmark_y,
       co.code AS component, co.class_code, co.class_name, co.dist AS component_m, co.az AS component_az,
       co.x AS component_x, co.y AS component_y
FROM p
LEFT JOIN LATERAL (
    SELECT n.id, n.name, n.dist FROM (
        SELECT r.id, r.name, ST_Distance(r.geom::geography, p.g::geography) AS dist
        FROM roads r ORDER BY r.geom <-> p.g LIMIT {_KNN}) n
    ORDER BY n.dist, n.id LIMIT 1) rd ON rd.dist <= $3
LEFT JOIN LATERAL (
    SELECT n.*, r.name AS road FROM (
        SELECT a.id, a.road_id, a.label, a.number, ST_X(a.geom) AS x, ST_Y(a.geom) AS y,
               ST_Distance(a.geom::geography, p.g::geography) AS dist
        FROM addresses a ORDER BY a.geom <-> p.g LIMIT {_KNN}) n
    JOIN roads r ON r.id = n.road_id
    ORDER BY n.dist, n.id LIMIT 1) ad ON ad.dist <= $4
LEFT JOIN LATERAL (
    SELECT n.* FROM (
        SELECT l.id, l.name, l.kind, ST_X(l.geom) AS x, ST_Y(l.geom) AS y,
               ST_Distance(l.geom::geography, p.g::geography) AS dist,
               ST_Azimuth(l.geom::geography, p.g::geography) AS az
        FROM landmarks l ORDER BY l.geom <-> p.g LIMIT {_KNN}) n
    ORDER BY n.dist, n.id LIMIT 1) lm ON lm.dist <= $5
LEFT JOIN LATERAL (
    SELECT n.*, k.name AS class_name FROM (
        SELECT c.code, c.class_code, ST_X(c.geom) AS x, ST_Y(c.geom) AS y,
               ST_Distance(c.geom::geography, p.g::geography) AS dist,
               ST_Azimuth(c.geom::geography, p.g::geography) AS az
        FROM components c WHERE c.status = 'in_use' ORDER BY c.geom <-> p.g LIMIT {_KNN}) n
    JOIN component_classes k ON k.code = n.class_code
    ORDER BY n.dist, n.code LIMIT 1) co ON co.dist <= $6
"""


def direction(azimuth: float | None) -> str:
    """Eight-point compass name (东, 东北…) of an azimuth in radians clockwise from north."""
    if azimuth is None:
        return ""
    return _DIRECTIONS[round(math.degrees(azimuth) / 45.0) % 8]


def _metres(m: float) -> int:
    return max(round(m), 1)


def _point(x: float, y: float, crs: CRS | str) -> dict[str, float]:
    lon, lat = from_cgcs2000(x, y, crs)
    return {"lon": round(lon, 7), "lat": round(lat, 7)}


def _describe(where: Location | None, row: Any) -> str:
    """The sentence read on the phone: region and grid, door plate or road, landmark, component."""
    parts: list[str] = []
    if where is not None:
        parts.append(f"{where.area[1]} {where.street[1]} {where.community[1]} 网格 {where.grid}")
    if row["address"] is not None:
        parts.append(f"{row['address_road']} {row['address_number']} 号附近")
    elif row["road"] is not None:
        m = row["road_m"]
        parts.append(f"{row['road']}附近" if m <= NEAR_ROAD_M else f"距{row['road']} {_metres(m)} 米")
    if row["landmark"] is not None:
        m = row["landmark_m"]
        parts.append(
            f"{row['landmark']}旁"
            if m < 10
            else f"{row['landmark']} {direction(row['landmark_az'])} {_metres(m)} 米"
        )
    if row["component"] is not None:
        m = row["component_m"]
        label = f"{row['class_name']} {row['component'].strip()}"
        parts.append(f"{label} 处" if m < 1 else f"{label} {direction(row['component_az'])} {_metres(m)} 米")
    return "，".join(parts)


async def reverse(
    session: AsyncSession,
    lon: float,
    lat: float,
    index: GridIndex | None = None,
    *,
    crs: CRS | str = CRS.cgcs2000,
    where: Location | None = None,
) -> dict[str, Any]:
    """Describe a point: grid (via the locator), nearest road, door plate, landmark and component.

    ``crs`` is that of the point and of the locations returned. A caller that has already
    located the point passes ``where`` and saves the locator's round trip. A point outside
    every grid still gets the road, landmark and component near it; one far from everything
    gets its coordinates.
    """
    x, y = to_cgcs2000(lon, lat, crs)
    if where is None:
        try:
            where = await locate(session, x, y, CRS.cgcs2000, index)
        except OutsideJurisdiction:
            where = None
    conn = await raw_connection(session)
    row = await conn.fetchrow(_REVERSE, x, y, ROAD_M, ADDRESS_M, LANDMARK_M, COMPONENT_M)
    assert row is not None  # a LEFT JOIN from one point always gives one row
    description = _describe(where, row) or f"东经 {x:.6f}°，北纬 {y:.6f}°"
    return {
        "text": description,
        "grid": where.grid if where else None,
        "snapped_m": where.snapped_m if where else None,
        "community": {"code": where.community[0], "name": where.community[1]} if where else None,
        "street": {"code": where.street[0], "name": where.street[1]} if where else None,
        "district": where.area[1] if where else None,
        "road": {"name": row["road"], "distance_m": round(row["road_m"], 1)} if row["road"] else None,
        "address": {
            "label": row["address"],
            "road": row["address_road"],
            "number": row["address_number"],
            "distance_m": round(row["address_m"], 1),
            "location": _point(row["address_x"], row["address_y"], crs),
            "ref": f"address:{row['address_id']}",
        }
        if row["address"]
        else None,
        "landmark": {
            "name": row["landmark"],
            "kind": row["landmark_kind"],
            "distance_m": round(row["landmark_m"], 1),
            "direction": direction(row["landmark_az"]),
            "location": _point(row["landmark_x"], row["landmark_y"], crs),
            "ref": f"landmark:{row['landmark_id']}",
        }
        if row["landmark"]
        else None,
        "component": {
            "code": row["component"].strip(),
            "class": row["class_code"],
            "class_name": row["class_name"],
            "distance_m": round(row["component_m"], 1),
            "direction": direction(row["component_az"]),
            "location": _point(row["component_x"], row["component_y"], crs),
        }
        if row["component"]
        else None,
    }


# --- search ---------------------------------------------------------------------------------

_LEADING = re.compile(r"^(湖南省|湖南|怀化市)+")
_TRAILING = re.compile(r"(附近|旁边|门口|对面|一带|周边|旁|号|號)+$")
# A capturing group: SQLAlchemy's text() would read ":大道" in "(?:大道" as a bind parameter.
_ROAD_TYPE = "(大道|大街|路|街|巷)"
_ROAD_SUFFIX = re.compile(_ROAD_TYPE + "$")
_DIGITS = re.compile(r"^\d+$")
_PLATE = re.compile(r"^(?P<road>.*\D)(?P<number>\d{1,5})$")
_CROSSING = re.compile(
    rf"^(?P<a>.+?{_ROAD_TYPE})(与|和|跟|、|/|&)(?P<b>.+?{_ROAD_TYPE})(交叉路口|交叉口|交汇处|十字路口|路口|口)?$"
)
MIN_CODE_PREFIX = 8  # digits: shorter numbers are not worth a component-code search
MIN_ROAD_SCORE = 0.5  # for a door plate or a crossing the road must match at least this well
_BULK_FROM = 16  # candidates: from this many, locate them in one batch


def _tidy(q: str) -> str:
    """NFKC (full-width digits and letters → half-width), no blanks, no trailing 号/附近."""
    return _TRAILING.sub("", re.sub(r"\s+", "", unicodedata.normalize("NFKC", q)))


def normalise(q: str) -> str:
    """Canonical query text: ``_tidy`` and no leading 湖南省/怀化市."""
    return _LEADING.sub("", _tidy(q))


def _stem(name: str) -> str:
    return _ROAD_SUFFIX.sub("", name)


# One score for every name match, 0–1: exact 1; same road under another type (湖天路 for 湖天大道)
# 0.95; prefix 0.85–0.95 and infix 0.7–0.8, longer matches of shorter names higher; otherwise
# trigram similarity scaled to at most 0.8.
_SCORE = """
CASE
    WHEN {col} = :q THEN 1.0
    WHEN {variant} THEN 0.95
    WHEN {col} LIKE :prefix THEN 0.85 + 0.1 * char_length(:q) / char_length({col})
    WHEN {col} LIKE :infix THEN 0.7 + 0.1 * char_length(:q) / char_length({col})
    ELSE 0.8 * greatest(similarity({col}, :q), word_similarity(:q, {col}))
END
"""
# The trigram GIN indexes answer each arm of the OR (a BitmapOr) once the tables are large.
_MATCH = "({col} LIKE :infix OR {col} LIKE :stem_prefix OR {col} % :q OR :q <% {col})"
_NEAR = "ST_SetSRID(ST_MakePoint(CAST(:nx AS float8), CAST(:ny AS float8)), 4490)"

_ROAD_VARIANT = f"regexp_replace(r.name, '{_ROAD_TYPE}$', '') = :stem"
_ROADS_PART = f"""
SELECT 'road' AS kind, 'road:' || r.id AS ref, r.id, r.name, ST_X(x.p) AS x, ST_Y(x.p) AS y,
       {_SCORE.format(col="r.name", variant=_ROAD_VARIANT)} AS score,
       ST_Distance(r.geom::geography, n.g::geography) AS dist
FROM roads r, (SELECT {_NEAR} AS g) n,
     LATERAL (SELECT coalesce(ST_ClosestPoint(r.geom, n.g), ST_ClosestPoint(r.geom, ST_Centroid(r.geom))) AS p) x
WHERE {_MATCH.format(col="r.name")}
"""
_LANDMARKS_PART = f"""
SELECT 'landmark:' || l.kind AS kind, 'landmark:' || l.id AS ref, l.id, l.name, ST_X(l.geom) AS x,
       ST_Y(l.geom) AS y, {_SCORE.format(col="l.name", variant="false")} AS score,
       ST_Distance(l.geom::geography, n.g::geography) AS dist
FROM landmarks l, (SELECT {_NEAR} AS g) n
WHERE {_MATCH.format(col="l.name")}
"""
# 108 communities: no index needed (and regions has none on name).
_COMMUNITIES_PART = f"""
SELECT 'community' AS kind, 'community:' || c.code AS ref, 0 AS id, c.name, ST_X(x.p) AS x, ST_Y(x.p) AS y,
       {_SCORE.format(col="c.name", variant="false")} AS score,
       ST_Distance(c.geom::geography, n.g::geography) AS dist
FROM regions c, (SELECT {_NEAR} AS g) n, LATERAL (SELECT ST_PointOnSurface(c.geom) AS p) x
WHERE c.level = 'community' AND {_MATCH.format(col="c.name")}
"""
_ORDER = " ORDER BY score DESC, dist NULLS LAST, name LIMIT :limit"

_PLATES = f"""
SELECT DISTINCT ON (a.road_id) a.id, a.road_id, a.label, a.number, ST_X(a.geom) AS x, ST_Y(a.geom) AS y,
       ST_Distance(a.geom::geography, {_NEAR}::geography) AS dist
FROM addresses a WHERE a.road_id = ANY(CAST(:roads AS integer[]))
ORDER BY a.road_id, (a.number % 2 <> :n % 2), abs(a.number - :n), a.number
"""
_CROSSINGS = f"""
SELECT a.id AS a_id, b.id AS b_id, a.name AS a_name, b.name AS b_name, ST_X(x.p) AS x, ST_Y(x.p) AS y,
       ST_Distance(x.p::geography, {_NEAR}::geography) AS dist
FROM roads a JOIN roads b ON a.id <> b.id AND ST_DWithin(a.geom, b.geom, 0.0003)
CROSS JOIN LATERAL (SELECT ST_ClosestPoint(a.geom, b.geom) AS p) x
WHERE a.id = ANY(CAST(:a AS integer[])) AND b.id = ANY(CAST(:b AS integer[]))
"""
_COMPONENT_COLUMNS = """
SELECT 'component' AS kind, 'component:' || c.code AS ref, k.name || ' ' || c.code AS name,
       ST_X(c.geom) AS x, ST_Y(c.geom) AS y
FROM components c JOIN component_classes k ON k.code = c.class_code
"""
_COMPONENT_EXACT = _COMPONENT_COLUMNS + " WHERE c.code = :code"
# A code prefix as a range: the btree on code serves it whatever the collation (LIKE would not).
_COMPONENT_PREFIX = _COMPONENT_COLUMNS + " WHERE c.code BETWEEN :lo AND :hi ORDER BY c.code LIMIT :limit"
_GRID_EXACT = """
SELECT 'grid' AS kind, 'grid:' || g.code AS ref, '网格 ' || g.code AS name,
       ST_X(ST_PointOnSurface(g.geom)) AS x, ST_Y(ST_PointOnSurface(g.geom)) AS y
FROM unit_grids g WHERE g.code = :code
"""


@dataclass(frozen=True)
class _Hit:
    name: str
    kind: str
    ref: str
    x: float
    y: float
    score: float
    dist: float | None = None


def _name_params(q: str) -> dict[str, str]:
    like = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    stem = _stem(q) or q
    return {
        "q": q,
        "prefix": like + "%",
        "infix": f"%{like}%",
        "stem": stem,
        "stem_prefix": stem.replace("%", "\\%").replace("_", "\\_") + "%",
    }


def _near(near: tuple[float, float] | None) -> dict[str, float | None]:
    return {"nx": near[0] if near else None, "ny": near[1] if near else None}


async def _by_name(
    session: AsyncSession, q: str, near: tuple[float, float] | None, limit: int, parts: Sequence[str]
) -> list[_Hit]:
    sql = " UNION ALL ".join(f"({p})" for p in parts) + _ORDER
    rows = await session.execute(text(sql), {**_name_params(q), **_near(near), "limit": limit})
    return [_Hit(r.name, r.kind, r.ref, r.x, r.y, float(r.score), r.dist) for r in rows]


async def _roads(session: AsyncSession, q: str, near: tuple[float, float] | None) -> list[_Hit]:
    hits = await _by_name(session, q, near, 5, [_ROADS_PART])
    return [h for h in hits if h.score >= MIN_ROAD_SCORE]


async def _plates(
    session: AsyncSession, road_q: str, number: int, near: tuple[float, float] | None
) -> list[_Hit]:
    """The door plate ``number`` of each matching road, or the nearest number on that side."""
    roads = await _roads(session, road_q, near)
    if not roads:
        return []
    by_id = {int(r.ref.split(":")[1]): r for r in roads}
    rows = await session.execute(text(_PLATES), {"roads": list(by_id), "n": number, **_near(near)})
    hits = [
        _Hit(
            p.label,
            "address",
            f"address:{p.id}",
            p.x,
            p.y,
            by_id[p.road_id].score * (1.0 if p.number == number else 0.8),
            p.dist,
        )
        for p in rows
    ]
    # The road itself stays on offer, below its plates.
    return hits + [_Hit(r.name, r.kind, r.ref, r.x, r.y, r.score * 0.7, r.dist) for r in roads]


async def _crossings(
    session: AsyncSession, a_q: str, b_q: str, near: tuple[float, float] | None
) -> list[_Hit]:
    a, b = await _roads(session, a_q, near), await _roads(session, b_q, near)
    if not a or not b:
        return []
    score = {int(h.ref.split(":")[1]): h.score for h in (*a, *b)}
    rows = await session.execute(
        text(_CROSSINGS),
        {
            "a": [int(h.ref.split(":")[1]) for h in a],
            "b": [int(h.ref.split(":")[1]) for h in b],
            **_near(near),
        },
    )
    return [
        _Hit(
            f"{r.a_name}与{r.b_name}交叉口",
            "crossing",
            f"crossing:{r.a_id}-{r.b_id}",
            r.x,
            r.y,
            (score[r.a_id] + score[r.b_id]) / 2,
            r.dist,
        )
        for r in rows
    ]


async def _codes(session: AsyncSession, digits: str, limit: int) -> list[_Hit]:
    """Component (17 digits, or 16 in the legacy form), grid (15) or a code prefix being typed."""
    hits: list[_Hit] = []
    exact: list[tuple[str, str]] = []
    try:
        if len(digits) == 17:
            exact.append((_COMPONENT_EXACT, validate_component(digits)))
        elif len(digits) == 16:
            exact.append((_COMPONENT_EXACT, widen_legacy_component(digits)))
    except InvalidCode:
        pass
    if len(digits) == 15:
        exact.append((_GRID_EXACT, digits))
    for sql, code in exact:
        hits += [
            _Hit(r.name, r.kind, r.ref, r.x, r.y, 1.0)
            for r in await session.execute(text(sql), {"code": code})
        ]
    if MIN_CODE_PREFIX <= len(digits) < 17:
        lo, hi = digits.ljust(17, "0"), digits.ljust(17, "9")
        rows = await session.execute(text(_COMPONENT_PREFIX), {"lo": lo, "hi": hi, "limit": limit})
        hits += [_Hit(r.name, r.kind, r.ref, r.x, r.y, round(0.5 + 0.4 * len(digits) / 17, 3)) for r in rows]
    return hits


async def _locations(
    session: AsyncSession, hits: Sequence[_Hit], index: GridIndex | None
) -> list[Location | None]:
    """Each hit's place (grid, community…) by the locator's rules.

    A search returns a handful of places: one prepared statement each (or the in-memory
    index) is several times faster than ``locate_many``'s temporary tables, which pay off
    only for large batches.
    """
    if len(hits) > _BULK_FROM:
        return await locate_many(session, [h.x for h in hits], [h.y for h in hits], CRS.cgcs2000)
    found: list[Location | None] = []
    for h in hits:
        try:
            found.append(await locate(session, h.x, h.y, CRS.cgcs2000, index))
        except OutsideJurisdiction:
            found.append(None)
    return found


async def search(
    session: AsyncSession,
    q: str,
    near: tuple[float, float] | None = None,
    limit: int = 10,
    *,
    crs: CRS | str = CRS.cgcs2000,
    index: GridIndex | None = None,
) -> list[dict[str, Any]]:
    """Ranked places for a query: ``[{name, kind, location, grid, score, detail, ref}]``.

    ``near`` (lon, lat in ``crs``) orders candidates of equal score by distance and, for a
    road, puts the location at the road's point nearest to it. Locations are returned in
    ``crs``; ``ref`` identifies the candidate for ``resolve``.
    """
    full = _tidy(q)
    query = _LEADING.sub("", full)
    if not query:
        raise InvalidInput(
            "the query is empty", errors=[{"field": "q", "message": "empty after normalisation"}]
        )
    here = to_cgcs2000(near[0], near[1], crs) if near is not None else None
    if _DIGITS.match(query):
        hits = await _codes(session, query, limit) if len(query) >= MIN_CODE_PREFIX else []
    elif crossing := _CROSSING.match(query):
        hits = await _crossings(session, crossing["a"], crossing["b"], here)
    elif plate := _PLATE.match(query):
        hits = await _plates(session, plate["road"], int(plate["number"]), here)
        # "锦绣花园3" and the like: a name with a building number still finds the place.
        hits += await _by_name(session, plate["road"], here, limit, [_LANDMARKS_PART, _COMMUNITIES_PART])
    else:
        # 怀化市第三中学 is a name as typed; 怀化市迎丰中路 is not: try both, keep the better score.
        best: dict[str, _Hit] = {}
        for name in dict.fromkeys((query, full)):
            for h in await _by_name(
                session, name, here, limit, [_ROADS_PART, _LANDMARKS_PART, _COMMUNITIES_PART]
            ):
                if h.ref not in best or h.score > best[h.ref].score:
                    best[h.ref] = h
        hits = list(best.values())
    hits = sorted(hits, key=lambda h: (-round(h.score, 3), math.inf if h.dist is None else h.dist, h.name))
    hits = hits[:limit]
    places = await _locations(session, hits, index)
    out = []
    for h, where in zip(hits, places, strict=True):
        item: dict[str, Any] = {
            "name": h.name,
            "kind": h.kind,
            "location": _point(h.x, h.y, crs),
            "grid": where.grid if where else None,
            "score": round(min(max(h.score, 0.0), 1.0), 3),
            "detail": f"{where.area[1]} {where.street[1]} {where.community[1]}" if where else None,
            "ref": h.ref,
        }
        if here is not None and h.dist is not None:
            item["distance_m"] = round(h.dist, 1)
        out.append(item)
    return out


# --- a chosen candidate ---------------------------------------------------------------------

_REF = re.compile(r"^(?P<kind>road|address|landmark|community|component|grid|crossing):(?P<key>[0-9-]+)$")
_RESOLVE = {
    "road": "SELECT 'road' AS kind, r.name, ST_X(x.p) AS x, ST_Y(x.p) AS y FROM roads r, "
    "LATERAL (SELECT ST_ClosestPoint(r.geom, ST_Centroid(r.geom)) AS p) x WHERE r.id = :key",
    "address": "SELECT 'address' AS kind, label AS name, ST_X(geom) AS x, ST_Y(geom) AS y FROM addresses "
    "WHERE id = :key",
    "landmark": "SELECT 'landmark:' || kind AS kind, name, ST_X(geom) AS x, ST_Y(geom) AS y FROM landmarks "
    "WHERE id = :key",
    "community": "SELECT 'community' AS kind, name, ST_X(x.p) AS x, ST_Y(x.p) AS y FROM regions, "
    "LATERAL (SELECT ST_PointOnSurface(geom) AS p) x WHERE code = :key AND level = 'community'",
    "component": _COMPONENT_EXACT.replace(":code", ":key"),
    "grid": _GRID_EXACT.replace(":code", ":key"),
    "crossing": "SELECT 'crossing' AS kind, a.name || '与' || b.name || '交叉口' AS name, ST_X(x.p) AS x, "
    "ST_Y(x.p) AS y FROM roads a, roads b, LATERAL (SELECT ST_ClosestPoint(a.geom, b.geom) AS p) x "
    "WHERE a.id = :a AND b.id = :b",
}


async def resolve(
    session: AsyncSession, ref: str, *, crs: CRS | str = CRS.cgcs2000, index: GridIndex | None = None
) -> dict[str, Any]:
    """The place a candidate's ``ref`` names (e.g. "address:123"), as search returns it.

    Intake uses it to take the location of the candidate the operator chose from the
    database rather than from the client.
    """
    match = _REF.match(ref)
    if match is None or ("-" in match["key"]) != (match["kind"] == "crossing"):
        raise InvalidInput(
            f"not a place reference: {ref!r}", errors=[{"field": "ref", "message": "malformed"}]
        )
    kind, key = match["kind"], match["key"]
    if kind == "crossing":
        a, _, b = key.partition("-")
        params: dict[str, Any] = {"a": int(a), "b": int(b or 0)}
    else:
        params = {"key": int(key) if kind in ("road", "address", "landmark") else key}
    row = (await session.execute(text(_RESOLVE[kind]), params)).first()
    if row is None:
        raise NotFound(f"no place {ref}")
    hit = _Hit(row.name, row.kind, ref, row.x, row.y, 1.0)
    (where,) = await _locations(session, [hit], index)
    return {
        "name": hit.name,
        "kind": hit.kind,
        "location": _point(hit.x, hit.y, crs),
        "grid": where.grid if where else None,
        "detail": f"{where.area[1]} {where.street[1]} {where.community[1]}" if where else None,
        "ref": ref,
    }
