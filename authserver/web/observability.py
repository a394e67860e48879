"""`/metrics` (Prometheus), `/healthz` and `/readyz` (docs/observability.md)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import Response

from authserver import metrics
from authserver.cache import VersionedCache
from authserver.clock import Clock
from authserver.config import Settings
from authserver.errors import ApiError
from authserver.keyring import Keyring
from authserver.storage.db import Database
from authserver.web.middleware import client_address, in_networks

log = logging.getLogger("authserver.observability")
METRICS_PATH = "/metrics"
HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
NO_STORE = {"cache-control": "no-store"}
# A readiness probe answers within about this long, even when the database hangs.
DB_CHECK_TIMEOUT = 2.0
# The migration check reads Alembic's scripts (~tens of ms): cached this long once current,
# and this long while not (so `authserver migrate` is noticed soon).
MIGRATIONS_CURRENT_TTL = 300.0
MIGRATIONS_PENDING_TTL = 5.0


@dataclass
class RuntimeState:
    """What the scrape-time collector reads from one running app."""

    clock: Clock
    keyring: Keyring
    last_poll_ok: Callable[[], float]
    revocation_stale: Callable[[], bool]
    caches: dict[str, VersionedCache[Any]]


class RuntimeCollector(Collector):
    """Gauges computed at scrape time: signing key ages, event log lag, cache state."""

    def __init__(self, state: RuntimeState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        s = self.state
        now = s.clock.now()
        ages = GaugeMetricFamily(
            "authserver_signing_key_age_seconds",
            "Age of each signing key still in the keys directory, by kid and lifecycle state.",
            labels=["kid", "state"])
        for view in s.keyring.snapshot(now).views:
            ages.add_metric([view.kid, view.state], max(0.0, now - view.created_at))
        yield ages
        last = s.last_poll_ok()
        yield GaugeMetricFamily(
            "authserver_event_lag_seconds",
            "Seconds since this process last read the event log successfully (the age of "
            "its view of revocations and client changes; cache.max_staleness is the bound).",
            value=max(0.0, now - last) if last else float("nan"))
        yield GaugeMetricFamily(
            "authserver_revocation_stale",
            "1 while the in-memory deny-list may be stale (event log unreadable for longer "
            "than cache.max_staleness) and lookups go to the store.",
            value=1.0 if s.revocation_stale() else 0.0)
        hits = CounterMetricFamily("authserver_cache_hits", "In-process cache hits, by cache.",
                                   labels=["cache"])
        misses = CounterMetricFamily("authserver_cache_misses",
                                     "In-process cache misses (a store read), by cache.",
                                     labels=["cache"])
        for name, cache in s.caches.items():
            hits.add_metric([name], cache.hits)
            misses.add_metric([name], cache.misses)
        yield hits
        yield misses


class _Forward(Collector):
    """The process-wide registry, as one collector of the app's."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


def exposition_registry(state: RuntimeState) -> CollectorRegistry:
    """This app's view: the process's metrics (or, under PROMETHEUS_MULTIPROC_DIR, every
    worker's, summed) plus the scrape-time gauges of this process."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Forward(metrics.REGISTRY))
    registry.register(RuntimeCollector(state))
    return registry


class MetricsEndpoint:
    """`GET /metrics`: from an address in `metrics.allow_from` (judged after
    `server.trusted_proxies`, so a request through the public proxy counts as its client's),
    or with the bearer token whose SHA-256 is `metrics.bearer_token_sha256`."""

    def __init__(self, settings: Settings, state: RuntimeState) -> None:
        self.trusted = [ipaddress.ip_network(c, strict=False)
                        for c in settings.server.trusted_proxies]
        self.allowed = [ipaddress.ip_network(c, strict=False)
                        for c in settings.metrics.allow_from]
        self.digest = bytes.fromhex(settings.metrics.bearer_token_sha256)
        self.registry = exposition_registry(state)

    def permitted(self, request: Request) -> bool:
        address = client_address(request.scope, self.trusted)
        if address is not None and in_networks(address, self.allowed):
            return True
        kind, _, token = request.headers.get("authorization", "").partition(" ")
        if self.digest and kind.lower() == "bearer" and token.strip():
            presented = hashlib.sha256(token.strip().encode()).digest()
            return hmac.compare_digest(presented, self.digest)
        return False

    async def metrics(self, request: Request) -> Response:
        if not self.permitted(request):
            raise ApiError(403, "permission_error", "metrics_forbidden",
                           "Metrics are readable from metrics.allow_from or with the "
                           "metrics bearer token only")
        # The text format Prometheus asks for (Accept), OpenMetrics included.
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        body = await anyio.to_thread.run_sync(encode, self.registry)
        return Response(body, 200, NO_STORE, content_type)


@dataclass
class _Cached:
    ok: bool = False
    detail: str = ""
    at: float = float("-inf")


class Health:
    """`/healthz`: the process serves. `/readyz`: it can do its job — the database answers,
    a signing key is active, no migration is pending."""

    def __init__(self, db: Database, keyring: Keyring, clock: Clock) -> None:
        self.db = db
        self.keyring = keyring
        self.clock = clock
        self._migrations = _Cached()
        self._migration_lock = anyio.Lock()

    async def healthz(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', 200, NO_STORE, "application/json")

    async def readyz(self, request: Request) -> Response:
        checks: dict[str, dict[str, str]] = {}
        database = await self._database()
        checks["database"] = _check(*database)
        signer = self.keyring.snapshot(self.clock.now()).signer
        checks["signing_key"] = _check(signer is not None, "" if signer else
                                       "no signing key is active")
        if database[0]:
            checks["migrations"] = _check(*await self._migrations_current())
        else:
            checks["migrations"] = _check(False, "unknown: the database is unreachable")
        ready = all(c["status"] == "ok" for c in checks.values())
        body = {"status": "ok" if ready else "unavailable", "checks": checks}
        return Response(orjson.dumps(body), 200 if ready else 503, NO_STORE,
                        "application/json")

    async def _database(self) -> tuple[bool, str]:
        with anyio.move_on_after(DB_CHECK_TIMEOUT):
            try:
                await anyio.to_thread.run_sync(self._select_one, abandon_on_cancel=True)
            except Exception as exc:
                log.warning("readiness: database check failed: %s", type(exc).__name__)
                return False, f"unreachable ({type(exc).__name__})"
            return True, ""
        return False, f"no answer within {DB_CHECK_TIMEOUT:g} s"

    def _select_one(self) -> None:
        with self.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    async def _migrations_current(self) -> tuple[bool, str]:
        async with self._migration_lock:  # one check at a time; the others read its result
            cached = self._migrations
            ttl = MIGRATIONS_CURRENT_TTL if cached.ok else MIGRATIONS_PENDING_TTL
            if time.monotonic() - cached.at < ttl:
                return cached.ok, cached.detail
            with anyio.move_on_after(DB_CHECK_TIMEOUT * 5):
                try:
                    pending = await anyio.to_thread.run_sync(self.db.pending_migrations,
                                                             abandon_on_cancel=True)
                except Exception as exc:
                    log.warning("readiness: migration check failed: %s", type(exc).__name__)
                    return False, f"could not be checked ({type(exc).__name__})"
                self._migrations = _Cached(
                    not pending, "pending: run `authserver migrate`" if pending else "",
                    time.monotonic())
                return self._migrations.ok, self._migrations.detail
            return False, "the check did not finish in time"


def _check(ok: bool, detail: str) -> dict[str, str]:
    return {"status": "ok"} if ok else {"status": "failed", "detail": detail}
