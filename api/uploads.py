"""Streaming multipart/form-data: files go straight to the photo store's staging area.

Nothing is held in memory beyond one chunk: nine 10 MB photos never sit in RAM together.
Limits are enforced while reading; on a violation the rest of the body is drained (up to a
cap) so that an ordinary HTTP client still sending it can read the 413.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request, UploadFile
from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header

from cases.photo_store import PhotoStore, StagedFile
from geo.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

MB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_files: int = 9
    max_file_bytes: int = 10 * MB
    max_field_bytes: int = 256 * 1024
    max_fields: int = 10
    drain_cap_bytes: int = 256 * MB  # beyond this much body we stop reading and close

    @property
    def max_body_bytes(self) -> int:
        return self.max_files * (self.max_file_bytes + 64 * 1024) + self.max_fields * self.max_field_bytes


@dataclass
class Upload:
    field: str
    filename: str
    declared_type: str
    staged: StagedFile


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    files: list[Upload] = field(default_factory=list)

    def discard(self) -> None:
        for upload in self.files:
            upload.staged.discard()


class _Collector:
    """Callbacks of the multipart parser: builds the form, raising on a limit."""

    def __init__(self, store: PhotoStore, limits: Limits) -> None:
        self.store = store
        self.limits = limits
        self.form = Form()
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name = ""
        self._file: Upload | None = None
        self._value = bytearray()

    def on_part_begin(self) -> None:
        self._headers = {}
        self._file = None
        self._value = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = b""
        self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if filename is not None:
            if len(self.form.files) >= self.limits.max_files:
                raise PayloadTooLarge(
                    f"at most {self.limits.max_files} files",
                    errors=[{"field": self._name, "message": "too many files"}],
                )
            self._file = Upload(
                self._name,
                filename.decode("utf-8", "replace"),
                self._headers.get(b"content-type", b"").decode("latin-1"),
                self.store.stage(),
            )
            self.form.files.append(self._file)
        elif len(self.form.fields) >= self.limits.max_fields:
            raise PayloadTooLarge(
                "too many form fields", errors=[{"field": self._name, "message": "too many"}]
            )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file is not None:
            if self._file.staged.size + (end - start) > self.limits.max_file_bytes:
                raise PayloadTooLarge(
                    f"{self._file.filename or 'a file'} is larger than {self.limits.max_file_bytes // MB} MB",
                    errors=[
                        {
                            "field": self._name,
                            "message": f"each file at most {self.limits.max_file_bytes // MB} MB",
                        }
                    ],
                )
            self._file.staged.write(data[start:end])
        else:
            self._value += data[start:end]
            if len(self._value) > self.limits.max_field_bytes:
                raise PayloadTooLarge(
                    f"the field {self._name!r} is too large",
                    errors=[{"field": self._name, "message": "too large"}],
                )

    def on_part_end(self) -> None:
        if self._file is not None:
            self._file.staged.finish()
        else:
            self.form.fields[self._name] = self._value.decode("utf-8", "replace")


async def _drain(request: Request, already: int, cap: int) -> None:
    seen = already
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > cap:
            break


async def read_form(request: Request, store: PhotoStore, limits: Limits | None = None) -> Form:
    """Parse a multipart body into fields and staged files (caller commits or discards them)."""
    limits = limits or Limits()
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise UnsupportedMediaType(
            "send multipart/form-data", errors=[{"field": "body", "message": "expected multipart/form-data"}]
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
        await _drain(request, 0, limits.drain_cap_bytes)
        raise PayloadTooLarge(f"the request body is larger than {limits.max_body_bytes // MB} MB")
    collector = _Collector(store, limits)
    callbacks = {
        name: getattr(collector, name)
        for name in (
            "on_part_begin",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
            "on_part_data",
            "on_part_end",
        )
    }
    parser = MultipartParser(options[b"boundary"], callbacks)  # type: ignore[arg-type]
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limits.max_body_bytes:
                raise PayloadTooLarge(f"the request body is larger than {limits.max_body_bytes // MB} MB")
            parser.write(chunk)
        parser.finalize()
    except PayloadTooLarge:
        collector.form.discard()
        await _drain(request, received, limits.drain_cap_bytes)
        raise
    except MultipartParseError as exc:
        collector.form.discard()
        raise InvalidInput(
            f"malformed multipart body: {exc}", errors=[{"field": "body", "message": "malformed multipart"}]
        ) from exc
    except BaseException:
        collector.form.discard()  # a client that went away mid-upload leaves nothing behind
        raise
    return collector.form


async def bounded_body(request: Request, limit: int, drain_cap: int) -> bytes:
    """The whole (non-multipart) body, refused with 413 beyond ``limit`` bytes after draining
    the rest, up to ``drain_cap``, so that the client can read the answer."""
    declared = request.headers.get("content-length", "")
    chunks, seen = [], 0
    if not (declared.isdigit() and int(declared) > limit):
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > limit:
                break
            chunks.append(chunk)
        else:
            return b"".join(chunks)
    await _drain(request, seen, drain_cap)
    raise PayloadTooLarge(f"the request body is larger than {limit // MB} MB")


@asynccontextmanager
async def saved_upload(
    file: UploadFile, suffixes: tuple[str, ...], max_bytes: int = 50 * MB
) -> AsyncIterator[Path]:
    """An uploaded data file copied, in chunks, to a temporary folder that is removed afterwards.

    The suffix must be one of ``suffixes`` (422); past ``max_bytes`` the upload is refused (413).
    """
    suffix = Path(file.filename or "").suffix.lower()
    if suffix not in suffixes:
        raise InvalidInput(
            f"accepted files: {', '.join(suffixes)}", errors=[{"field": "file", "message": "unknown type"}]
        )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"upload{suffix}"
        size = 0
        with path.open("wb") as out:
            while chunk := await file.read(MB):
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(f"the file is larger than {max_bytes // MB} MB")
                out.write(chunk)
        yield path
