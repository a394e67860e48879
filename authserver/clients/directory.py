"""Client lookup for the token path: the cache first, one indexed read off the loop on a miss."""

from __future__ import annotations

import anyio
import anyio.to_thread
from sqlalchemy.exc import SQLAlchemyError

from authserver.clients.admin import load_client
from authserver.clients.cache import ClientCache
from authserver.clients.records import ClientRecord
from authserver.errors import TemporarilyUnavailable
from authserver.storage.db import Database


class ClientDirectory:
    def __init__(self, db: Database, cache: ClientCache) -> None:
        self.db = db
        self.cache = cache
        self._loading: dict[str, anyio.Event] = {}

    def _load(self, client_id: str) -> ClientRecord | None:
        with self.db.session() as session:
            return load_client(session, client_id)

    async def get(self, client_id: str) -> ClientRecord | None:
        """The client, from the cache or one read; concurrent misses of one id share the read."""
        while True:
            found = self.cache.get(client_id)
            if found is not ClientCache.MISSING:
                return found  # type: ignore[return-value]
            loading = self._loading.get(client_id)
            if loading is None:
                break
            await loading.wait()  # then look again: cached, or load it ourselves
        done = self._loading[client_id] = anyio.Event()
        version = self.cache.version(client_id)
        try:
            record = await anyio.to_thread.run_sync(self._load, client_id)
            self.cache.put(client_id, record, version)
            return record
        except SQLAlchemyError as exc:
            raise TemporarilyUnavailable(
                "The client store is unavailable; retry shortly", detail=type(exc).__name__
            ) from exc
        finally:
            del self._loading[client_id]
            done.set()
