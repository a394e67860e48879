"""SSRF-hardened fetching of JSON documents named by clients (a client's `jwks_uri`).

https only (http and loopback only under `outbound.allow_loopback_http`), every resolved address
must be public, the connection goes to the address that was checked (no second DNS lookup to
rebind), no redirects, a size and a time limit, and results cached within bounds.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx

from authserver.clock import Clock
from authserver.config import OutboundSettings

_MAX_AGE = re.compile(r"max-age=(\d+)")
FAILURE_CACHE_SECONDS = 30.0


class OutboundError(Exception):
    """A fetch was refused or failed; the message is safe to show to the client's owner."""


@dataclass(frozen=True, slots=True)
class _Cached:
    value: dict[str, Any]
    fetched_at: float
    expires_at: float


_GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")
# Inside 2000::/3 but carrying an IPv4 address that could be private: 6to4 and Teredo.
_TUNNELS_V6 = (ipaddress.ip_network("2002::/16"), ipaddress.ip_network("2001::/32"))


def address_allowed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, loopback: bool) -> bool:
    """Public unicast only. IPv6 must be global unicast (2000::/3) and not a tunnel form, so
    NAT64, v4-compatible, v4-mapped and site-local spellings of private IPv4 are refused."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return address_allowed(ip.ipv4_mapped, loopback)
        if ip.is_loopback:
            return loopback
        return (ip in _GLOBAL_UNICAST_V6 and ip.is_global
                and not any(ip in net for net in _TUNNELS_V6))
    if ip.is_loopback:
        return loopback
    return ip.is_global and not ip.is_multicast


class JsonFetcher:
    def __init__(self, settings: OutboundSettings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self._cache: dict[str, _Cached] = {}
        self._failures: dict[str, tuple[float, str]] = {}

    async def aclose(self) -> None:
        """Nothing pooled to close: every fetch has its own connection (see `_fetch`)."""

    def fetched_at(self, url: str) -> float | None:
        """When the cached copy of `url` was fetched (None: not cached)."""
        entry = self._cache.get(url)
        return None if entry is None else entry.fetched_at

    async def get(self, url: str, *, refresh: bool = False) -> dict[str, Any]:
        now = self.clock.now()
        entry = self._cache.get(url)
        if entry is not None and not refresh and now < entry.expires_at:
            return entry.value
        failed = self._failures.get(url)
        if failed is not None and now < failed[0]:
            raise OutboundError(failed[1])
        try:
            with anyio.fail_after(self.settings.timeout):
                value, max_age = await self._fetch(url)
        except TimeoutError:
            self._remember_failure(url, now, "fetch timed out")
            raise OutboundError("fetch timed out") from None
        except OutboundError as exc:
            self._remember_failure(url, now, str(exc))
            raise
        self._failures.pop(url, None)
        ttl = min(max(max_age, self.settings.min_cache_seconds), self.settings.max_cache_seconds)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[url] = _Cached(value, now, now + ttl)
        return value

    def _remember_failure(self, url: str, now: float, message: str) -> None:
        """Do not let every request that names a broken URL trigger a new fetch."""
        if len(self._failures) > 10_000:
            self._failures.clear()
        self._failures[url] = (now + FAILURE_CACHE_SECONDS, message)

    async def _resolve(self, host: str, port: int) -> str:
        loopback_ok = self.settings.allow_loopback_http
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
            candidates = [literal]
        except ValueError:
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (OSError, UnicodeError, ValueError) as exc:  # UnicodeError: bad IDNA label
                raise OutboundError("cannot resolve the host name") from exc
            candidates = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        if not candidates or not all(address_allowed(ip, loopback_ok) for ip in candidates):
            raise OutboundError(f"{host} resolves to an address that may not be fetched")
        chosen = candidates[0]
        return f"[{chosen}]" if chosen.version == 6 else str(chosen)

    async def _fetch(self, url: str) -> tuple[dict[str, Any], int]:
        parts = urlsplit(url)
        dev = self.settings.allow_loopback_http
        if parts.scheme != "https" and not (dev and parts.scheme == "http"):
            raise OutboundError("only https URLs are fetched")
        if not parts.hostname or parts.username or parts.password:
            raise OutboundError("the URL must name a host and carry no credentials")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = await self._resolve(parts.hostname, port)
        target = urlunsplit((parts.scheme, f"{address}:{port}", parts.path or "/", parts.query, ""))
        extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
        headers = {"Host": parts.netloc, "Accept": "application/json"}
        limit = self.settings.max_bytes
        # A client per fetch: a pooled connection keyed by IP would skip the certificate check
        # for a second host name on the same address.
        try:
            async with httpx.AsyncClient(
                follow_redirects=False, timeout=self.settings.timeout, trust_env=False
            ) as client, client.stream(
                "GET", target, headers=headers, extensions=extensions
            ) as response:
                if response.is_redirect:
                    raise OutboundError("redirects are not followed")
                if response.status_code != 200:
                    raise OutboundError(f"answered HTTP {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body.extend(chunk)
                    if len(body) > limit:
                        raise OutboundError(f"response larger than {limit} bytes")
                cache_control = response.headers.get("cache-control", "")
        except httpx.HTTPError as exc:
            raise OutboundError(f"fetch failed: {type(exc).__name__}") from exc
        try:
            value = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise OutboundError("response is not JSON") from exc
        if not isinstance(value, dict):
            raise OutboundError("response is not a JSON object")
        match = _MAX_AGE.search(cache_control)
        no_store = "no-store" in cache_control or "no-cache" in cache_control
        max_age = 0 if no_store else int(match.group(1)) if match else 300
        return value, max_age
