"""Rate limits with the `limits` library (sliding window counters: O(1) per check, unlike a
moving window's log of every hit): per source address, API key, OAuth client and organisation.

Counters live in this process's memory, or in Redis (`redis_url`) so that every instance shares
them. Redis checks are async (`limits.aio`): a slow Redis delays the request that waits for it,
never the event loop, and a call that takes longer than `REDIS_TIMEOUT` fails. Memory checks are
plain calls (nothing to wait for; a coroutine per store call cost a fifth of a forward-auth
decision), each limit counted in one pass that also yields its window statistics
(`LocalCounters.hit_sliding`: `limits`' counters and arithmetic without its layers, which made
a hit and a statistics read cost 2.5 and 2.8 µs). A counter store that fails lets the request
through and logs why (fail open): a rate limit protects capacity, it is not an access control.
"""

from __future__ import annotations

import inspect
import ipaddress
import logging
import math
import time
from typing import Any, NamedTuple

import redis.asyncio
from limits import RateLimitItem, WindowStats, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter as AsyncSlidingWindow
from limits.storage import MemoryStorage, storage_from_string

from authserver.config import RateLimitSettings
from authserver.errors import Invalid
from authserver.metrics import RATELIMIT_HITS

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


KEY_CACHE = 50_000
_CACHED_KINDS: dict[type[RateLimitItem], type[RateLimitItem]] = {}


def _cached_key_for(self: Any, *identifiers: str) -> str:
    key: str | None = self._keys.get(identifiers)
    if key is None:
        if len(self._keys) >= KEY_CACHE:
            self._keys.clear()
        key = self._keys[identifiers] = RateLimitItem.key_for(self, *identifiers)
    return key


def limit_items(spec: str) -> list[RateLimitItem]:
    """`parse_many(spec)`, with items that build each counter's storage key once per caller
    rather than formatting it on every hit and every statistics call (five times in a
    forward-auth decision). The cache is bounded; clearing it only costs the formatting."""
    items = []
    for item in parse_many(spec):
        kind = _CACHED_KINDS.get(type(item))
        if kind is None:  # a subclass without GRANULARITY: `limits` does not register it
            kind = _CACHED_KINDS[type(item)] = type(
                "Cached" + type(item).__name__, (type(item),),
                {"__slots__": ("_keys", "_expiry"), "key_for": _cached_key_for})
        cached: Any = kind(item.amount, item.multiples, item.namespace)
        cached._keys = {}
        cached._expiry = cached.get_expiry()
        items.append(cached)
    return items


REDIS_TIMEOUT = 0.25
SWEEP_INTERVAL = 10.0


class LocalCounters(MemoryStorage):
    """`limits`' memory storage, with expired counters dropped by a sweep every
    `SWEEP_INTERVAL` seconds rather than by the library's own pass, which it schedules after
    every increment (a thread, in the async flavour a task) and which walks every counter: with
    many callers (per-address limits) that walk would run all the time. A counter read after it
    expired is still dropped on the spot by the library's `get`, so the sweep only bounds
    memory, never a count."""

    def __init__(self) -> None:
        super().__init__()
        self._next_sweep = time.monotonic() + SWEEP_INTERVAL
        # A limit's counter key -> (current window, previous window, their storage keys)
        self._windows: dict[str, tuple[int, int, str, str]] = {}

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        self._sweep()
        count = self.get(key) + amount
        self.storage[key] = count
        if count == amount:
            self.expirations[key] = time.time() + expiry
        return count

    def decr(self, key: str, amount: int = 1) -> int:
        count = self.storage[key] = max(self.get(key) - amount, 0)
        return count

    def _sweep(self) -> None:
        if time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + SWEEP_INTERVAL
        now = time.time()
        for key in [key for key, at in self.expirations.items() if at <= now]:
            self.clear(key)

    def hit_sliding(self, item: RateLimitItem, namespace: str, key: str, stats: bool
                    ) -> tuple[bool, int, int] | None:
        """`limits`' sliding window counter in one pass, at one instant: what its
        `SlidingWindowCounterRateLimiter.hit` and then `get_window_stats` do with this storage
        (the same counters under the same keys, the same arithmetic, an expired counter read
        as zero and dropped), without the second read of both windows and the calls between.
        (allowed, remaining, seconds to reset) after counting the request if allowed; None
        when allowed and `stats` is off. A refusal does not count."""
        expiry: int = getattr(item, "_expiry", 0) or item.get_expiry()  # limit_items' items
        self._sweep()
        now = time.time()
        base = item.key_for(namespace, key)
        # the keys of `limits`' TimestampedSlidingWindow.sliding_window_keys, built once a window
        current_window, previous_window = int(now / expiry), int((now - expiry) / expiry)
        windows = self._windows.get(base)
        if windows is not None and windows[0] == current_window and \
                windows[1] == previous_window:
            previous_key, current_key = windows[2], windows[3]
        else:
            if len(self._windows) >= KEY_CACHE:
                self._windows.clear()
            previous_key, current_key = f"{base}/{previous_window}", f"{base}/{current_window}"
            self._windows[base] = (current_window, previous_window, previous_key, current_key)
        expirations = self.expirations
        at = expirations.get(previous_key)
        if at is None or at <= now:
            previous = 0
            if at is not None:
                self.clear(previous_key)
        else:
            previous = self.storage.get(previous_key, 0)
        at = expirations.get(current_key)
        if at is None or at <= now:
            current = 0
            if at is not None:
                self.clear(current_key)
        else:
            current = self.storage.get(current_key, 0)
        previous_ttl = (1 - (((now - expiry) / expiry) % 1)) * expiry if previous else 0.0
        allowed = math.floor(previous * previous_ttl / expiry + current) + 1 <= item.amount
        if allowed:
            current += 1
            self.storage[current_key] = current
            if current == 1:
                expirations[current_key] = now + 2 * expiry
            if not stats:
                return None
        remaining = max(0, item.amount - math.floor(previous * previous_ttl / expiry + current))
        if not (previous or current):
            return allowed, remaining, 1
        reset_in = math.inf
        if previous:
            reset_in = previous_ttl % (expiry / previous)
        if current:
            current_ttl = (1 - ((now / expiry) % 1)) * expiry + expiry
            reset_in = min(reset_in, current_ttl % expiry)
        return allowed, remaining, max(1, math.ceil(reset_in))


