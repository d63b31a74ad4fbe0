"""Grid files (网格数据交换): unit grids in and out as GeoPackage, Shapefile or GeoJSON.

Export (``export_grids``) writes one polygon a grid with the columns ``code``, ``community``,
``area`` (management area), ``area_m2`` and ``collector`` (username of the beat, 责任网格), in
CGCS2000 (EPSG:4490):

- GeoPackage: one layer ``unit_grids``.
- Shapefile: a ``.zip`` holding ``unit_grids.shp/.shx/.dbf/.prj/.cpg`` (UTF-8) — one file to
  download and to upload again. A path ending in ``.shp`` (or a folder) gets the plain files.
- GeoJSON: RFC 7946 (lon/lat, right-hand rings, no ``crs`` member; WGS 84 and CGCS2000 are taken
  as equal), with 9 decimals (0.1 mm) instead of the RFC's suggested 7, so that shared edges
  survive a round trip without slivers.

Import runs in four steps, and nothing changes before the last:

1. ``read_grids``: any CRS the file declares (``.prj``, GeoPackage metadata) is reprojected to
   EPSG:4490; a file without one is refused unless its coordinates look like lon/lat.
2. ``plan_import``: which communities are replaced, what is added, removed and changed, and
   every problem of every row (bad geometry, malformed code, unknown community, a code of
   another community, duplicate, crossing the community outline, overlap, coverage lost).
   Legacy 14-digit codes (CJ/T 213-2005) are widened to 15 digits, each one said in the notes.
3. ``dry_run``: the grid validation report (grids.validation) of the *result*, computed on a
   temporary copy inside a savepoint that is rolled back.
4. ``apply``: in the caller's transaction, the replaced communities' grids are exactly the
   file's. Grids whose code is kept keep their beat (and, if their outline moved by less than
   1 cm, their stored geometry); removed grids lose theirs (``beats`` cascades). Reports, cases
   and track points naming a removed code keep it: they are history, the code was right when
   recorded. The geo_revision trigger tells the in-process grid index to reload on commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import tempfile
import zipfile
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyogrio
import shapely
from pyproj import CRS
from shapely.geometry import MultiPolygon, Polygon
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from geo.errors import InvalidInput, NotFound
from grids.codes import InvalidCode, parse_grid, validate_region
from grids.validation import Tolerances, validate


@dataclass(frozen=True)
class FileFormat:
    name: str
    driver: str
    suffix: str  # of the file the API hands out
    media_type: str


FORMATS: dict[str, FileFormat] = {
    "gpkg": FileFormat("gpkg", "GPKG", ".gpkg", "application/geopackage+sqlite3"),
    "shp": FileFormat("shp", "ESRI Shapefile", ".zip", "application/zip"),
    "geojson": FileFormat("geojson", "GeoJSON", ".geojson", "application/geo+json"),
}
_SUFFIXES = {".gpkg": "gpkg", ".shp": "shp", ".zip": "shp", ".geojson": "geojson", ".json": "geojson"}

LAYER = "unit_grids"
GEOJSON_DECIMALS = 9
# A grid whose outline moved by less than this (Hausdorff, metres) is unchanged: a round trip
# through a projected CRS moves vertices by nanometres, not by a surveyed edit.
SAME_GEOMETRY_M = 0.01
IMPORT_LOCK = "citygrid.grids.import"  # serialises imports: checks and writes see one state

# Column names a file may use for the grid code and its community (case-insensitive).
CODE_COLUMNS = ("code", "grid_code", "gridcode", "wgbm", "网格编码", "bgcode")
COMMUNITY_COLUMNS = ("community", "community_code", "sqbm", "社区编码")

IMPORT_KINDS = (
    "malformed_code",
    "duplicate_code",
    "unknown_community",
    "other_community",
    "invalid_geometry",
    "crosses_community",
    "overlap",
    "gap",
    "empty",
)


def format_of(path: str | Path, fmt: str | None = None) -> FileFormat:
    """The format named, or the one the file name says (.gpkg, .shp/.zip, .geojson/.json)."""
    name = fmt or _SUFFIXES.get(Path(path).suffix.lower())
    if name is None and Path(path).is_dir():
        name = "shp"
    if name not in FORMATS:
        raise InvalidInput(f"unknown grid file format {fmt or Path(path).suffix!r}: use gpkg, shp or geojson")
    return FORMATS[name]


# --- export --------------------------------------------------------------------------------

_EXPORT = """
SELECT g.code, g.community_code, g.area_code, g.area_m2, u.username, ST_AsBinary(g.geom) AS wkb
FROM unit_grids g
LEFT JOIN beats b ON b.grid_code = g.code
LEFT JOIN users u ON u.id = b.collector_id
WHERE (CAST(:community AS text) IS NULL OR g.community_code = :community)
  AND (CAST(:area AS text) IS NULL OR g.area_code = :area)
