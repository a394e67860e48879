"""Single-use `jti` of client assertions (RFC 7523 §3 item 7), kept in memory.

A database write per token request would cost more than the rest of the request; a Redis
implementation for several instances comes with the deployment work (issue 7).
"""

from __future__ import annotations

import threading
from typing import Protocol


class ReplayCache(Protocol):
    def first_use(self, key: str, expires_at: float, now: float) -> bool:
        """Record `key` until `expires_at`; False when it was already recorded."""
        ...


class MemoryReplayCache:
    def __init__(self, max_entries: int = 1_000_000) -> None:
        self._seen: dict[str, float] = {}
        self._max_entries = max_entries
        self._next_purge = 0.0
        self._lock = threading.Lock()

    def first_use(self, key: str, expires_at: float, now: float) -> bool:
        with self._lock:
            if now >= self._next_purge or len(self._seen) >= self._max_entries:
                self._seen = {k: exp for k, exp in self._seen.items() if exp > now}
                self._next_purge = now + 60.0
            expires = self._seen.get(key)
            if expires is not None and expires > now:
                return False
            if len(self._seen) >= self._max_entries:
                # Full of live entries: refuse rather than forget one (fail closed).
                return False
            self._seen[key] = expires_at
            return True
