"""The service's in-memory copies of tables, kept honest by one LISTEN connection a process.

The unit grids (the locator's index), the principals of tokens in use and the matter catalogue:
each is dropped or reloaded when its table changes (NOTIFY from triggers) and is not trusted
while the connection is down. The outbox sender is woken through the same connection.
"""

from __future__ import annotations

from fastapi import FastAPI

from cases.catalogue import MatterCatalogue
from cases.token_cache import TokenCache
from geo.grid_index import GridIndexKeeper
from geo.pg import Listener


class Copies:
    """Built before ``start``, so that other users of the process's LISTEN connection (the
    outbox sender) can subscribe to ``listener`` first."""

    def __init__(self, dsn: str) -> None:
        self.listener = Listener(dsn)
        self.grid_index = GridIndexKeeper(dsn, self.listener)
        self.tokens = TokenCache(self.listener)
        self.catalogue = MatterCatalogue(self.listener)

    async def start(self) -> Copies:
        await self.listener.start()
        try:
            await self.grid_index.start()  # loaded before the first request
        except BaseException:
            await self.listener.stop()
            raise
        return self

    async def stop(self) -> None:
        await self.grid_index.stop()
        await self.listener.stop()

    def attach(self, app: FastAPI) -> None:
        app.state.copies = self  # read through api.auth.copies(request)