ORDER BY g.code
"""


async def grids_frame(
    session: AsyncSession, community: str | None = None, area: str | None = None
) -> gpd.GeoDataFrame:
    """The stored grids (optionally of one community or management area) as a GeoDataFrame."""
    rows = (await session.execute(text(_EXPORT), {"community": community, "area": area})).all()
    if not rows:
        what = f"community {community}" if community else f"area {area}" if area else "the city"
        raise NotFound(f"no unit grids in {what}")
    return gpd.GeoDataFrame(
        {
            "code": [r.code.strip() for r in rows],
            "community": [r.community_code for r in rows],
            "area": [r.area_code for r in rows],
            "area_m2": [round(r.area_m2, 3) for r in rows],
            "collector": [r.username for r in rows],
        },
        geometry=shapely.from_wkb([r.wkb for r in rows]),
        crs="EPSG:4490",
    )


def write_grids(frame: gpd.GeoDataFrame, path: str | Path, fmt: str | None = None) -> Path:
    """Write grids to ``path`` (blocking: run it in a thread from async code); returns the file."""
    path = Path(path)
    ff = format_of(path, fmt)
    if ff.name == "gpkg":
        frame.to_file(path, driver=ff.driver, layer=LAYER, engine="pyogrio")
    elif ff.name == "geojson":
        frame.to_file(
            path,
            driver=ff.driver,
            engine="pyogrio",
            RFC7946="YES",
            COORDINATE_PRECISION=GEOJSON_DECIMALS,
        )
    elif path.suffix.lower() == ".zip":
        with tempfile.TemporaryDirectory(prefix="citygrid-shp-") as tmp:
            frame.to_file(Path(tmp) / f"{LAYER}.shp", driver=ff.driver, engine="pyogrio", encoding="UTF-8")
            with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
                for part in sorted(Path(tmp).iterdir()):
                    zf.write(part, part.name)
    else:
        shp = path / f"{LAYER}.shp" if path.suffix.lower() != ".shp" else path
        shp.parent.mkdir(parents=True, exist_ok=True)
        frame.to_file(shp, driver=ff.driver, engine="pyogrio", encoding="UTF-8")
        path = shp
    return path


async def export_grids(
    session: AsyncSession,
    path: str | Path,
    fmt: str | None = None,
    community: str | None = None,
    area: str | None = None,
) -> tuple[Path, int]:
    """Export the grids (all, one community's or one management area's); returns (file, count)."""
    frame = await grids_frame(session, community, area)
    written = await asyncio.to_thread(write_grids, frame, path, fmt)
    return written, len(frame)


# --- reading -------------------------------------------------------------------------------


def _source(path: Path) -> Path:
    """The dataset to open: a folder means the one Shapefile or GeoPackage inside it."""
    if not path.exists():
        raise InvalidInput(f"{path} does not exist")
    if path.is_dir():
        found = sorted(path.glob("*.shp")) + sorted(path.glob("*.gpkg"))
        if len(found) != 1:
            raise InvalidInput(f"{path} holds {len(found)} Shapefiles/GeoPackages; name the one to import")
        return found[0]
    return path


def _said(exc: Exception, source: Path) -> str:
    """GDAL's message without the server's folder names."""
    return str(exc).replace(str(source.parent) + "/", "").split("; It might help")[0]


def _layer(source: Path) -> str | None:
    try:
        layers = pyogrio.list_layers(source)
    except Exception as exc:  # pyogrio raises several kinds for unreadable files
        raise InvalidInput(
            f"{source.name} is no readable GeoPackage, Shapefile or GeoJSON: {_said(exc, source)}"
        ) from exc
    names = [str(name) for name, _ in layers]
    if len(names) <= 1:
        return names[0] if names else None
    if LAYER in names:
        return LAYER
    polygonal = [str(n) for n, kind in layers if kind and "polygon" in str(kind).lower()]
    if len(polygonal) == 1:
        return polygonal[0]
    raise InvalidInput(f"{source.name} has the layers {', '.join(names)}: name one {LAYER!r}")


def _column(frame: gpd.GeoDataFrame, names: Sequence[str]) -> str | None:
    by_lower = {str(c).lower(): str(c) for c in frame.columns}
    return next((by_lower[n] for n in names if n in by_lower), None)


def _code_text(value: Any) -> str | None:
    """A code cell as text: numbers (spreadsheets, GeoJSON) lose no digits, blanks are None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    s = str(value).strip()
    if s.endswith(".0") and s[:-2].isdigit():
        s = s[:-2]
    return s or None


