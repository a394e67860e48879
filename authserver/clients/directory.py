"""Client lookup for the token path: the cache first, one indexed read off the loop on a miss."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
import anyio.to_thread
from sqlalchemy.exc import SQLAlchemyError

from authserver.clients.admin import load_client
from authserver.clients.cache import ClientCache
from authserver.clients.records import ClientRecord
from authserver.errors import TemporarilyUnavailable
from authserver.storage.db import Database


@dataclass
class _Flight:
    """One store read in progress; its outcome is shared with every request waiting on it."""

    done: anyio.Event = field(default_factory=anyio.Event)
    finished: bool = False
    record: ClientRecord | None = None
    error: SQLAlchemyError | None = None


class ClientDirectory:
    def __init__(self, db: Database, cache: ClientCache) -> None:
        self.db = db
        self.cache = cache
        self._flights: dict[str, _Flight] = {}

    def _load(self, client_id: str) -> ClientRecord | None:
        with self.db.session() as session:
            return load_client(session, client_id)

    async def get(self, client_id: str) -> ClientRecord | None:
        """The client, from the cache or one read; concurrent misses of one id share the read
        and its outcome (a failure too, so an outage does not queue reads one after another)."""
        while True:
            found = self.cache.get(client_id)
            if found is not ClientCache.MISSING:
                return found  # type: ignore[return-value]
            flight = self._flights.get(client_id)
            if flight is None:
                break
            await flight.done.wait()
            if flight.error is not None:
                raise _unavailable(flight.error)
            if flight.finished:
                return flight.record
            # the reader was cancelled: look again, and read ourselves if need be
        flight = self._flights[client_id] = _Flight()
        version = self.cache.version(client_id)
        try:
            flight.record = await anyio.to_thread.run_sync(self._load, client_id)
            flight.finished = True
            self.cache.put(client_id, flight.record, version)
            return flight.record
        except SQLAlchemyError as exc:
            flight.error = exc
            raise _unavailable(exc) from exc
        finally:
            del self._flights[client_id]
            flight.done.set()


def _unavailable(exc: SQLAlchemyError) -> TemporarilyUnavailable:
    return TemporarilyUnavailable(
        "The client store is unavailable; retry shortly", detail=type(exc).__name__
    )
