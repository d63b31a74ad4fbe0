"""The photo store: content-addressed files on local disk, durable before the database commit.

Layout under the root: ``tmp/`` (uploads being received), ``objects/ab/cd/<sha256>`` (the
untouched originals, kept as evidence), ``derived/ab/<sha256>-<variant>.<ext>`` (thumbnails
and public renderings, re-creatable at any time). The interface (``stage``/``commit``/``open``)
is small so that an S3-compatible store can replace it.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path
from typing import BinaryIO

from geo.images import make_thumbnail, render_public

_EXT = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp"}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StagedFile:
    """An upload being written to ``tmp/`` while its sha256 is computed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self._hash = hashlib.sha256()
        self._file: BinaryIO | None = path.open("wb")

    def write(self, data: bytes) -> None:
        assert self._file is not None
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)

    def finish(self) -> None:
        """All bytes received; the fsync waits for :meth:`close` (off the event loop)."""
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        """Flush to disk and close: durable from here on."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.path.unlink(missing_ok=True)


class PhotoStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.objects = self.root / "objects"
        self.derived = self.root / "derived"
        for folder in (self.tmp, self.objects, self.derived):
            folder.mkdir(parents=True, exist_ok=True)

    def stage(self) -> StagedFile:
        return StagedFile(self.tmp / f"{uuid.uuid4().hex}.part")

    def path_of(self, sha256: str) -> Path:
        return self.objects / sha256[:2] / sha256[2:4] / sha256

    def commit(self, staged: StagedFile) -> Path:
        """Move an upload to its content address; durable (file and folder fsynced) on return."""
        target = self.path_of(staged.sha256)
        if target.exists():  # same bytes stored before: keep the first copy
            staged.discard()
            return target
        staged.close()
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged.path, target)
        _fsync_dir(target.parent)
        return target

    def exists(self, sha256: str) -> bool:
        return self.path_of(sha256).exists()

    def thumbnail(self, sha256: str, size: int = 320) -> Path:
        """The thumbnail (JPEG, auto-rotated, no metadata), made on first use."""
        target = self.derived / sha256[:2] / f"{sha256}-thumb{size}.jpg"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            make_thumbnail(self.path_of(sha256), target, size)
        return target

    def public(self, sha256: str, content_type: str) -> Path:
        """The served rendering: auto-rotated by EXIF orientation, every metadata stripped."""
        target = self.derived / sha256[:2] / f"{sha256}-public{_EXT.get(content_type, '.jpg')}"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            render_public(self.path_of(sha256), target)
        return target

    def sweep_tmp(self, older_than_s: float = 3600) -> int:
        """Remove uploads left behind by aborted requests."""
        cutoff = time.time() - older_than_s
        removed = 0
        for path in self.tmp.glob("*.part"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def stored(self) -> list[tuple[str, float]]:
        """(sha256, mtime) of every stored original."""
        out = []
        for path in self.objects.glob("*/*/*"):
            try:
                out.append((path.name, path.stat().st_mtime))
            except FileNotFoundError:
                continue
        return out

    def remove(self, sha256: str) -> None:
        self.path_of(sha256).unlink(missing_ok=True)
        for derived in (self.derived / sha256[:2]).glob(f"{sha256}-*"):
            derived.unlink(missing_ok=True)
