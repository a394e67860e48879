"""The client cache: one dict lookup per hit, invalidated by the event log."""

from __future__ import annotations

from authserver.cache import VersionedCache
from authserver.clients.records import ClientRecord


class ClientCache(VersionedCache[ClientRecord]):
    pass
