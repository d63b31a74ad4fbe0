"""Service health."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError

from api.auth import copies
from api.errors import problem

router = APIRouter(tags=["meta"])


@router.get("/healthz", summary="Liveness and database health")
async def healthz(request: Request) -> JSONResponse:
    try:
        async with request.app.state.db.sessions() as session:
            postgis = await session.scalar(text("SELECT postgis_lib_version()"))
            migration = await session.scalar(text("SELECT version_num FROM alembic_version"))
    except (OSError, OperationalError, DBAPIError) as exc:
        return problem(503, "database_unavailable", "Database unavailable", str(exc).splitlines()[0])
    # Without its LISTEN connection the service still answers, from the database alone (slower).
    kept = copies(request)
    in_memory = None if kept is None else ("live" if kept.listener.live else "down")
    return JSONResponse(
        {"status": "ok", "postgis": postgis, "migration": migration, "in_memory_copies": in_memory}
    )
