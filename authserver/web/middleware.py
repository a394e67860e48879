"""Pure ASGI middleware and request helpers."""

from __future__ import annotations

import functools
import ipaddress
import itertools
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Sequence

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from authserver.logs import REQUEST_ID
from authserver.metrics import HTTP, UNMATCHED_ROUTE

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Request ids need to be unique, not unpredictable: a random per-process prefix and a counter
# cost nothing, where secrets.token_hex(8) took 0.45 µs, about 1% of a JWKS request (bench/).
_ID_PREFIX = secrets.token_hex(4)
_ID_COUNTER = itertools.count(1)


def _new_id_sequence() -> None:
    """A forked worker (e.g. gunicorn --preload) must not repeat its parent's ids."""
    global _ID_PREFIX, _ID_COUNTER
    _ID_PREFIX = secrets.token_hex(4)
    _ID_COUNTER = itertools.count(1)


os.register_at_fork(after_in_child=_new_id_sequence)


def assign_request_id(scope: Scope, incoming: bytes | None = None) -> str:
    """The request's id, kept in `scope["state"]`: a sane incoming `X-Request-Id`, or a new one.
    `incoming`: the first `X-Request-Id` value, when the caller has already looked for it
    (forward-auth reads its headers once); else the headers are searched here."""
    if incoming is None:
        for name, value in scope["headers"]:  # a plain loop: on every request
            if name == b"x-request-id":
                incoming = value
                break
    rid = ""
    if incoming is not None:
        sent: str = incoming.decode("latin-1")
        rid = sent if _SAFE_ID.match(sent) else ""
    if not rid:
        rid = f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"
    scope.setdefault("state", {})["request_id"] = rid
    return rid


class RequestIdMiddleware:
    """Gives each request an id (or keeps a sane incoming `X-Request-Id`), echoes it, makes it
    reach log records (`logs.REQUEST_ID`), and times the request for
    `authserver_http_request_duration_seconds` by the route the router matched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = assign_request_id(scope)
        header = (b"x-request-id", rid.encode())
        status = 500  # unless a response starts: an exception escaped to ServerErrorMiddleware

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        token = REQUEST_ID.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
            HTTP.observe(route_template(scope), scope["method"], status,
                         time.perf_counter() - start)


def route_template(scope: Scope) -> str:
    """The path template of the route the router matched (`/api/v1/clients/{client_id}`),
    never the raw path, so the label set stays bounded; one label for every unknown path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_address(scope: Scope, trusted: Sequence[Network]) -> str | None:
    """The caller's address: the peer, or — when the peer is a trusted proxy — the rightmost
    X-Forwarded-For entry that is not itself a trusted proxy."""
    client = scope.get("client")
    peer = client[0] if client else None
    if not trusted or peer is None or not in_networks(peer, trusted):
        return peer
    forwarded = Headers(scope=scope).getlist("x-forwarded-for")
    return forwarded_client(peer, forwarded, lambda hop: in_networks(hop, trusted))


def forwarded_client(peer: str, forwarded: Iterable[str], trusted: Callable[[str], bool]
                     ) -> str | None:
    """`client_address` once the peer is known to be a trusted proxy: the rightmost entry of
    the X-Forwarded-For values `forwarded` (in the order sent) that is not itself trusted."""
    hops = [_host(hop) for value in forwarded for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        if hop is None or not trusted(hop):
            return hop
    return hops[0] if hops and hops[0] else peer


@functools.lru_cache(maxsize=4096)
def _host(hop: str) -> str | None:
    """An X-Forwarded-For entry as a bare IP: some balancers append a port (`1.2.3.4:5678`,
    `[2001:db8::1]:443`). None for anything that is not an address."""
    hop = hop.strip()
    candidates = [hop]
    if hop.startswith("["):
        candidates.append(hop[1:].partition("]")[0])
    elif hop.count(":") == 1:
        candidates.append(hop.partition(":")[0])
    for candidate in candidates:
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            continue
    return None


def in_networks(address: str, networks: Sequence[Network]) -> bool:
    return _in_networks(address, tuple(networks))


@functools.lru_cache(maxsize=4096)
def _in_networks(address: str, networks: tuple[Network, ...]) -> bool:
    """Cached: the same few proxy and client addresses come again and again (parsing one
    with `ipaddress` costs microseconds on every request)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)