def _looks_lonlat(bounds: Sequence[float]) -> bool:
    minx, miny, maxx, maxy = bounds
    return all(math.isfinite(v) for v in bounds) and -180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90


def read_grids(path: str | Path) -> gpd.GeoDataFrame:
    """The grids of a file as a GeoDataFrame in EPSG:4490 (blocking; run it in a thread).

    Columns: ``row`` (1-based, file order), ``code`` (text as found), ``community`` (when the file
    has one) and the 2-D geometry. ``attrs["notes"]`` says what was assumed or converted (CRS);
    ``attrs["source"]`` is the file name. Refuses (InvalidInput) an unreadable file, one without
    a code column, or one without a CRS whose coordinates are not lon/lat.
    """
    source = _source(Path(path))
    layer = _layer(source)
    try:
        frame = gpd.read_file(source, layer=layer, engine="pyogrio")
    except Exception as exc:
        raise InvalidInput(f"{source.name} cannot be read: {_said(exc, source)}") from exc
    if not isinstance(frame, gpd.GeoDataFrame) or frame.geometry is None:
        raise InvalidInput(f"{source.name} has no geometry")
    code_col = _column(frame, CODE_COLUMNS)
    if code_col is None:
        raise InvalidInput(
            f"{source.name} has no grid code column (one of {', '.join(CODE_COLUMNS)}); "
            f"its columns are {', '.join(map(str, frame.columns))}"
        )
    notes: list[str] = []
    bounds = frame.total_bounds if len(frame) else np.array([0.0, 0.0, 0.0, 0.0])
    if frame.crs is None:
        if not _looks_lonlat(bounds):
            raise InvalidInput(
                f"{source.name} declares no coordinate system (a Shapefile needs its .prj) and its "
                f"coordinates ({bounds[0]:.0f}, {bounds[1]:.0f} …) are not lon/lat: add the CRS"
            )
        frame = frame.set_crs(4490)
        notes.append(
            "the file declares no CRS; its coordinates look like lon/lat: taken as CGCS2000 (EPSG:4490)"
        )
    else:
        crs = CRS.from_user_input(frame.crs)
        epsg = crs.to_epsg()
        if epsg == 4326:
            # WGS 84 and CGCS2000 differ by centimetres here: the same numbers (domain rule).
            frame = frame.set_crs(4490, allow_override=True)
            notes.append("WGS 84 (EPSG:4326) coordinates taken as CGCS2000 (EPSG:4490)")
        elif epsg != 4490:
            if crs.is_geographic and not _looks_lonlat(bounds):
                raise InvalidInput(f"{source.name} says {crs.name} but its coordinates are not lon/lat")
            frame = frame.to_crs(4490)
            notes.append(
                f"reprojected from {crs.name} ({f'EPSG:{epsg}' if epsg else 'custom CRS'}) to EPSG:4490"
            )
    community_col = _column(frame, COMMUNITY_COLUMNS)
    out = gpd.GeoDataFrame(
        {
            "row": np.arange(1, len(frame) + 1),
            "code": [_code_text(v) for v in frame[code_col]],
            **({"community": [_code_text(v) for v in frame[community_col]]} if community_col else {}),
        },
        geometry=shapely.force_2d(frame.geometry.values),
        crs="EPSG:4490",
    )
    out.attrs["notes"] = notes
    out.attrs["source"] = source.name
    return out


# --- planning ------------------------------------------------------------------------------


@dataclass
class RowProblem:
    """Why (part of) a file cannot be imported; ``rows`` are 1-based feature numbers."""

    kind: str
    detail: str
    rows: list[int] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    area_m2: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "detail": self.detail,
            "rows": self.rows,
            "codes": self.codes,
            "area_m2": None if self.area_m2 is None else round(self.area_m2, 2),
        }

    def as_error(self) -> dict[str, str]:
        where = f"row {', '.join(map(str, self.rows))}" if self.rows else "file"
        return {"field": where, "message": f"{self.kind}: {self.detail}"}


@dataclass(frozen=True)
class Candidate:
    """A file row that can be loaded: a (widened) code of an existing community, one valid polygon."""

    row: int
    code: str
    community: str
    area_code: str
    geom: Polygon


