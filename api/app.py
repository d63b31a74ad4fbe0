"""The FastAPI application factory and its lifespan (database engine)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import errors
from api.db import Database
from api.routers import accounts, components, geo, grids, meta, reference
from api.settings import Settings, get_settings


def create_app(settings: Settings | None = None, database_url: str | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.db = Database(database_url or settings.url_for())
        try:
            yield
        finally:
            await app.state.db.dispose()

    app = FastAPI(
        title="CityGrid",
        summary="Digital urban-management command center (数字城管, GB/T 30428)",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    errors.install(app)
    for module in (meta, accounts, reference, geo, components, grids):
        app.include_router(module.router)
    return app
