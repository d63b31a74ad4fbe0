"""The service's in-memory copies of tables, kept honest by one LISTEN connection a process.

The unit grids (the locator's index), the principals of tokens in use and the matter catalogue:
each is dropped or reloaded when its table changes (NOTIFY from triggers) and is not trusted
while the connection is down.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI

from cases.catalogue import MatterCatalogue
from cases.token_cache import TokenCache
from geo.grid_index import GridIndexKeeper
from geo.pg import Listener


@dataclass(frozen=True)
class Copies:
    listener: Listener
    grid_index: GridIndexKeeper
    tokens: TokenCache
    catalogue: MatterCatalogue

    @classmethod
    async def start(cls, dsn: str) -> Copies:
        listener = Listener(dsn)
        copies = cls(
            listener, GridIndexKeeper(dsn, listener), TokenCache(listener), MatterCatalogue(listener)
        )
        await listener.start()
        try:
            await copies.grid_index.start()  # loaded before the first request
        except BaseException:
            await listener.stop()
            raise
        return copies

    async def stop(self) -> None:
        await self.grid_index.stop()
        await self.listener.stop()

    def attach(self, app: FastAPI) -> None:
        app.state.copies = self  # read through api.auth.copies(request)