@dataclass
class ImportPlan:
    source: str
    rows: int
    communities: list[str]  # replaced
    areas: list[str]  # management areas of the replaced communities
    candidates: list[Candidate]
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    history: dict[str, int] = field(default_factory=dict)  # rows still naming removed codes

    @property
    def valid(self) -> bool:
        return not self.problems

    def as_dict(self, max_codes: int = 200) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows": self.rows,
            "valid": self.valid,
            "communities": self.communities,
            "areas": self.areas,
            "added": len(self.added),
            "removed": len(self.removed),
            "changed": len(self.changed),
            "unchanged": len(self.unchanged),
            "codes": {
                "added": self.added[:max_codes],
                "removed": self.removed[:max_codes],
                "changed": self.changed[:max_codes],
            },
            "history": self.history,
            "notes": self.notes,
            "summary": {k: sum(1 for p in self.problems if p.kind == k) for k in IMPORT_KINDS},
            "problems": [p.as_dict() for p in self.problems],
        }


class ImportRefused(InvalidInput):
    """The file has problems: nothing was changed. ``errors`` lists every reason."""

    code = "grid_import_refused"
    title = "The grid file is refused"


@contextlib.asynccontextmanager
async def _scratch(session: AsyncSession) -> AsyncIterator[None]:
    """A savepoint that is always rolled back: temp tables and checks leave nothing behind."""
    savepoint = await session.begin_nested()
    try:
        yield
    finally:
        if savepoint.is_active:
            await savepoint.rollback()


def _polygon(geom: Any) -> tuple[Polygon | None, str | None]:
    """The grid's polygon, or why there is none."""
    if geom is None or geom.is_empty:
        return None, "no geometry"
    if isinstance(geom, MultiPolygon):
        if len(geom.geoms) != 1:
            return None, f"{len(geom.geoms)} separate parts: a grid is one polygon"
        geom = geom.geoms[0]
    if not isinstance(geom, Polygon):
        return None, f"a {geom.geom_type}, not a polygon"
    if not geom.is_valid:
        return None, shapely.is_valid_reason(geom)
    return geom, None


async def _communities(session: AsyncSession, codes: Sequence[str]) -> dict[str, str | None]:
    """Existing community code → its management area."""
    rows = await session.execute(
        text("SELECT code, area_code FROM regions WHERE level = 'community' AND code = ANY(:c)"),
        {"c": list(codes)},
    )
    return {r.code: r.area_code for r in rows}


def _read_rows(
    frame: gpd.GeoDataFrame, community: str | None, known: dict[str, str | None], problems: list[RowProblem]
) -> tuple[list[Candidate], list[str]]:
    """Parse codes and geometries row by row: the loadable candidates and the widening notes."""
    notes: list[str] = []
    candidates: list[Candidate] = []
    has_community_col = "community" in frame.columns
    rows = frame["row"].tolist() if "row" in frame.columns else list(range(1, len(frame) + 1))
    stated = frame["community"].tolist() if has_community_col else [None] * len(frame)
    seen: dict[str, list[int]] = defaultdict(list)
    for row, raw, said, geom in zip(rows, frame["code"].tolist(), stated, frame.geometry.values, strict=True):
        row = int(row)
        raw = _code_text(raw)
        try:
            if raw is None:
                raise InvalidCode("", "the code is empty")
            parsed = parse_grid(raw)
        except InvalidCode as exc:
            problems.append(RowProblem("malformed_code", f"{raw!r}: {exc.reason}", [row], [raw or ""]))
            continue
        code = parsed.code
        if parsed.legacy:
            notes.append(f"row {row}: legacy 14-digit code {raw} widened to {code}")
        seen[code].append(row)
        if said and said != parsed.community:
            problems.append(
                RowProblem(
                    "other_community",
                    f"{code} belongs to community {parsed.community}, the row says {said}",
                    [row],
                    [code],
                )
            )
            continue
        if community and parsed.community != community:
            problems.append(
                RowProblem(
                    "other_community",
                    f"{code} is a grid of community {parsed.community}, not of {community} being imported",
                    [row],
                    [code],
                )
            )
            continue
        if not known.get(parsed.community):
            what = "does not exist" if parsed.community not in known else "belongs to no management area"
            problems.append(
                RowProblem("unknown_community", f"{code}: community {parsed.community} {what}", [row], [code])
            )
            continue
        polygon, why = _polygon(geom)
        if polygon is None:
            problems.append(RowProblem("invalid_geometry", f"{code}: {why}", [row], [code]))
            continue
        candidates.append(Candidate(row, code, parsed.community, str(known[parsed.community]), polygon))
    for code, where in seen.items():
        if len(where) > 1:
            problems.append(
                RowProblem("duplicate_code", f"{code} is used by {len(where)} rows", sorted(where), [code])
            )
    return candidates, notes


