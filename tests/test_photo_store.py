"""The photo store: durable content addresses, and orphans of aborted requests swept."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import text

from api.db import Database
from cases.photo_store import PhotoStore
from cases.photos import sweep_orphans


def _put(store: PhotoStore, data: bytes, spill_bytes: int = 1024) -> str:
    staged = store.stage(spill_bytes)
    for i in range(0, len(data), 7):  # in pieces, as the multipart parser hands them over
        staged.write(data[i : i + 7])
    staged.close()
    sha = staged.sha256
    store.commit(staged)
    return sha


def test_content_addressed_and_deduplicated(tmp_path: Path) -> None:
    store = PhotoStore(tmp_path)
    a = _put(store, b"evidence")
    b = _put(store, b"evidence")
    assert a == b == hashlib.sha256(b"evidence").hexdigest()
    assert store.path_of(a).read_bytes() == b"evidence"
    assert list(store.tmp.iterdir()) == []  # the second staging was discarded


def test_small_uploads_stay_in_memory_large_ones_spill(tmp_path: Path) -> None:
    store = PhotoStore(tmp_path)
    small, large = store.stage(spill_bytes=64), store.stage(spill_bytes=64)
    small.write(b"s" * 64)
    large.write(b"l" * 40)
    large.write(b"l" * 40)
    assert small.in_memory and not small.path.exists()
    assert not large.in_memory and large.path.exists()
    with small.open() as a, large.open() as b:
        assert (a.read(), b.read()) == (b"s" * 64, b"l" * 80)
    for staged, data in ((small, b"s" * 64), (large, b"l" * 80)):
        sha = staged.sha256
        store.commit(staged)
        assert store.path_of(sha).read_bytes() == data
    assert list(store.tmp.iterdir()) == []
    assert sorted(p.name for p in store.objects.glob("*/*/*")) == sorted(
        hashlib.sha256(d).hexdigest() for d in (b"s" * 64, b"l" * 80)
    )


async def test_sweep_removes_only_old_orphans(tmp_path: Path, db: Database) -> None:
    store = PhotoStore(tmp_path)
    orphan = _put(store, b"written, but its commit never happened")
    young = _put(store, b"written a moment ago, its commit may still come")
    aborted = store.stage(spill_bytes=4)
    aborted.write(b"half an upload")
    crashed = store.path_of(young).with_name(f".{young}.1-2.tmp")  # a copy a crash cut short
    crashed.write_bytes(b"half a copy")
    old = time.time() - 7200
    for path in (store.path_of(orphan), aborted.path, crashed):
        os.utime(path, (old, old))
    referenced = _put(store, b"a photo some row refers to")
    os.utime(store.path_of(referenced), (old, old))
    async with db.sessions() as session:
        await session.execute(
            text("INSERT INTO photos (sha256, content_type, size_bytes) VALUES (:s, 'image/jpeg', 26)"),
            {"s": referenced},
        )
        await session.commit()
    async with db.sessions() as session:
        removed = await sweep_orphans(session, store, older_than=timedelta(hours=1))
    assert removed == 3
    assert not store.path_of(orphan).exists() and not aborted.path.exists() and not crashed.exists()
    assert store.path_of(young).exists()
    assert store.path_of(referenced).exists()