# `limits` wraps the storage methods of every subclass in a layer that translates exceptions
# (once more for a subclass of a subclass: `get` ran through two). With `wrap_exceptions` off,
# as here, a layer only re-raises, yet the layers were a third of a check's cost: take them off.
for _method in ("incr", "get", "get_expiry", "check", "reset", "clear", "acquire_entry",
                "get_moving_window", "acquire_sliding_window_entry", "get_sliding_window",
                "clear_sliding_window"):
    setattr(LocalCounters, _method, inspect.unwrap(getattr(LocalCounters, _method)))


class CounterStore:
    """Where counters live: a `redis://` (or `rediss://`) URL, or this process's memory. The
    Redis connection pool is ours, so that shutdown can close it."""

    def __init__(self, url: str = "") -> None:
        self._pool: redis.asyncio.ConnectionPool | None = None
        self.storage: Storage | None = None
        self.local: LocalCounters | None = None
        if url:
            self._pool = redis.asyncio.ConnectionPool.from_url(
                url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT)
            store = storage_from_string("async+" + url, implementation="redispy",
                                        connection_pool=self._pool)  # type: ignore[arg-type]
            assert isinstance(store, Storage)
            self.storage = store
        else:
            self.local = LocalCounters()

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.disconnect()


class Verdict(NamedTuple):
    """The outcome for the tightest limit: `retry_after` is None when allowed. (A named tuple:
    a frozen dataclass took a microsecond to build, and a check builds one per limit.)"""

    limit: int
    remaining: int
    reset: int
    retry_after: int | None = None
    name: str = ""


class RateLimiter:
    """One or more limits (e.g. "5/minute;50/day") applied together to each key."""

    def __init__(self, spec: str, namespace: str, store: CounterStore) -> None:
        self.items = limit_items(spec)
        self.namespace = namespace
        self._counters = store.local
        self._remote = AsyncSlidingWindow(store.storage) if store.storage is not None else None
        self._refusals = RATELIMIT_HITS.labels(namespace)

    async def hit(self, key: str) -> int | None:
        """Count one request for `key`: None when allowed, else the seconds to wait."""
        return (await self.check(key)).retry_after

    async def check(self, key: str, items: list[RateLimitItem] | None = None,
                    stats: bool = True) -> Verdict:
        """Count one request against each limit in turn; `items` override the defaults. Each
        count is atomic (with Redis, one script), so concurrent requests cannot all slip
        through. The limit that refuses does not count the request; the limits before it in
        `items` already have. With `stats`, the verdict of an allowed request carries what the
        RateLimit-* headers need (with Redis one more store call per limit; in memory it comes
        with the count); a refusal always does."""
        items = items or self.items
        if self._counters is not None:
            return self._check_local(self._counters, key, items, stats)
        assert self._remote is not None
        tightest = Verdict(0, 0, 0, name=self.namespace)
        try:
            for item in items:
                allowed = await self._remote.hit(item, self.namespace, key)
                if allowed and not stats:
                    continue
                window = await self._remote.get_window_stats(item, self.namespace, key)
                if not allowed:
                    self._refusals.inc()
                    return self._verdict(item, window, refused=True)
                if not tightest.limit or window.remaining < tightest.remaining:
                    tightest = self._verdict(item, window, refused=False)
            return tightest
        except Exception as exc:  # the counter store is down: fail open, loudly
            log.warning("rate-limit store failed for %s; request let through: %s",
                        self.namespace, type(exc).__name__)
            return Verdict(0, 0, 0, name=self.namespace)

    def _check_local(self, counters: LocalCounters, key: str, items: list[RateLimitItem],
                     stats: bool) -> Verdict:
        """`check` with the counters in this process's memory: one pass per limit
        (`LocalCounters.hit_sliding`), the same counts and the same verdict."""
        namespace = self.namespace
        tightest: tuple[int, int, int] | None = None  # limit, remaining, reset
        try:
            for item in items:
                outcome = counters.hit_sliding(item, namespace, key, stats)
                if outcome is None:
                    continue
                allowed, remaining, reset = outcome
                if not allowed:
                    self._refusals.inc()
                    return Verdict(item.amount, 0, reset, reset, namespace)
                if tightest is None or not tightest[0] or remaining < tightest[1]:
                    tightest = item.amount, remaining, reset
            if tightest is None:
                return Verdict(0, 0, 0, name=namespace)
            return Verdict(*tightest, name=namespace)
        except Exception as exc:  # cannot happen in memory; fail open as with Redis
            log.warning("rate-limit store failed for %s; request let through: %s",
                        namespace, type(exc).__name__)
            return Verdict(0, 0, 0, name=namespace)

    def _verdict(self, item: RateLimitItem, window: WindowStats, refused: bool) -> Verdict:
        reset = max(1, math.ceil(window.reset_time - time.time()))
        if refused:
            return Verdict(item.amount, 0, reset, reset, self.namespace)
        return Verdict(item.amount, window.remaining, reset, name=self.namespace)


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
            items = self._parsed[marker] = limit_items(f"{merged['hourly']};{merged['burst']}")
        return items