def _arrays(candidates: Sequence[Candidate]) -> dict[str, list[Any]]:
    return {
        "rows": [c.row for c in candidates],
        "codes": [c.code for c in candidates],
        "comms": [c.community for c in candidates],
        "areas": [c.area_code for c in candidates],
        "wkbs": [shapely.to_wkb(c.geom) for c in candidates],
    }


_UNNEST = """
SELECT r AS row, c AS code, m AS community_code, a AS area_code, ST_SetSRID(ST_GeomFromWKB(w), 4490) AS geom
FROM unnest(CAST(:rows AS int[]), CAST(:codes AS text[]), CAST(:comms AS text[]),
            CAST(:areas AS text[]), CAST(:wkbs AS bytea[])) AS t(r, c, m, a, w)
"""

_M2 = "ST_Area(ST_Transform({g}, 4546))"

_CHECK_CROSSING = f"""
SELECT c.row, c.code, c.community_code, d.m2,
       (SELECT o.code FROM regions o WHERE o.level = 'community' AND o.geom && c.geom
        ORDER BY ST_Area(ST_Intersection(o.geom, c.geom)) DESC LIMIT 1) AS mostly_in
FROM import_candidates c JOIN regions r ON r.code = c.community_code
CROSS JOIN LATERAL (SELECT {_M2.format(g="ST_Difference(c.geom, r.geom)")} AS m2) d
WHERE NOT ST_CoveredBy(c.geom, r.geom) AND d.m2 > :tol
ORDER BY c.row
"""
_CHECK_OVERLAP_FILE = f"""
SELECT a.row AS ra, b.row AS rb, a.code AS ca, b.code AS cb, {_M2.format(g="ST_Intersection(a.geom, b.geom)")} AS m2
FROM import_candidates a JOIN import_candidates b
  ON a.row < b.row AND a.geom && b.geom AND ST_Relate(a.geom, b.geom, '2********')
"""
_CHECK_OVERLAP_KEPT = f"""
SELECT c.row, c.code, u.code AS other, {_M2.format(g="ST_Intersection(c.geom, u.geom)")} AS m2
FROM import_candidates c JOIN unit_grids u
  ON u.geom && c.geom AND u.community_code <> ALL(:communities) AND ST_Relate(c.geom, u.geom, '2********')
WHERE ST_IsValid(u.geom)
"""
# Coverage lost: what a community's current grids cover and the file's grids do not.
_CHECK_GAP = f"""
WITH now AS (
    SELECT community_code, ST_Union(geom) AS g FROM unit_grids
    WHERE community_code = ANY(:communities) AND ST_IsValid(geom) GROUP BY community_code
), new AS (
    SELECT community_code, ST_Union(geom) AS g FROM import_candidates GROUP BY community_code
)
SELECT now.community_code, {_M2.format(g="ST_Difference(now.g, new.g)")} AS m2
FROM now LEFT JOIN new USING (community_code)
"""
_DIFF = """
SELECT coalesce(c.code, u.code) AS code, c.code IS NOT NULL AS in_file, u.code IS NOT NULL AS stored,
       CASE WHEN c.code IS NOT NULL AND u.code IS NOT NULL
            THEN ST_HausdorffDistance(ST_Transform(c.geom, 4546), ST_Transform(u.geom, 4546)) END AS moved_m
FROM (SELECT DISTINCT ON (code) * FROM import_candidates ORDER BY code, row) c
FULL JOIN (SELECT * FROM unit_grids WHERE community_code = ANY(:communities)) u ON u.code = c.code
ORDER BY 1
"""
_HISTORY = """
SELECT (SELECT count(*) FROM reports WHERE grid_code = ANY(:codes)) AS reports,
       (SELECT count(*) FROM cases WHERE grid_code = ANY(:codes)) AS cases,
       (SELECT count(*) FROM track_points WHERE grid_code = ANY(:codes)) AS track_points
"""


@dataclass
class _Checked:
    problems: list[RowProblem]
    added: list[str]
    removed: list[str]
    changed: list[str]
    unchanged: list[str]
    history: dict[str, int]


