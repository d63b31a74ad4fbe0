"""The photo store: content-addressed files on local disk, durable before the database commit.

Layout under the root: ``tmp/`` (large uploads being received), ``objects/ab/cd/<sha256>`` (the
untouched originals, kept as evidence), ``derived/ab/<sha256>-<variant>.<ext>`` (thumbnails
and public renderings, re-creatable at any time). The interface (``stage``/``commit``/``open``)
is small so that an S3-compatible store can replace it.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import secrets
import time
from pathlib import Path
from typing import Any, BinaryIO

from geo.images import make_thumbnail, render_public

_EXT = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp"}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Names of temporary files: unique within a process by the counter, across processes by the
# prefix (cheaper than a uuid4 per upload, whose urandom call showed on the submission path).
_PREFIX = f"{os.getpid()}-{secrets.token_hex(4)}"
_COUNTER = itertools.count()


def _temp_name() -> str:
    return f"{_PREFIX}-{next(_COUNTER)}"


SPILL_BYTES = 1024 * 1024


class StagedFile:
    """An upload being received while its sha256 is computed.

    The first ``spill_bytes`` stay in memory (most photos from the app fit, and creating a
    file on the event loop costs more than receiving them); a larger upload spills to
    ``tmp/``, so no more than that much of any one file is ever held in memory.
    """

    def __init__(self, path: Path, spill_bytes: int = SPILL_BYTES) -> None:
        self.path = path  # where the bytes go once they no longer fit in memory
        self.size = 0
        self.spill_bytes = spill_bytes
        # Hashed when spilled, while streaming; in memory, on first use of ``sha256``, which
        # the photo check does off the event loop.
        self._hash: Any = None
        self._sha256: str | None = None
        self._buffer: bytearray | None = bytearray()
        self._file: BinaryIO | None = None

    @property
    def in_memory(self) -> bool:
        return self._buffer is not None

    def write(self, data: bytes) -> None:
        if self._buffer is not None:
            self._buffer += data
            if len(self._buffer) > self.spill_bytes:
                self._file = self.path.open("wb")
                self._file.write(self._buffer)
                self._hash = hashlib.sha256(self._buffer)
                self._buffer = None
        elif self._file is not None:
            self._file.write(data)
            self._hash.update(data)
        else:
            raise ValueError("the staged file was closed or discarded")
        self.size += len(data)

    def finish(self) -> None:
        """All bytes received; the fsync waits for :meth:`close` (off the event loop)."""
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        """A spilled file: flush to disk and close, durable from here on."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def open(self) -> BinaryIO:
        """The bytes received, for reading (the caller closes it)."""
        if self._buffer is not None:
            return io.BytesIO(self._buffer)
        self.finish()
        return self.path.open("rb")

    def save_as(self, target: Path) -> None:
        """Write the bytes to ``target`` durably (fsynced), by rename when they were spilled."""
        if self._buffer is None:
            self.close()
            os.replace(self.path, target)
            return
        partial = target.with_name(f".{target.name}.{_temp_name()}.tmp")
        try:
            with partial.open("wb") as out:
                out.write(self._buffer)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        self._buffer = None

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            if self._buffer is not None:
                self._sha256 = hashlib.sha256(self._buffer).hexdigest()
            elif self._hash is not None:
                self._sha256 = self._hash.hexdigest()
            else:
                raise ValueError("the staged file was discarded before its hash was taken")
        return self._sha256

    def discard(self) -> None:
        self._buffer = None
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

    def stage(self, spill_bytes: int = SPILL_BYTES) -> StagedFile:
        return StagedFile(self.tmp / f"{_temp_name()}.part", spill_bytes)

    def path_of(self, sha256: str) -> Path:
        return self.objects / sha256[:2] / sha256[2:4] / sha256

    def commit(self, staged: StagedFile) -> Path:
        """Move an upload to its content address; durable (file and folder fsynced) on return."""
        target = self.path_of(staged.sha256)
        if target.exists():  # same bytes stored before: keep the first copy
            staged.discard()
            return target
        try:
            staged.save_as(target)
        except FileNotFoundError:  # the first object under its prefix (no mkdir call otherwise)
            self._make_folders(target.parent)
            staged.save_as(target)
        _fsync_dir(target.parent)
        return target

    def _make_folders(self, folder: Path) -> None:
        """``objects/ab/cd``, with the new entries themselves made durable."""
        for level in (folder.parent, folder):
            if not level.is_dir():
                level.mkdir(exist_ok=True)
                _fsync_dir(level.parent)

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
        """Remove uploads left behind by aborted requests or crashes."""
        cutoff = time.time() - older_than_s
        removed = 0
        # Also the partial copies of commits cut short by a crash (``save_as``).
        for path in [*self.tmp.glob("*.part"), *self.objects.glob("*/*/.*.tmp")]:
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
            if path.name.startswith("."):  # a partial copy: sweep_tmp's
                continue
            try:
                out.append((path.name, path.stat().st_mtime))
            except FileNotFoundError:
                continue
        return out

    def remove(self, sha256: str) -> None:
        self.path_of(sha256).unlink(missing_ok=True)
        for derived in (self.derived / sha256[:2]).glob(f"{sha256}-*"):
            derived.unlink(missing_ok=True)
