"""In-process client cache, invalidated by the event log.

A hit costs one dict lookup. A miss is one indexed read done by the caller off the event loop;
`put` refuses a value loaded before an invalidation of the same client (a load racing a change).
Unknown ids are cached too (bounded), so a flood of made-up ids does not become a flood of reads.
"""

from __future__ import annotations

from collections.abc import Iterable

from authserver.clients.records import ClientRecord

_MISSING = object()


class ClientCache:
    def __init__(self, max_entries: int = 100_000, max_unknown: int = 10_000) -> None:
        self._known: dict[str, ClientRecord] = {}
        self._unknown: set[str] = set()
        self._versions: dict[str, int] = {}
        self._max_entries = max_entries
        self._max_unknown = max_unknown
        self.hits = 0
        self.misses = 0

    def get(self, client_id: str) -> ClientRecord | object | None:
        """The record, None for a known-unknown id, or `ClientCache.MISSING`."""
        record = self._known.get(client_id)
        if record is not None:
            self.hits += 1
            return record
        if client_id in self._unknown:
            self.hits += 1
            return None
        self.misses += 1
        return _MISSING

    MISSING = _MISSING

    def version(self, client_id: str) -> int:
        return self._versions.get(client_id, 0)

    def put(self, client_id: str, record: ClientRecord | None, version: int) -> None:
        if self._versions.get(client_id, 0) != version:
            return
        if record is None:
            if len(self._unknown) >= self._max_unknown:
                self._unknown.clear()
            self._unknown.add(client_id)
            return
        if len(self._known) >= self._max_entries:
            self._known.clear()
        self._known[client_id] = record

    def invalidate(self, client_ids: Iterable[str]) -> None:
        for client_id in client_ids:
            self._known.pop(client_id, None)
            self._unknown.discard(client_id)
            self._versions[client_id] = self._versions.get(client_id, 0) + 1

    def clear(self) -> None:
        self.invalidate(list(self._known) + list(self._unknown))
