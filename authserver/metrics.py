"""Prometheus metrics of the process (docs/observability.md).

The metrics are process-wide, as a Prometheus exposition is: one registry per process (or, with
`PROMETHEUS_MULTIPROC_DIR` set before start, per directory shared by the workers). Values that
are read, not counted (key ages, event lag, cache sizes), are computed at scrape time by the
collector of `web.observability`, from the services of one app.

Hot paths never call `.labels()` (a lock and a tuple hash each, ~1.2 µs): they keep the label
children they need, bound once (`bound`), and pay one `inc` or `observe` (~0.4 / ~0.9 µs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
)
from prometheus_client.metrics import MetricWrapperBase

REGISTRY = CollectorRegistry(auto_describe=True)
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

# Seconds; forward-auth decisions take ~50 µs in process, a token ~1 ms (RS256), admin pages more.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)

TOKENS_ISSUED = Counter(
    "authserver_tokens_issued", "Access tokens issued, by client (the first "
    "metrics.client_labels clients seen by this process; the rest as \"other\") and grant type.",
    ["client_id", "grant_type"], registry=REGISTRY)
TOKEN_FAILURES = Counter(
    "authserver_token_failures", "Token requests refused, by RFC 6749 error code.",
    ["error"], registry=REGISTRY)
HTTP_DURATION = Histogram(
    "authserver_http_request_duration_seconds", "Time to answer an HTTP request, by route "
    "template (\"unmatched\" for unknown paths), method and status.",
    ["route", "method", "status"], buckets=LATENCY_BUCKETS, registry=REGISTRY)
RATELIMIT_HITS = Counter(
    "authserver_ratelimit_hits", "Requests refused by a rate limit, by limiter.",
    ["limiter"], registry=REGISTRY)
FORWARD_AUTH_DECISIONS = Counter(
    "authserver_forward_auth_decisions", "Forward-auth decisions, by outcome: \"allowed\", or "
    "the error code of the refusal.", ["outcome"], registry=REGISTRY)

UNMATCHED_ROUTE = "unmatched"
OTHER = "other"
# Methods a client may send are unbounded; anything else is counted as "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

M = TypeVar("M", bound=MetricWrapperBase)
K = TypeVar("K")


class bound(Generic[K, M]):
    """Label children of one metric, bound on first use and kept: `children[key].inc()`.
    `labels` maps the key to the label values. Only for keys from a bounded set."""

    __slots__ = ("_children", "_labels", "_metric")

    def __init__(self, metric: M, labels: Callable[[K], tuple[str, ...]]) -> None:
        self._metric = metric
        self._labels = labels
        self._children: dict[K, M] = {}

    def __getitem__(self, key: K) -> M:
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._metric.labels(*self._labels(key))
        return child


def _http_labels(key: tuple[str, str, int]) -> tuple[str, str, str]:
    route, method, status = key
    return route, method if method in METHODS else OTHER, str(status)


class HttpTimer:
    """`observe(route, method, status, seconds)` with children cached per label set (routes
    and statuses are bounded; unknown methods fold into "other" before the cache)."""

    __slots__ = ("_children",)

    def __init__(self) -> None:
        self._children: bound[tuple[str, str, int], Histogram] = bound(HTTP_DURATION,
                                                                        _http_labels)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        if method not in METHODS:
            method = OTHER
        self._children[route, method, status].observe(seconds)


HTTP = HttpTimer()


class IssuedTokens:
    """`authserver_tokens_issued_total` with at most `limit` distinct client labels per
    process: the first `limit` clients seen get their own, every later one counts as
    "other" (clients can number 100,000; a series each would swamp Prometheus)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._children: dict[tuple[str, str], Counter] = {}
        self._clients: set[str] = set()

    def inc(self, client_id: str, grant_type: str) -> None:
        child = self._children.get((client_id, grant_type))
        if child is None:
            child = self._bind(client_id, grant_type)
        child.inc()

    def _bind(self, client_id: str, grant_type: str) -> Counter:
        if client_id not in self._clients and len(self._clients) >= self.limit:
            other = (OTHER, grant_type)
            child = self._children.get(other)
            if child is None:
                child = self._children[other] = TOKENS_ISSUED.labels(OTHER, grant_type)
            return child
        self._clients.add(client_id)
        child = self._children[client_id, grant_type] = TOKENS_ISSUED.labels(client_id,
                                                                             grant_type)
        return child


def _one(value: str) -> tuple[str]:
    return (value,)


TOKEN_FAILURE: bound[str, Counter] = bound(TOKEN_FAILURES, _one)  # by OAuth error code
FORWARD_AUTH: bound[str, Counter] = bound(FORWARD_AUTH_DECISIONS, _one)  # by outcome