async def _check(
    session: AsyncSession, candidates: Sequence[Candidate], communities: Sequence[str], tol: Tolerances
) -> _Checked:
    """The checks that need the database, on a temp copy of the candidates (rolled back)."""
    problems: list[RowProblem] = []
    params = {"communities": list(communities), "tol": tol.crossing_m2}
    async with _scratch(session):
        await session.execute(
            text(f"CREATE TEMP TABLE import_candidates ON COMMIT DROP AS {_UNNEST}"), _arrays(candidates)
        )
        await session.execute(text("CREATE INDEX ON import_candidates USING gist (geom)"))
        await session.execute(text("ANALYZE import_candidates"))
        try:
            for r in await session.execute(text(_CHECK_CROSSING), params):
                where = (
                    f"; it lies mostly in community {r.mostly_in}"
                    if r.mostly_in and r.mostly_in != r.community_code
                    else ""
                )
                problems.append(
                    RowProblem(
                        "crosses_community",
                        f"{r.code}: {r.m2:,.1f} m² lie outside community {r.community_code}{where}",
                        [r.row],
                        [r.code],
                        r.m2,
                    )
                )
            for r in await session.execute(text(_CHECK_OVERLAP_FILE)):
                if r.m2 > tol.overlap_m2:
                    problems.append(
                        RowProblem(
                            "overlap",
                            f"{r.ca} and {r.cb} overlap by {r.m2:,.1f} m²",
                            [r.ra, r.rb],
                            [r.ca, r.cb],
                            r.m2,
                        )
                    )
            for r in await session.execute(text(_CHECK_OVERLAP_KEPT), params):
                if r.m2 > tol.overlap_m2:
                    problems.append(
                        RowProblem(
                            "overlap",
                            f"{r.code} overlaps the stored grid {r.other.strip()} of another community "
                            f"by {r.m2:,.1f} m²",
                            [r.row],
                            [r.code, r.other.strip()],
                            r.m2,
                        )
                    )
            for r in await session.execute(text(_CHECK_GAP), params):
                if r.m2 is None:
                    problems.append(
                        RowProblem("empty", f"the file has no loadable grid of community {r.community_code}")
                    )
                elif r.m2 > tol.gap_m2:
                    problems.append(
                        RowProblem(
                            "gap",
                            f"{r.m2:,.1f} m² of community {r.community_code} that its grids cover now "
                            f"lie in no grid of the file",
                            area_m2=r.m2,
                        )
                    )
            added, removed, changed, unchanged = [], [], [], []
            for r in await session.execute(text(_DIFF), params):
                code = r.code.strip()
                if not r.stored:
                    added.append(code)
                elif not r.in_file:
                    removed.append(code)
                elif r.moved_m > SAME_GEOMETRY_M:
                    changed.append(code)
                else:
                    unchanged.append(code)
            history = dict((await session.execute(text(_HISTORY), {"codes": removed})).one()._mapping)
        except DBAPIError as exc:
            raise InvalidInput(f"the database could not check the grids: {exc.orig}") from exc
    return _Checked(problems, added, removed, changed, unchanged, {k: int(v) for k, v in history.items()})


async def plan_import(
    session: AsyncSession,
    frame: gpd.GeoDataFrame,
    community: str | None = None,
    tol: Tolerances | None = None,
) -> ImportPlan:
    """What importing ``frame`` (from ``read_grids``) would do, and every problem of it; changes nothing.

    ``community``: replace only this community (rows of others are problems). Without it, every
    community with a grid in the file is replaced by the file's grids of it.
    """
    tol = tol or Tolerances()
    if community is not None:
        try:
            validate_region(community)
        except InvalidCode as exc:
            raise InvalidInput(f"community {community!r}: {exc.reason}") from exc
        if len(community) != 12:
            raise InvalidInput(f"{community} is no community code (12 digits)")
    problems: list[RowProblem] = []
    prefixes = {c[:12] for c in (_code_text(v) for v in frame["code"].tolist()) if c and c.isdigit()}
    known = await _communities(session, sorted(prefixes | ({community} if community else set())))
    if community is not None and community not in known:
        raise NotFound(f"community {community} does not exist")
    candidates, widened = _read_rows(frame, community, known, problems)
    communities = [community] if community else sorted({c.community for c in candidates})
    plan = ImportPlan(
        source=str(frame.attrs.get("source", "")),
        rows=len(frame),
        communities=communities,
        areas=sorted({known[c] or "" for c in communities} - {""}),
        candidates=candidates,
        notes=[*frame.attrs.get("notes", []), *widened],
    )
    if not communities:
        problems.append(RowProblem("empty", "the file has no loadable grid"))
    else:
        checked = await _check(session, candidates, communities, tol)
        problems.extend(checked.problems)
        plan.added, plan.removed = checked.added, checked.removed
        plan.changed, plan.unchanged = checked.changed, checked.unchanged
        plan.history = checked.history
        if checked.removed and any(checked.history.values()):
            plan.notes.append(
                "reports, cases and track points naming a removed grid keep its code as history: "
                + ", ".join(f"{n} {k}" for k, n in checked.history.items() if n)
            )
    plan.problems = sorted(problems, key=lambda p: (p.rows[0] if p.rows else 0, p.kind))
    return plan


