"""SSRF hardening of outbound fetches: refused before any connection is made."""

from __future__ import annotations

import ipaddress

import pytest

from authserver.clock import FakeClock
from authserver.config import OutboundSettings
from authserver.outbound import JsonFetcher, OutboundError, address_allowed
from tests.jwks_server import StaticServer

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
     "0.0.0.0", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "224.0.0.1"],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not address_allowed(ipaddress.ip_address(address), loopback=False)


def test_public_addresses_are_allowed() -> None:
    assert address_allowed(ipaddress.ip_address("93.184.216.34"), loopback=False)
    assert address_allowed(ipaddress.ip_address("127.0.0.1"), loopback=True)
    assert not address_allowed(ipaddress.ip_address("10.0.0.1"), loopback=True)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://93.184.216.34/jwks", "only https"),
        ("ftp://example.com/jwks", "only https"),
        ("https://127.0.0.1/jwks", "may not be fetched"),
        ("https://localhost/jwks", "may not be fetched"),
        ("https://10.0.0.5/jwks", "may not be fetched"),
        ("https://[::1]/jwks", "may not be fetched"),
        ("https://user:pw@93.184.216.34/jwks", "credentials"),
    ],
)
async def test_refused_urls(url: str, message: str) -> None:
    fetcher = JsonFetcher(OutboundSettings(), FakeClock())
    try:
        with pytest.raises(OutboundError, match=message):
            await fetcher.get(url)
    finally:
        await fetcher.aclose()


async def test_redirects_size_and_content_are_checked() -> None:
    settings = OutboundSettings(allow_loopback_http=True, max_bytes=2048)
    fetcher = JsonFetcher(settings, FakeClock())
    with StaticServer() as web:
        try:
            moved = web.put("/moved", b"", status=302, location="http://127.0.0.1:1/x")
            with pytest.raises(OutboundError, match="redirect"):
                await fetcher.get(moved)
            big = web.put("/big", b'{"a":"' + b"x" * 5000 + b'"}')
            with pytest.raises(OutboundError, match="larger"):
                await fetcher.get(big)
            bad = web.put("/bad", b"<html>")
            with pytest.raises(OutboundError, match="not JSON"):
                await fetcher.get(bad)
            array = web.put("/array", b"[1]")
            with pytest.raises(OutboundError, match="object"):
                await fetcher.get(array)
            missing = web.url + "/missing"
            with pytest.raises(OutboundError, match="404"):
                await fetcher.get(missing)
            ok = web.put("/ok", b'{"keys": []}', **{"cache-control": "max-age=5"})
            assert await fetcher.get(ok) == {"keys": []}
            assert await fetcher.get(ok) == {"keys": []}
            assert web.hits["/ok"] == 1  # cached (min_cache_seconds applies)
        finally:
            await fetcher.aclose()


@pytest.mark.parametrize(
    "address",
    ["64:ff9b::a9fe:a9fe", "64:ff9b:1::a00:1", "2002:7f00:1::", "::7f00:1", "::ffff:0:7f00:1",
     "fec0::1", "2001:0:4136:e378::1"],
)
def test_ipv6_spellings_of_private_ipv4_are_refused(address: str) -> None:
    assert not address_allowed(ipaddress.ip_address(address), loopback=False)


def test_global_ipv6_is_allowed() -> None:
    assert address_allowed(ipaddress.ip_address("2606:4700::1111"), loopback=False)


async def test_total_timeout_and_failure_cache() -> None:
    import socket
    import threading
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = server.accept()
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
        while not stop.wait(0.3):
            try:
                conn.sendall(b" ")
            except OSError:
                break
        conn.close()

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    clock = FakeClock()
    fetcher = JsonFetcher(OutboundSettings(allow_loopback_http=True, timeout=1.0), clock)
    url = f"http://127.0.0.1:{server.getsockname()[1]}/jwks"
    started = time.monotonic()
    with pytest.raises(OutboundError, match="timed out"):
        await fetcher.get(url)
    assert time.monotonic() - started < 3  # the whole fetch, not each read
    with pytest.raises(OutboundError, match="timed out"):
        await fetcher.get(url)  # answered from the failure cache, no new connection
    stop.set()
    server.close()
    thread.join(timeout=5)


@pytest.mark.parametrize("host", ["a" * 64 + ".example", "a..b.example"])
async def test_malformed_host_names_are_refused(host: str) -> None:
    fetcher = JsonFetcher(OutboundSettings(), FakeClock())
    with pytest.raises(OutboundError, match="resolve"):
        await fetcher.get(f"https://{host}/jwks")
