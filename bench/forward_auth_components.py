"""In-process cost of each step of a forward-auth decision, in microseconds per call, a cProfile
of the whole ASGI call, and the per-decision budget of the server core built from them.

Like `components.py`: no sockets and no sampling; each step is called in a loop on the real
objects of `authserver.wiring.create_app` (after its lifespan started), pinned to one core by
the caller (bench/run.sh runs it on the server core once the servers are stopped):

    python bench/forward_auth_components.py --config CONFIG.toml --key API_KEY
        [--token JWT] [--rps-key N] [--rps-jwt N] [--profile-calls 20000]
    python bench/forward_auth_components.py --config CONFIG.toml --token JWT [--rps-jwt N]

The config must list 127.0.0.1 in `server.trusted_proxies`; API_KEY must hold invoices.read and
JWT carry the scope invoices.read (run.sh makes both); with `--token` alone only the JWT table
is printed. The request is the scenario's: GET /forward-auth, X-Forwarded-Method GET,
X-Forwarded-Uri /api/v1/invoices/42, X-Forwarded-For 198.51.100.7, from 127.0.0.1. Each step
is timed with the rate limits as the server checks them; the counters grow as they would under
load (the limits are far above it).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop
from starlette.requests import Request
from starlette.responses import Response

from authserver import hashing
from authserver.apikeys.format import checksum_matches, key_shape
from authserver.apikeys.permissions import grants, required
from authserver.config import load_settings
from authserver.web.forward_auth import FORWARD_AUTH_PATH, ForwardAuth, checked_path
from authserver.web.middleware import forwarded_client
from authserver.wiring import create_app

sys.path.insert(0, str(Path(__file__).resolve().parent))
from components import _asgi_caller, _budget, _per_call_us, _per_call_us_async

URI = "/api/v1/invoices/42"
PEER = ("127.0.0.1", 50000)


def _headers(credential: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [(b"host", b"127.0.0.1:8000"), credential, (b"x-forwarded-method", b"GET"),
            (b"x-forwarded-uri", URI.encode()), (b"x-forwarded-for", b"198.51.100.7")]


def _request(headers: list[tuple[bytes, bytes]]) -> Request:
    return Request({
        "type": "http", "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": FORWARD_AUTH_PATH, "raw_path": FORWARD_AUTH_PATH.encode(), "root_path": "",
        "query_string": b"", "headers": headers, "client": PEER, "server": ("127.0.0.1", 8000),
        "state": {"request_id": "bench"},
    })


def _decide(fa: ForwardAuth, headers: list[tuple[bytes, bytes]]) -> Awaitable[object]:
    """`ForwardAuth.decide` as the fast path calls it: the headers read into a dict once."""
    return fa.decide(_request(headers).scope, {name: value for name, value in reversed(headers)})


async def _profile(call: Callable[[], Awaitable[object]], n: int) -> str:
    async def body() -> None:
        for _ in range(n):
            await call()

    profiler = cProfile.Profile()
    profiler.enable()
    await body()
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(25)
    lines = [line for line in text.getvalue().splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    return "\n".join(lines[start:]).replace(str(Path(sys.prefix)), "<venv>")


async def run(args: argparse.Namespace) -> list[str]:
    settings = load_settings(args.config)
    app = create_app(settings)
    rt = app.state.runtime
    t = args.seconds
    out: list[str] = []
    async with app.router.lifespan_context(app):
        fa = app.fast_paths[FORWARD_AUTH_PATH]
        assert isinstance(fa, ForwardAuth)
        m: dict[str, float] = {}
        if args.key:
            key_headers = _headers((b"x-api-key", args.key.encode()))
            key_call = _asgi_caller(app, "GET", FORWARD_AUTH_PATH, key_headers, b"")
            await key_call()  # loads the key into the cache
            scope = _request(key_headers).scope
            record = await rt.api_keys.authenticate(args.key, "198.51.100.7")
            sent = dict(reversed(key_headers))
            fa.original(scope, sent)  # a trusted peer and a valid request, or it raises
            rows: list[tuple[str, float]] = []

            m["asgi"] = await _per_call_us_async(key_call, t)
            rows.append(("ASGI app, GET /forward-auth with x-api-key (the fast path: request "
                         "id, decision, response)", m["asgi"]))
            m["check"] = await _per_call_us_async(lambda: _decide(fa, key_headers), t)
            rows.append(("ForwardAuth.decide (the decision alone, API key; with reading the "
                         "headers into a dict)", m["check"]))
            rows.append(("  part: ForwardAuth.original (trusted peer, method and URI, "
                         "checked_path, X-Forwarded-For)",
                         _per_call_us(lambda: fa.original(scope, sent), t)))
            rows.append(("    part: checked_path (a plain path)",
                         _per_call_us(lambda: checked_path(URI), t)))
            rows.append(("    part: forwarded_client (X-Forwarded-For through ipaddress)",
                         _per_call_us(lambda: forwarded_client(
                             PEER[0], ["198.51.100.7"], fa._trusted), t)))
            m["auth"] = await _per_call_us_async(
                lambda: rt.api_keys.authenticate(args.key, "198.51.100.7"), t)
            rows.append(("  part: ApiKeyAuthenticator.authenticate (cached record)", m["auth"]))
            rows.append(("    part: key_shape (regex)",
                         _per_call_us(lambda: key_shape(args.key, fa.prefix), t)))
            rows.append(("    part: hashing.digest (SHA-256)",
                         _per_call_us(lambda: hashing.digest(args.key), t)))
            rows.append(("    not a part: checksum_matches (CRC-32 in base62; once per distinct "
                         "key)", _per_call_us(lambda: checksum_matches(args.key), t)))
            items = rt.limits.key_items(record.rate_limits)
            m["key_limit"] = await _per_call_us_async(
                lambda: rt.limits.api_key.check(record.id, items), t)
            rows.append((f"  part: limits.api_key.check ({len(items or rt.limits.api_key.items)} "
                         "limits, counted with the window statistics)", m["key_limit"]))
            m["org_limit"] = await _per_call_us_async(
                lambda: rt.limits.organization.check(record.org_id, stats=False), t)
            rows.append(("  part: limits.organization.check (1 limit, no statistics)",
                         m["org_limit"]))
            counters = rt.limits.store.local
            item = rt.limits.organization.items[0]
            for stats in (True, False) if counters is not None else ():
                rows.append((f"    part: LocalCounters.hit_sliding (one limit, stats={stats})",
                             _per_call_us(lambda s=stats: counters.hit_sliding(
                                 item, "organization", record.org_id, s), t)))
            rows.append(("  part: required + grants (permission check)", _per_call_us(
                lambda: grants(frozenset(record.permissions), *required("GET", URI)) or 1, t)))
            rows.append(("  part: UsageCounters.count", _per_call_us(
                lambda: rt.counters.count(record.id, record.org_id, "read", rt.clock.now(),
                                          api_key=True), t)))
            identity = {name: "x" * 20 for name in ("x-auth-org-id", "x-auth-api-key-id",
                                                    "x-auth-environment", "x-auth-permissions",
                                                    "x-auth-client-id", "x-auth-subject",
                                                    "x-auth-scopes", "ratelimit-limit",
                                                    "ratelimit-remaining", "ratelimit-reset",
                                                    "cache-control")}
            rows.append(("  part: Response(b'', 200, 11 headers), for comparison",
                         _per_call_us(lambda: Response(b"", 200, identity), t)))
            out.append("| step (in-process, one core; `part` rows are inside the row above them) "
                       "| µs per call |\n|---|---:|")
            out += [f"| {name} | {us:.1f} |" for name, us in rows]
            if args.rps_key:
                total = 1e6 / args.rps_key
                out += ["", f"Budget of one decision, API key, at the measured {args.rps_key:,.0f} "
                        "decisions/s:", ""]
                out += _budget(total, [
                    ("rate limits: api_key (2 limits) + organization (1 limit)",
                     m["key_limit"] + m["org_limit"]),
                    ("key check: authenticate (parse, cache, SHA-256, state, allowlist)",
                     m["auth"]),
                    ("rest of ForwardAuth.decide (original request, permission, headers, "
                     "usage)", m["check"] - m["key_limit"] - m["org_limit"] - m["auth"]),
                    ("ASGI fast path: request id, response messages, metrics",
                     m["asgi"] - m["check"]),
                    ("HTTP server + kernel (uvicorn, httptools, uvloop, TCP loopback)",
                     total - m["asgi"]),
                ])
            out += ["", f"cProfile of {args.profile_calls:,} ASGI calls, API key (top 25 by own "
                    "time; cProfile inflates small calls):", "", "```",
                    await _profile(key_call, args.profile_calls), "```"]

        if args.token:
            jwt_headers = _headers((b"authorization", f"Bearer {args.token}".encode()))
            jwt_call = _asgi_caller(app, "GET", FORWARD_AUTH_PATH, jwt_headers, b"")
            await jwt_call()
            inspector = rt.revocation.inspector
            claims = await inspector.active(args.token)
            assert claims is not None
            j: list[tuple[str, float]] = []
            m["jwt_asgi"] = await _per_call_us_async(jwt_call, t)
            j.append(("ASGI app, GET /forward-auth with a bearer JWT", m["jwt_asgi"]))
            m["jwt_check"] = await _per_call_us_async(lambda: _decide(fa, jwt_headers), t)
            j.append(("ForwardAuth.decide (the decision alone, JWT)", m["jwt_check"]))
            m["active"] = await _per_call_us_async(lambda: inspector.active(args.token), t)
            j.append(("  part: TokenInspector.active (signature, claims, client, deny-list)",
                      m["active"]))
            j.append(("    part: TokenInspector.verified (keyring snapshot, JWS verify)",
                      _per_call_us(lambda: inspector.verified(args.token), t)))
            client_id = str(claims["client_id"])
            m["jwt_limits"] = await _per_call_us_async(
                lambda: rt.limits.client.check(client_id, None), t)
            j.append(("  part: limits.client.check (2 limits)", m["jwt_limits"]))
            org_id = str(claims.get("org_id", ""))
            m["jwt_org"] = await _per_call_us_async(
                lambda: rt.limits.organization.check(org_id, stats=False), t)
            j.append(("  part: limits.organization.check (1 limit, no statistics)",
                      m["jwt_org"]))
            out += ["", "| step, bearer JWT | µs per call |", "|---|---:|"]
            out += [f"| {name} | {us:.1f} |" for name, us in j]
            if args.rps_jwt:
                total = 1e6 / args.rps_jwt
                out += ["", f"Budget of one decision, JWT, at the measured {args.rps_jwt:,.0f} "
                        "decisions/s:", ""]
                out += _budget(total, [
                    ("token check: TokenInspector.active (signature, claims, client, "
                     "deny-list)", m["active"]),
                    ("rate limits: client (2 limits) + organization (1 limit)",
                     m["jwt_limits"] + m["jwt_org"]),
                    ("rest of ForwardAuth.decide", m["jwt_check"] - m["active"]
                     - m["jwt_limits"] - m["jwt_org"]),
                    ("ASGI fast path: request id, response messages, metrics",
                     m["jwt_asgi"] - m["jwt_check"]),
                    ("HTTP server + kernel (uvicorn, httptools, uvloop, TCP loopback)",
                     total - m["jwt_asgi"]),
                ])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--key", help="an API key with invoices.read")
    parser.add_argument("--token", help="an access token with the scope invoices.read")
    parser.add_argument("--seconds", type=float, default=0.5, help="length of one round")
    parser.add_argument("--rps-key", type=float, default=0.0)
    parser.add_argument("--rps-jwt", type=float, default=0.0)
    parser.add_argument("--profile-calls", type=int, default=20000)
    args = parser.parse_args()
    if not args.key and not args.token:
        parser.error("--key, --token or both")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        print("\n".join(runner.run(run(args))))


if __name__ == "__main__":
    main()
