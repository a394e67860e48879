"""In-process cost of each layer of the token and JWKS paths, in microseconds per call, and the
per-request CPU budget of the server core built from them.

No sockets and no sampling: each layer is called in a loop on the real objects built by
`authserver.wiring.create_app` (after its lifespan started), so the differences between rows are
the cost of one layer. Run pinned to one core with nothing else busy (bench/run.sh does):

    python bench/components.py --config CONFIG.toml --basic BASE64 [--rps-token N --rps-jwks N]

With --rps-* (the measured wrk medians) it also prints a budget: the per-request time of the
saturated server core (1e6 / req/s) split into nested layers by subtraction (signature, JWS
assembly, claims, client auth, endpoint + Starlette, HTTP server + kernel). This is the
profile that does not depend on a sampler's view of native code and syscalls.
`forward_auth_components.py` does the same for forward-auth decisions.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from authserver.config import load_settings
from authserver.oauth.client_auth import extract_credentials
from authserver.oauth.token import TokenRequest
from authserver.ratelimit import rate_key
from authserver.tokens import mint_access_token
from authserver.web.forms import check_form_type, parse_form
from authserver.wiring import create_app

ROUNDS = 7


def _fastest(batch: Callable[[int], float], seconds: float) -> float:
    """Fastest of ROUNDS rounds (mean µs per call), each round about `seconds` long: the
    minimum is the estimate least disturbed by other work on the machine. `batch(n)` makes n
    calls and returns the elapsed seconds."""
    n = 1
    while (elapsed := batch(n)) <= seconds / 4:  # calibrate
        n *= 2
    n = max(1, int(n * seconds / elapsed))
    return min(batch(n) / n * 1e6 for _ in range(ROUNDS))


def _per_call_us(fn: Callable[[], object], seconds: float) -> float:
    def batch(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return time.perf_counter() - start

    return _fastest(batch, seconds)


async def _per_call_us_async(fn: Callable[[], Awaitable[object]], seconds: float) -> float:
    """As `_per_call_us`, for coroutines: the timed loops run in this event loop."""
    n = 1
    while (elapsed := await _async_batch(fn, n)) <= seconds / 4:  # calibrate
        n *= 2
    n = max(1, int(n * seconds / elapsed))
    return min([await _async_batch(fn, n) / n * 1e6 for _ in range(ROUNDS)])


async def _async_batch(fn: Callable[[], Awaitable[object]], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await fn()
    return time.perf_counter() - start


def _asgi_caller(app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]],
                 body: bytes) -> Callable[[], Awaitable[int]]:
    base = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
        "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
        "root_path": "", "query_string": b"", "headers": headers,
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }
    message = {"type": "http.request", "body": body, "more_body": False}

    async def receive() -> dict[str, Any]:
        return message

    async def call() -> int:
        status = 0

        async def send(msg: dict[str, Any]) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]

        await app(dict(base), receive, send)
        if status != 200:
            raise RuntimeError(f"{method} {path} answered {status}")
        return status

    return call


def _budget(total: float, parts: list[tuple[str, float]]) -> list[str]:
    """Rows of nested-layer differences; a layer whose difference is below the measurement
    noise (negative: RSA signing times vary by several µs) is merged into the one before."""
    merged: list[tuple[str, float]] = []
    for name, us in parts:
        if merged and (us < 0 or merged[-1][1] < 0):
            previous, value = merged.pop()
            name, us = f"{previous}; {name}", value + us
        merged.append((name, us))
    lines = ["| share of one server core per request | µs | % |", "|---|---:|---:|"]
    for name, us in merged:
        lines.append(f"| {name} | {us:.1f} | {100 * us / total:.1f}% |")
    lines.append(f"| **total (1e6 / measured req/s)** | **{total:.1f}** | 100% |")
    return lines


async def run(args: argparse.Namespace) -> tuple[list[tuple[str, float]], list[str]]:
    settings = load_settings(args.config)
    app = create_app(settings)
    rt = app.state.runtime
    rows: list[tuple[str, float]] = []
    m: dict[str, float] = {}
    t = args.seconds
    async with app.router.lifespan_context(app):
        now = rt.clock.now()
        signer = rt.keyring.snapshot(now).signer
        alg = signer.alg
        raw_key = signer.key.get_op_key("sign")
        message = b"x" * 330  # about the size of our header.payload signing input
        if alg == "RS256":
            def sign_raw() -> object:
                return raw_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        else:
            def sign_raw() -> object:
                return raw_key.sign(message, ec.ECDSA(hashes.SHA256()))
        m["sig"] = _per_call_us(sign_raw, t)
        rows.append((f"{alg} signature only (cryptography/OpenSSL)", m["sig"]))
        claims = {"iss": settings.issuer, "sub": "cli_x", "aud": settings.issuer,
                  "exp": int(now) + 3600, "iat": int(now), "jti": "j" * 22,
                  "client_id": "cli_x", "org_id": "org_default", "scope": "read write"}
        m["jws"] = _per_call_us(lambda: signer.sign(claims, "at+jwt"), t)
        rows.append(("SigningKey.sign (joserfc jwt.encode: JSON, base64url, signature)",
                     m["jws"]))
        rows.append(("  part: stdlib json.dumps of the claims",
                     _per_call_us(lambda: json.dumps(claims, separators=(",", ":")), t)))
        m["mint"] = _per_call_us(
            lambda: mint_access_token(signer, issuer=settings.issuer, client_id="cli_x",
                                      subject="cli_x", org_id="org_default",
                                      audience=settings.issuer, scopes=("read", "write"),
                                      lifetime=3600, now=rt.clock.now()), t)
        rows.append(("tokens.mint_access_token (claims, jti, sign)", m["mint"]))
        rows.append(("  part: secrets.token_urlsafe(16) (jti)",
                     _per_call_us(lambda: secrets.token_urlsafe(16), t)))
        request = TokenRequest(params={"grant_type": "client_credentials"}, resources=(),
                               authorization=f"Basic {args.basic}", client_ip="127.0.0.1")
        await rt.tokens.issue(request)  # fill the client cache
        m["issue"] = await _per_call_us_async(lambda: rt.tokens.issue(request), t)
        rows.append(("TokenService.issue (rate limits, client auth from cache, mint)",
                     m["issue"]))
        client = await rt.tokens.clients.get(
            base64.b64decode(args.basic).decode().partition(":")[0])

        async def rate_limits() -> None:  # the three checks of TokenService.issue
            await rt.limits.address.check(rate_key("127.0.0.1"))
            await rt.limits.client.check(client.client_id,
                                         rt.limits.client_items(client.rate_limits))
            await rt.limits.organization.check(client.org_id)

        m["limits"] = await _per_call_us_async(rate_limits, t)
        rows.append(("  part: rate limits: address (1 limit), client (2), organisation (1)",
                     m["limits"]))
        authorization = f"Basic {args.basic}"
        rows.append(("  part: extract_credentials (Basic decode)", _per_call_us(
            lambda: extract_credentials({"grant_type": "client_credentials"}, authorization),
            t)))
        body = b"grant_type=client_credentials"

        def form() -> object:
            check_form_type("application/x-www-form-urlencoded")
            return parse_form(body, ("resource",))

        rows.append(("  part: check_form_type + parse_form", _per_call_us(form, t)))
        rows.append(("  part: secrets.token_hex(8) (request id)",
                     _per_call_us(lambda: secrets.token_hex(8), t)))
        token_headers = [(b"host", b"127.0.0.1:8000"),
                         (b"content-type", b"application/x-www-form-urlencoded"),
                         (b"authorization", f"Basic {args.basic}".encode()),
                         (b"content-length", b"29")]
        token_call = _asgi_caller(app, "POST", "/token", token_headers,
                                  b"grant_type=client_credentials")
        asgi_token = m["asgi"] = await _per_call_us_async(token_call, t)
        rows.append(("ASGI app, POST /token (Starlette + middleware + endpoint + issue)",
                     asgi_token))
        jwks_call = _asgi_caller(app, "GET", "/.well-known/jwks.json",
                                 [(b"host", b"127.0.0.1:8000")], b"")
        asgi_jwks = await _per_call_us_async(jwks_call, t)
        rows.append(("ASGI app, GET /.well-known/jwks.json", asgi_jwks))

    jwks_bytes = rt.keyring.snapshot(rt.clock.now()).jwks

    async def static(request: Request) -> Response:
        return Response(jwks_bytes, 200, media_type="application/json")

    bare = Starlette(routes=[Route("/.well-known/jwks.json", static, methods=["GET"])])
    bare_call = _asgi_caller(bare, "GET", "/.well-known/jwks.json",
                             [(b"host", b"127.0.0.1:8000")], b"")
    bare_us = await _per_call_us_async(bare_call, t)
    rows.append(("reference: bare Starlette app, one route, static bytes", bare_us))
    budget: list[str] = []
    if args.rps_token:
        total = 1e6 / args.rps_token
        budget += [f"POST /token, {alg}, at the measured {args.rps_token:,.0f} req/s:", ""]
        budget += _budget(total, [
            (f"{alg} signature (OpenSSL via cryptography)", m["sig"]),
            ("JWS assembly in joserfc (header/claims JSON, base64url, registry checks"
             + (", DER to raw r,s" if alg == "ES256" else "") + ")", m["jws"] - m["sig"]),
            ("claims dict + jti (tokens.mint_access_token)", m["mint"] - m["jws"]),
            ("rate limits: address, client, organisation (TokenService.issue)",
             m["limits"]),
            ("client auth from cache, scopes, audience (TokenService.issue)",
             m["issue"] - m["mint"] - m["limits"]),
            ("endpoint + Starlette + middleware (form, body, routing, request id, response)",
             m["asgi"] - m["issue"]),
            ("HTTP server + kernel (uvicorn, httptools, uvloop, TCP loopback)",
             total - m["asgi"]),
        ])
    if args.rps_jwks:
        total = 1e6 / args.rps_jwks
        budget += ["", f"GET /.well-known/jwks.json at the measured {args.rps_jwks:,.0f} req/s:",
                   ""]
        budget += _budget(total, [
            ("bare Starlette (routing, exception middleware, Response)", bare_us),
            ("authserver on top (request id middleware, more routes, etag/headers, snapshot)",
             asgi_jwks - bare_us),
            ("HTTP server + kernel (uvicorn, httptools, uvloop, TCP loopback)",
             total - asgi_jwks),
        ])
    return rows, budget


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--basic", required=True, help="base64(client_id:client_secret)")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one round")
    parser.add_argument("--rps-token", type=float, default=0.0)
    parser.add_argument("--rps-jwks", type=float, default=0.0)
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        rows, budget = runner.run(run(args))
    print("| layer (in-process, one core; each row includes the rows above it unless marked "
          "part) | µs per call |\n|---|---:|")
    for name, us in rows:
        print(f"| {name} | {us:.1f} |")
    if budget:
        print()
        print("\n".join(budget))


if __name__ == "__main__":
    main()
