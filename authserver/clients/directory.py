"""Client lookup for the token path: the cache first, one indexed read off the loop on a miss."""

from __future__ import annotations

from authserver.cache import CachedDirectory
from authserver.clients.admin import load_client
from authserver.clients.records import ClientRecord


class ClientDirectory(CachedDirectory[ClientRecord]):
    what = "client"

    def _load(self, key: str) -> ClientRecord | None:
        with self.db.session() as session:
            return load_client(session, key)