# --- dry run -------------------------------------------------------------------------------

# The dry run fills a TEMP table ``unit_grids`` with the import's result (the other
# communities' stored grids plus the file's) and validates it with validate()'s own SQL.
_RESULT_TABLE = """
CREATE TEMP TABLE unit_grids (
    code char(15), community_code text, area_code text, area_m2 double precision,
    generated boolean, updated_at timestamptz, geom geometry(Polygon, 4490)
) ON COMMIT DROP
"""
_RESULT_KEPT = """
INSERT INTO pg_temp.unit_grids
SELECT code, community_code, area_code, area_m2, generated, updated_at, geom FROM public.unit_grids
WHERE community_code <> ALL(:communities) AND (:whole OR area_code = ANY(:areas))
"""
_RESULT_FILE = f"""
INSERT INTO pg_temp.unit_grids
SELECT code, community_code, area_code, {_M2.format(g="geom")}, false, now(), geom FROM ({_UNNEST}) f
"""


async def _validate_result(session: AsyncSession, tol: Tolerances) -> dict[str, Any]:
    return await validate(session, tol, table="pg_temp.unit_grids")


async def dry_run(
    session: AsyncSession, plan: ImportPlan, tol: Tolerances | None = None, whole_city: bool = False
) -> dict[str, Any]:
    """The grid validation report of the result of ``plan``, computed without changing anything.

    The result = the stored grids of every other community + the file's loadable grids of the
    replaced ones. Only the management areas the import touches are checked unless
    ``whole_city``: the others do not change, and the checks (overlaps, gaps) stay inside an
    area. The report says its scope (``areas``).
    """
    tol = tol or Tolerances()
    async with _scratch(session):
        await session.execute(text(_RESULT_TABLE))
        await session.execute(
            text(_RESULT_KEPT),
            {"communities": plan.communities, "areas": plan.areas, "whole": whole_city},
        )
        await session.execute(text(_RESULT_FILE), _arrays(plan.candidates))
        await session.execute(text("CREATE INDEX ON pg_temp.unit_grids USING gist (geom)"))
        await session.execute(text("ANALYZE pg_temp.unit_grids"))
        report = await _validate_result(session, tol)
    report["areas"] = None if whole_city else plan.areas
    return report


# --- apply ---------------------------------------------------------------------------------

_DELETE = "DELETE FROM unit_grids WHERE code = ANY(:codes) AND community_code = ANY(:communities)"
_UPSERT = f"""
INSERT INTO unit_grids (code, community_code, area_code, area_m2, generated, geom)
SELECT code, community_code, area_code, {_M2.format(g="geom")}, false, geom FROM ({_UNNEST}) f
ON CONFLICT (code) DO UPDATE SET geom = EXCLUDED.geom, area_m2 = EXCLUDED.area_m2,
    area_code = EXCLUDED.area_code, generated = false, updated_at = now()
"""


async def apply(session: AsyncSession, plan: ImportPlan, tol: Tolerances | None = None) -> dict[str, Any]:
    """Replace the plan's communities' grids by the file's, in the caller's transaction (it commits).

    Refused (``ImportRefused``, every reason) when the plan has problems, or when the checks,
    repeated under the import lock, find new ones (another import since the plan). Removed grids
    take their beats with them; kept codes keep theirs; unchanged grids are not rewritten.
    """
    if not plan.valid:
        raise refusal(plan)
    tol = tol or Tolerances()
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": IMPORT_LOCK})
    checked = await _check(session, plan.candidates, plan.communities, tol)
    if checked.problems:
        plan.problems = checked.problems
        raise refusal(plan)
    # The diff was taken under the lock: what it calls removed is exactly what is no longer in the file.
    if checked.removed:
        await session.execute(text(_DELETE), {"communities": plan.communities, "codes": checked.removed})
    write = set(checked.added) | set(checked.changed)
    rows = [c for c in plan.candidates if c.code in write]
    if rows:
        await session.execute(text(_UPSERT), _arrays(rows))
    plan.added, plan.removed = checked.added, checked.removed
    plan.changed, plan.unchanged = checked.changed, checked.unchanged
    return {
        "communities": plan.communities,
        "added": len(checked.added),
        "removed": len(checked.removed),
        "changed": len(checked.changed),
        "unchanged": len(checked.unchanged),
    }


