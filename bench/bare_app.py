"""The two bare baselines of the submission bench (not part of the service).

(a) ``POST /bare``: receive the upload, write it to disk, insert one row.
(b) ``POST /naive``: the same plus a naive Pillow open, EXIF read and 256 px thumbnail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image

DSN = os.environ["BENCH_DSN"]
FOLDER = Path(os.environ["BENCH_DIR"])
FOLDER.mkdir(parents=True, exist_ok=True)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.pool = await asyncpg.create_pool(DSN, min_size=4, max_size=16)
    await app.state.pool.execute(
        "CREATE TABLE IF NOT EXISTS bench_uploads (id bigserial PRIMARY KEY, name text, size int, meta text)"
    )
    yield
    await app.state.pool.close()


app = FastAPI(lifespan=lifespan)


async def _receive(request: Request) -> tuple[Path, int]:
    form = await request.form()
    upload = form["photos"]
    data = await upload.read()  # type: ignore[union-attr]
    path = FOLDER / f"{uuid.uuid4().hex}.jpg"
    path.write_bytes(data)
    return path, len(data)


@app.post("/bare", status_code=201)
async def bare(request: Request) -> JSONResponse:
    path, size = await _receive(request)
    row = await request.app.state.pool.fetchval(
        "INSERT INTO bench_uploads (name, size) VALUES ($1, $2) RETURNING id", path.name, size
    )
    return JSONResponse({"id": row}, status_code=201)


@app.post("/naive", status_code=201)
async def naive(request: Request) -> JSONResponse:
    path, size = await _receive(request)
    with Image.open(path) as image:
        exif = dict(image.getexif())
        image.thumbnail((256, 256))
        image.save(path.with_suffix(".thumb.jpg"))
    row = await request.app.state.pool.fetchval(
        "INSERT INTO bench_uploads (name, size, meta) VALUES ($1, $2, $3) RETURNING id",
        path.name,
        size,
        str(len(exif)),
    )
    return JSONResponse({"id": row}, status_code=201)
