"""The FastAPI application factory and its lifespan (database engine)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError

from api import errors
from api.admin_db import dsn
from api.copies import Copies
from api.db import Database
from api.routers import (
    accounts,
    admin,
    calendar,
    components,
    dispatch_rules,
    feed,
    geo,
    geocode,
    grids,
    meta,
    photos,
    planning,
    reference,
    reports,
    responsibility,
    tasks,
    tracks,
    workflow,
)
from api.settings import Settings, get_settings
from cases.delivery import Sender
from cases.photo_store import PhotoStore
from cases.photos import sweep_orphans

log = logging.getLogger("citygrid")


SWEEP_EVERY_S = 3600


async def _sweep_photos(app: FastAPI) -> None:
    """Remove the files of aborted uploads, now and every hour."""
    while True:
        try:
            async with app.state.db.sessions() as session:
                removed = await sweep_orphans(session, app.state.photo_store)
            if removed:
                log.info("photo sweep removed %d orphaned files", removed)
        except (OSError, SQLAlchemyError):
            log.exception("photo sweep failed; next try in an hour")
        await asyncio.sleep(SWEEP_EVERY_S)


def create_app(settings: Settings | None = None, database_url: str | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = database_url or settings.url_for()
        app.state.db = Database(url)
        copies = Copies(dsn(url))
        # Delivery to units: claims due outbox messages and posts them; state lives in the database.
        app.state.sender = Sender(app.state.db.sessions, listener=copies.listener)
        await copies.start()
        copies.attach(app)
        await app.state.sender.start()
        sweeper = asyncio.create_task(_sweep_photos(app), name="photo-sweeper")
        try:
            yield
        finally:
            sweeper.cancel()
            await app.state.sender.stop()
            await copies.stop()
            await app.state.db.dispose()

    app = FastAPI(
        title="CityGrid",
        summary="Digital urban-management command center (数字城管, GB/T 30428)",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.copies = None
    app.state.sender = None
    app.state.photo_store = PhotoStore(settings.photo_dir)
    errors.install(app)
    for module in (
        meta,
        accounts,
        admin,
        reference,
        geo,
        geocode,
        components,
        grids,
        reports,
        photos,
        tasks,
        tracks,
        calendar,
        workflow,
        planning,
        responsibility,
        dispatch_rules,
        feed,
    ):
        app.include_router(module.router)
    return app