def refusal(plan: ImportPlan, report: dict[str, Any] | None = None) -> ImportRefused:
    """The 422 of a refused file: every reason in ``errors``, the plan (and report) alongside."""
    n = len(plan.problems)
    return ImportRefused(
        f"{plan.source or 'the file'}: {n} problem{'s' * (n != 1)}, nothing was changed",
        errors=[p.as_error() for p in plan.problems],
        plan=plan.as_dict(),
        **({"report": report} if report is not None else {}),
    )


# --- one call for the CLI and the API ------------------------------------------------------


@dataclass
class ImportOutcome:
    plan: ImportPlan
    report: dict[str, Any]
    applied: bool

    def as_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "plan": self.plan.as_dict(), "report": self.report}


async def import_grids(
    session: AsyncSession,
    path: str | Path,
    *,
    community: str | None = None,
    apply_changes: bool = False,
    tol: Tolerances | None = None,
) -> ImportOutcome:
    """Read, plan, dry-run and (if ``apply_changes``) apply a grid file; the caller commits.

    Raises ``ImportRefused`` (with the plan and the report) when the file has problems.
    """
    frame = await asyncio.to_thread(read_grids, path)
    plan = await plan_import(session, frame, community, tol)
    report = await dry_run(session, plan, tol)
    if not plan.valid:
        raise refusal(plan, report)
    if apply_changes:
        await apply(session, plan, tol)
    return ImportOutcome(plan, report, apply_changes)


def describe(plan: ImportPlan, report: dict[str, Any] | None, applied: bool) -> list[str]:
    """The plan and its report as lines of text for the console."""
    lines = [
        f"{plan.source}: {plan.rows} rows; communities replaced: {', '.join(plan.communities) or 'none'}",
        f"  grids added {len(plan.added)}, removed {len(plan.removed)}, changed {len(plan.changed)}, "
        f"unchanged {len(plan.unchanged)}",
    ]
    lines += [f"  note: {n}" for n in plan.notes]
    lines += [
        f"  PROBLEM {p.kind}: {p.detail}" + (f" (row {', '.join(map(str, p.rows))})" if p.rows else "")
        for p in plan.problems
    ]
    if report is not None:
        scope = ", ".join(report.get("areas") or []) or "the whole city"
        lines.append(
            f"validation of the result ({report['grids']} grids in {scope}): "
            + ("valid" if report["valid"] else "problems found")
        )
        lines += [f"  {kind:<20} {n}" for kind, n in report["summary"].items()]
        for p in report["problems"][:50]:
            lines.append(f"  - {p['kind']}: {', '.join(p['grids']) or p['area']}: {p['detail']}")
    if not plan.valid:
        lines.append("refused: nothing was changed")
    else:
        lines.append("applied" if applied else "dry run: nothing was changed")
    return lines


async def cli_import(
    session: AsyncSession,
    path: str | Path,
    *,
    dry_run: bool,
    community: str | None = None,
    echo: Callable[[str], Any] = print,
) -> int:
    """``citygrid grids import``: 0 applied (or a clean dry run), 2 refused; commits when applied."""
    try:
        outcome = await import_grids(session, path, community=community, apply_changes=not dry_run)
    except ImportRefused as exc:
        plan_dict = exc.extra["plan"]
        echo(f"{path}: refused, nothing was changed")
        for note in plan_dict["notes"]:
            echo(f"  note: {note}")
        for err in exc.errors:
            echo(f"  {err['field']}: {err['message']}")
        report = exc.extra.get("report")
        if report is not None:
            echo(f"validation of the result: {report['grids']} grids")
            for kind, n in report["summary"].items():
                echo(f"  {kind:<20} {n}")
        return 2
    except (InvalidInput, NotFound) as exc:
        echo(f"citygrid: {exc.detail}")
        return 2
    if outcome.applied:
        await session.commit()
    for line in describe(outcome.plan, outcome.report, outcome.applied):
        echo(line)
    return 0


async def cli_export(
    session: AsyncSession,
    path: str | Path,
    fmt: str | None = None,
    community: str | None = None,
    area: str | None = None,
    echo: Callable[[str], Any] = print,
) -> int:
    """``citygrid grids export``."""
    try:
        written, n = await export_grids(session, path, fmt, community, area)
    except (InvalidInput, NotFound) as exc:
        echo(f"citygrid: {exc.detail}")
        return 2
    echo(f"{n} grids written to {written} ({format_of(written, fmt).driver}, EPSG:4490)")
    return 0


def scratch_dir() -> Path:
    """A private temporary folder for uploads and downloads (the caller removes it)."""
    return Path(tempfile.mkdtemp(prefix="citygrid-grids-"))


def remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
