"""Rate limits with the `limits` library (sliding window counters: O(1) per check, unlike a
moving window's log of every hit): per source address, API key, OAuth client and organisation.

Counters live in this process's memory, or in Redis (`redis_url`) so that every instance shares
them. Checks are async (`limits.aio`): a slow Redis delays the request that waits for it, never
the event loop, and a call that takes longer than `REDIS_TIMEOUT` fails. A counter store that
fails lets the request through and logs why (fail open): a rate limit protects capacity, it is
not an access control.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from dataclasses import dataclass

import redis.asyncio
from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from authserver.config import RateLimitSettings
from authserver.errors import Invalid

log = logging.getLogger("authserver.ratelimit")


def check_limits(spec: str, field: str) -> str:
    """A `limits` specification ("100/hour;10/minute"), or Invalid naming `field`."""
    try:
        if not isinstance(spec, str) or not parse_many(spec):
            raise ValueError(spec)
    except ValueError as exc:
        raise Invalid(f"{field}: {str(spec)[:60]!r} is not a rate like 100/hour") from exc
    return spec


OVERRIDE_KINDS = ("hourly", "burst")


def check_overrides(pairs: tuple[tuple[str, str], ...] | dict[str, str]) -> dict[str, str]:
    """A key's or client's own limits, {"hourly": "5000/hour", "burst": "100/minute"}."""
    limits = dict(pairs)
    unknown = sorted(set(limits) - set(OVERRIDE_KINDS))
    if unknown:
        raise Invalid(f"rate_limits: unknown kind {unknown[0]!r} (hourly, burst)")
    for kind, spec in limits.items():
        check_limits(spec, f"rate_limits.{kind}")
    return limits


def rate_key(address: str | None) -> str:
    """IPv6 callers are counted per /64 (one host usually holds a whole /64); IPv4-mapped
    addresses count as their IPv4 address."""
    if address is None:
        return "-"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:  # a unix socket peer, a test client: counted by its name
        return address[:100]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


REDIS_TIMEOUT = 0.25


class CounterStore:
    """Where counters live: a `redis://` (or `rediss://`) URL, or this process's memory. The
    Redis connection pool is ours, so that shutdown can close it."""

    def __init__(self, url: str = "") -> None:
        self._pool: redis.asyncio.ConnectionPool | None = None
        if url:
            self._pool = redis.asyncio.ConnectionPool.from_url(
                url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT)
            store = storage_from_string("async+" + url, implementation="redispy",
                                        connection_pool=self._pool)  # type: ignore[arg-type]
        else:
            store = storage_from_string("async+memory://")
        assert isinstance(store, Storage)
        self.storage = store

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.disconnect()


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome for the tightest limit: `retry_after` is None when allowed."""

    limit: int
    remaining: int
    reset: int
    retry_after: int | None = None
    name: str = ""


class RateLimiter:
    """One or more limits (e.g. "5/minute;50/day") applied together to each key."""

    def __init__(self, spec: str, namespace: str, store: CounterStore) -> None:
        self.items = parse_many(spec)
        self.namespace = namespace
        self._limiter = SlidingWindowCounterRateLimiter(store.storage)

    async def hit(self, key: str) -> int | None:
        """Count one request for `key`: None when allowed, else the seconds to wait."""
        return (await self.check(key)).retry_after

    async def check(self, key: str, items: list[RateLimitItem] | None = None,
                    stats: bool = True) -> Verdict:
        """Count one request against each limit in turn; `items` override the defaults. Each
        count is atomic (with Redis, one script), so concurrent requests cannot all slip
        through. The limit that refuses does not count the request; the limits before it in
        `items` already have. With `stats`, the verdict of an allowed request carries what the
        RateLimit-* headers need (one more store call per limit); a refusal always does."""
        items = items or self.items
        try:
            tightest = Verdict(0, 0, 0, name=self.namespace)
            for item in items:
                allowed = await self._limiter.hit(item, self.namespace, key)
                if allowed and not stats:
                    continue
                window = await self._limiter.get_window_stats(item, self.namespace, key)
                reset = max(1, math.ceil(window.reset_time - time.time()))
                if not allowed:
                    return Verdict(item.amount, 0, reset, reset, self.namespace)
                if not tightest.limit or window.remaining < tightest.remaining:
                    tightest = Verdict(item.amount, window.remaining, reset, name=self.namespace)
            return tightest
        except Exception as exc:  # the counter store is down: fail open, loudly
            log.warning("rate-limit store failed for %s; request let through: %s",
                        self.namespace, type(exc).__name__)
            return Verdict(0, 0, 0, name=self.namespace)


class Limits:
    """Every limit of the platform, sharing one counter store."""

    def __init__(self, settings: RateLimitSettings, store: CounterStore) -> None:
        self.store = store
        self.api_key = RateLimiter(f"{settings.api_key_hourly};{settings.api_key_burst}",
                                   "api_key", store)
        self.client = RateLimiter(f"{settings.client_hourly};{settings.client_burst}",
                                  "client", store)
        self.organization = RateLimiter(settings.organization_hourly, "organization", store)
        self.address = RateLimiter(settings.address, "address", store)
        self._defaults = {
            "api_key": {"hourly": settings.api_key_hourly, "burst": settings.api_key_burst},
            "client": {"hourly": settings.client_hourly, "burst": settings.client_burst},
        }
        self._parsed: dict[tuple[str, tuple[tuple[str, str], ...]], list[RateLimitItem]] = {}

    def key_items(self, overrides: dict[str, str]) -> list[RateLimitItem] | None:
        """The limits of a key with its own `rate_limits` (None: the defaults)."""
        return self._items("api_key", overrides)

    def client_items(self, overrides: dict[str, str]) -> list[RateLimitItem] | None:
        """The limits of a client with its own `rate_limits` (None: the defaults)."""
        return self._items("client", overrides)

    def _items(self, kind: str, overrides: dict[str, str]) -> list[RateLimitItem] | None:
        if not overrides:
            return None
        marker = (kind, tuple(sorted(overrides.items())))
        items = self._parsed.get(marker)
        if items is None:
            merged = {**self._defaults[kind], **overrides}
            items = self._parsed[marker] = parse_many(f"{merged['hourly']};{merged['burst']}")
        return items
