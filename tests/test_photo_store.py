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


def _put(store: PhotoStore, data: bytes) -> str:
    staged = store.stage()
    staged.write(data)
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


async def test_sweep_removes_only_old_orphans(tmp_path: Path, db: Database) -> None:
    store = PhotoStore(tmp_path)
    orphan = _put(store, b"written, but its commit never happened")
    young = _put(store, b"written a moment ago, its commit may still come")
    aborted = store.stage()
    aborted.write(b"half an upload")
    old = time.time() - 7200
    for path in (store.path_of(orphan), aborted.path):
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
    assert removed == 2
    assert not store.path_of(orphan).exists() and not aborted.path.exists()
    assert store.path_of(young).exists()
    assert store.path_of(referenced).exists()
