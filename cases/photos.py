"""Photos of reports, task results and handlings: checked, stored, recorded, swept."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from cases.photo_store import PhotoStore, StagedFile
from geo.crs import spherical_distance_m
from geo.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from geo.images import ImageInfo, ImageRejected, inspect_image

CITY_TZ = ZoneInfo("Asia/Shanghai")
FAR_M = 200.0
OLD = timedelta(hours=24)


@dataclass
class CheckedPhoto:
    staged: StagedFile
    info: ImageInfo

    @property
    def sha256(self) -> str:
        return self.staged.sha256

    def taken_at(self) -> datetime | None:
        t = self.info.geotag.taken_at
        if t is not None and t.tzinfo is None:
            t = t.replace(tzinfo=CITY_TZ)  # phones write local time without an offset
        return t


def _check(staged: StagedFile, name: str) -> CheckedPhoto:
    try:
        with staged.open() as data:
            checked = CheckedPhoto(staged, inspect_image(data))
        staged.sha256  # noqa: B018 - hashed here, off the event loop, for the callers
        return checked
    except ImageRejected as exc:
        error = [{"field": name, "message": exc.message}]
        if exc.code == "image_too_large":
            raise PayloadTooLarge(exc.message, errors=error) from exc
        raise UnsupportedMediaType(exc.message, errors=error) from exc


def check_count(staged: list[Any], minimum: int, maximum: int, field: str = "photos") -> None:
    """422 unless ``minimum`` to ``maximum`` files were sent."""
    if not minimum <= len(staged) <= maximum:
        raise InvalidInput(
            f"send {minimum} to {maximum} photos", errors=[{"field": field, "message": f"{len(staged)} sent"}]
        )


def _check_all(staged: list[tuple[str, StagedFile]], store: PhotoStore | None) -> list[CheckedPhoto]:
    checked = [_check(file, name) for name, file in staged]
    if store is not None:  # every file passed: none is stored for a refused request
        for photo in checked:
            store.commit(photo.staged)
    return checked


async def check_photos(
    staged: list[tuple[str, StagedFile]],
    minimum: int = 1,
    maximum: int = 9,
    field: str = "photos",
    *,
    store: PhotoStore | None = None,
) -> list[CheckedPhoto]:
    """Decode every upload (not its declared type); 415/413 on the first bad one.

    With ``store`` the checked files are also made durable there (fsynced), in the same trip
    off the event loop: for callers that have validated everything else first.
    """
    check_count(staged, minimum, maximum, field)
    if not staged:
        return []
    return await asyncio.to_thread(_check_all, staged, store)


def photo_flags(
    photos: list[CheckedPhoto], lon: float, lat: float, observed_at: datetime | None
) -> list[str]:
    """Checks the operator should see (never a refusal): EXIF far from the point, or old."""
    flags = []
    for photo in photos:
        tag = photo.info.geotag
        if (
            tag.lon is not None
            and tag.lat is not None
            and spherical_distance_m(tag.lon, tag.lat, lon, lat) > FAR_M
        ):
            flags.append("photo_far_from_location")
        taken = photo.taken_at()
        if taken is not None and observed_at is not None and observed_at - taken > OLD:
            flags.append("photo_old")
    return sorted(set(flags))


# The rows of photos given as arrays (``photo_params``), for an INSERT … SELECT.
PHOTO_ROWS = (
    "SELECT sha, ct, size, w, h, CAST(exif AS jsonb) AS exif, taken, "
    "CASE WHEN lon IS NULL THEN NULL ELSE ST_SetSRID(ST_MakePoint(lon, lat), 4490) END AS geom, n "
    "FROM unnest(CAST(:ph_sha AS text[]), CAST(:ph_ct AS text[]), CAST(:ph_size AS int[]), CAST(:ph_w AS int[]), "
    "CAST(:ph_h AS int[]), CAST(:ph_exif AS text[]), CAST(:ph_taken AS timestamptz[]), CAST(:ph_lon AS float8[]), "
    "CAST(:ph_lat AS float8[])) WITH ORDINALITY AS u(sha, ct, size, w, h, exif, taken, lon, lat, n)"
)
PHOTO_COLUMNS = "sha256, content_type, size_bytes, width, height, exif, taken_at, geom"


def photo_params(photos: list[CheckedPhoto]) -> dict[str, list[Any]]:
    tags = [p.info.geotag for p in photos]
    return {
        "ph_sha": [p.sha256 for p in photos],
        "ph_ct": [p.info.content_type for p in photos],
        "ph_size": [p.staged.size for p in photos],
        "ph_w": [p.info.width for p in photos],
        "ph_h": [p.info.height for p in photos],
        "ph_exif": [_json(t.as_dict()) for t in tags],
        "ph_taken": [p.taken_at() for p in photos],
        "ph_lon": [t.lon for t in tags],
        "ph_lat": [t.lat for t in tags],
    }


async def store_photos(
    session: AsyncSession,
    store: PhotoStore,
    photos: list[CheckedPhoto],
    *,
    purpose: str,
    report_id: int | None = None,
    task_id: int | None = None,
    case_id: int | None = None,
) -> list[int]:
    """Make the files durable and record them; the caller commits afterwards."""
    if not photos:
        return []
    await asyncio.to_thread(lambda: [store.commit(p.staged) for p in photos])
    rows = await session.scalars(
        text(
            f"INSERT INTO photos (report_id, task_id, case_id, purpose, {PHOTO_COLUMNS}) "
            f"SELECT :r, :t, :c, :purpose, sha, ct, size, w, h, exif, taken, geom FROM ({PHOTO_ROWS}) u "
            "ORDER BY n RETURNING id"
        ),
        {"r": report_id, "t": task_id, "c": case_id, "purpose": purpose, **photo_params(photos)},
    )
    return list(rows)


def _json(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


def discard(photos: list[CheckedPhoto]) -> None:
    for photo in photos:
        photo.staged.discard()


def photo_links(photos: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """API links of photo records ({id, sha256, purpose}, as aggregated by the queries)."""
    return [
        {
            "id": p["id"],
            "sha256": p["sha256"],
            "url": f"/api/v1/photos/{p['id']}",
            "thumbnail_url": f"/api/v1/photos/{p['id']}/thumbnail",
            "purpose": p["purpose"],
        }
        for p in photos
    ]


async def sweep_orphans(
    session: AsyncSession, store: PhotoStore, older_than: timedelta = timedelta(hours=1)
) -> int:
    """Remove staged uploads of aborted requests and stored files no row refers to.

    A file is stored (fsynced) before the commit that records it; if that commit never
    happens, the file is an orphan. Files younger than ``older_than`` may still be waiting
    for their commit and are left alone.
    """
    removed = await asyncio.to_thread(store.sweep_tmp, older_than.total_seconds())
    cutoff = datetime.now().timestamp() - older_than.total_seconds()
    candidates = [sha for sha, mtime in await asyncio.to_thread(store.stored) if mtime < cutoff]
    if candidates:
        known = set(
            await session.scalars(
                text("SELECT sha256 FROM photos WHERE sha256 = ANY(CAST(:s AS bpchar[]))"), {"s": candidates}
            )
        )
        for sha in candidates:
            if sha not in known:
                await asyncio.to_thread(store.remove, sha)
                removed += 1
    return removed


_PHOTO = """
SELECT p.id, p.sha256, p.content_type, r.collector_id, coalesce(rc.unit_id, c.unit_id, tc.unit_id) AS unit_id,
       t.collector_id AS task_collector_id
FROM photos p
LEFT JOIN reports r ON r.id = p.report_id
LEFT JOIN cases rc ON rc.id = r.case_id
LEFT JOIN cases c ON c.id = p.case_id
LEFT JOIN collector_tasks t ON t.id = p.task_id
LEFT JOIN cases tc ON tc.id = t.case_id
WHERE p.id = :id
"""


@dataclass(frozen=True)
class StoredPhoto:
    id: int
    sha256: str
    content_type: str


async def visible_photo(session: AsyncSession, photo_id: int, viewer: Any) -> StoredPhoto:
    """A photo the viewer may see: its collector, the command center, planners, the unit of its case."""
    from geo.errors import NotFound

    row = (await session.execute(text(_PHOTO), {"id": photo_id})).first()
    allowed = row is not None and (
        viewer.has("operator", "supervisor", "planner")
        or (viewer.has("collector") and viewer.id in (row.collector_id, row.task_collector_id))
        or (viewer.has("unit") and row.unit_id is not None and row.unit_id == viewer.unit_id)
    )
    if not allowed:
        raise NotFound(f"no photo {photo_id}")
    return StoredPhoto(row.id, row.sha256, row.content_type)
