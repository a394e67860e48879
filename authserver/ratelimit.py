"""Rate limits per key (source address, later client and API key), with the `limits` library.

Counters live in this process's memory; shared counters (Redis) are a storage URI away.
"""

from __future__ import annotations

import math
import time

from limits import parse_many
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from authserver.errors import Invalid


def check_limits(spec: str, field: str) -> str:
    """A `limits` specification ("100/hour;10/minute"), or Invalid naming `field`."""
    try:
        if not isinstance(spec, str) or not parse_many(spec):
            raise ValueError(spec)
    except ValueError as exc:
        raise Invalid(f"{field}: {str(spec)[:60]!r} is not a rate like 100/hour") from exc
    return spec


class RateLimiter:
    """One or more limits (e.g. "5/minute;50/day") applied together to each key."""

    def __init__(self, spec: str, namespace: str, storage_uri: str = "memory://") -> None:
        self.items = parse_many(spec)
        self.namespace = namespace
        self._limiter = MovingWindowRateLimiter(storage_from_string(storage_uri))

    def hit(self, key: str) -> int | None:
        """Count one request for `key`: None when allowed, else the seconds to wait. A refused
        request is not counted, so a client that waits as told gets through."""
        for item in self.items:
            if not self._limiter.test(item, self.namespace, key):
                reset = self._limiter.get_window_stats(item, self.namespace, key).reset_time
                return max(1, math.ceil(reset - time.time()))
        for item in self.items:
            self._limiter.hit(item, self.namespace, key)
        return None
