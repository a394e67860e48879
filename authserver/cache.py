"""In-process cache of records (clients, API keys), invalidated by the event log.

A hit costs one dict lookup. A miss is one indexed read done by the caller off the event loop;
`put` refuses a value loaded before an invalidation of the same client (a load racing a change).
Unknown ids are cached too (bounded), so a flood of made-up ids does not become a flood of reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio
import anyio.to_thread
from sqlalchemy.exc import SQLAlchemyError

from authserver.errors import TemporarilyUnavailable
from authserver.storage.db import Database

R = TypeVar("R")
_MISSING = object()


class VersionedCache(Generic[R]):
    def __init__(self, max_entries: int = 100_000, max_unknown: int = 10_000) -> None:
        self._known: dict[str, R] = {}
        self._unknown: set[str] = set()
        self._versions: dict[str, int] = {}
        # Bumped by `clear`: a load that began before it (of any key) must not be stored.
        self._generation = 0
        self._max_entries = max_entries
        self._max_unknown = max_unknown
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> R | object | None:
        """The record, None for a known-unknown id, or `VersionedCache.MISSING`."""
        record = self._known.get(key)
        if record is not None:
            self.hits += 1
            return record
        if key in self._unknown:
            self.hits += 1
            return None
        self.misses += 1
        return _MISSING

    MISSING = _MISSING

    def version(self, key: str) -> tuple[int, int]:
        return self._generation, self._versions.get(key, 0)

    def put(self, key: str, record: R | None, version: tuple[int, int]) -> None:
        if version != (self._generation, self._versions.get(key, 0)):
            return
        if record is None:
            if len(self._unknown) >= self._max_unknown:
                self._unknown.clear()
            self._unknown.add(key)
            return
        if len(self._known) >= self._max_entries:
            self._known.clear()
        self._known[key] = record

    def invalidate(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._known.pop(key, None)
            self._unknown.discard(key)
            self._versions[key] = self._versions.get(key, 0) + 1

    def clear(self) -> None:
        self._known.clear()
        self._unknown.clear()
        self._generation += 1


@dataclass
class _Flight(Generic[R]):
    """One store read in progress; its outcome is shared with every request waiting on it."""

    done: anyio.Event = field(default_factory=anyio.Event)
    finished: bool = False
    record: R | None = None
    error: SQLAlchemyError | None = None


class CachedDirectory(Generic[R]):
    """Records by id: the cache first, else one read (`_load`, in a worker thread); concurrent
    misses of one id share the read and its outcome (a failure too, so an outage does not queue
    reads one after another). A store failure is 503 `temporarily_unavailable`."""

    what = "record"

    def __init__(self, db: Database, cache: VersionedCache[R]) -> None:
        self.db = db
        self.cache = cache
        self._flights: dict[str, _Flight[R]] = {}

    def _load(self, key: str) -> R | None:
        raise NotImplementedError

    async def get(self, key: str) -> R | None:
        while True:
            found = self.cache.get(key)
            if found is not VersionedCache.MISSING:
                return found  # type: ignore[return-value]
            flight = self._flights.get(key)
            if flight is None:
                break
            await flight.done.wait()
            if flight.error is not None:
                raise self._unavailable(flight.error)
            if flight.finished:
                return flight.record
            # the reader was cancelled: look again, and read ourselves if need be
        flight = self._flights[key] = _Flight()
        version = self.cache.version(key)
        try:
            flight.record = await anyio.to_thread.run_sync(self._load, key)
            flight.finished = True
            self.cache.put(key, flight.record, version)
            return flight.record
        except SQLAlchemyError as exc:
            flight.error = exc
            raise self._unavailable(exc) from exc
        finally:
            del self._flights[key]
            flight.done.set()

    def _unavailable(self, exc: SQLAlchemyError) -> TemporarilyUnavailable:
        return TemporarilyUnavailable(
            f"The {self.what} store is unavailable; retry shortly", detail=type(exc).__name__
        )
