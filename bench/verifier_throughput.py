"""Verifier throughput in process, one core: `await verifier.verify(token)` of
`authserver.resource` against joserfc alone and the bare signature check.

    python bench/verifier_throughput.py [--algs RS256 ES256 EdDSA] [--runs 5] [--seconds 2]
        [--cpu 0] [--feed both|on|off] [--profile] [--breakdown] [--no-two-parse]

No server: the verifier's HTTP client is an `httpx.MockTransport` answering the discovery
document, the JWKS and (with the feed on) one empty feed poll at `start()`. The key is made by
`authserver.keyring.Keyring.generate` and the token by `authserver.tokens.mint_access_token`, as
the server does. The process pins itself to `--cpu` (`os.sched_setaffinity`).

Rows per algorithm (validations per second, median of `--runs` runs of `--seconds` s after a
warm-up; each run is a tight loop of one call on the same valid token):

- `Verifier.verify`, feed configured (`feed_client_id` set, `poll_interval` 3600 s: the first
  poll happened in `start()`, none during the loop; the staleness check runs on every call) and
  feed off (`feed_client_id` None);
- for comparison, `verify` through a bench subclass whose `_decode` is the one commit 8b78d8e
  replaced (the header parsed, then the whole token again by `jwt.decode`), feed configured
  (`--no-two-parse` leaves it out);
- `joserfc.jwt.decode(token, key, algorithms=[alg])` with the same public key object: signature
  and JSON, no claims checks;
- the signature alone: `cryptography`'s verify on the JWS signing input (the floor).

`--breakdown` times the parts of the verify path separately; `--profile` prints a cProfile of
the verify loop (top functions by own time).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import io
import json
import os
import pstats
import signal
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # measure the authserver of this tree

import httpx  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils  # noqa: E402
from joserfc import jwt  # noqa: E402
from joserfc.errors import JoseError, SecurityWarning  # noqa: E402
from joserfc.jws import extract_compact, validate_compact  # noqa: E402
from joserfc.util import urlsafe_b64decode  # noqa: E402

sys.path.insert(0, str(HERE))
import quiet  # noqa: E402  bench/quiet.py
from helper import measured_tree  # noqa: E402

from authserver.keyring import Keyring  # noqa: E402
from authserver.resource import Settings, TokenError, Verifier  # noqa: E402
from authserver.tokens import mint_access_token  # noqa: E402

ISSUER = "https://auth.bench.invalid"
AUDIENCE = "https://api.bench.invalid"
CLIENT_ID = "cli_" + "b" * 22  # the length of hashing.new_client_id()
TARGETS = {"RS256": 15000.0, "ES256": 8000.0}


def make_token(alg: str, directory: Path) -> tuple[str, dict[str, Any]]:
    """A token as the server mints it, and the JWKS that verifies it."""
    now = time.time()
    signer = Keyring(directory / alg, 3600).generate(alg, now, activate_at=now)
    token = mint_access_token(
        signer, issuer=ISSUER, client_id=CLIENT_ID, subject=CLIENT_ID, org_id="org_default",
        audience=AUDIENCE, scopes=("read", "write"), lifetime=3600, now=now,
    ).token
    return token, {"keys": [signer.public_jwk]}


def transport(jwks: dict[str, Any]) -> httpx.MockTransport:
    metadata = {"issuer": ISSUER, "jwks_uri": f"{ISSUER}/.well-known/jwks.json",
                "security_event_poll_endpoint": f"{ISSUER}/sets/poll"}

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json=metadata)
        if path == "/.well-known/jwks.json":
            return httpx.Response(200, json=jwks, headers={"cache-control": "max-age=3600"})
        if path == "/sets/poll":
            return httpx.Response(200, json={"sets": {}, "moreAvailable": False})
        return httpx.Response(404)

    return httpx.MockTransport(handle)


class TwoParseVerifier(Verifier):
    """A comparison, not shipped: `Verifier._decode` as it was before commit 8b78d8e, which
    read the header with `extract_compact` and then handed the token to `jwt.decode`, which
    extracts it again (header and payload base64url + JSON a second time). Kept so that one run
    measures the parse-once change on the same machine, whatever its speed that day."""

    async def _decode(self, token: str, typ: str) -> dict[str, Any]:
        try:
            header = extract_compact(token.encode("ascii")).headers()
        except (JoseError, ValueError, UnicodeError) as exc:
            raise TokenError("The token is not a JWS") from exc
        if header.get("typ") != typ:
            raise TokenError(f"The token's typ is not {typ}")
        if header.get("alg") not in self.settings.algorithms:
            raise TokenError("The token's algorithm is not allowed")
        key = await self._key(str(header.get("kid", "")))
        try:
            claims: dict[str, Any] = jwt.decode(token, key, registry=self._registry).claims
        except (JoseError, ValueError) as exc:
            raise TokenError("The token's signature does not verify") from exc
        if claims.get("iss") != self.settings.issuer:
            raise TokenError("The token is from another issuer")
        return claims


async def make_verifier(alg: str, jwks: dict[str, Any], feed: bool,
                        cls: type[Verifier] = Verifier) -> Verifier:
    settings = Settings(
        issuer=ISSUER, audience=AUDIENCE, algorithms=(alg,),
        feed_client_id="cli_feed" if feed else None,
        feed_client_secret="secret" if feed else None,
        poll_interval=3600.0, max_staleness=7200.0)
    verifier = cls(settings, http=httpx.AsyncClient(transport=transport(jwks)))
    await verifier.start()
    return verifier


def signature_only(alg: str, token: str, key: Any) -> Callable[[], None]:
    """The bare signature check on the JWS signing input, in cryptography."""
    header, payload, signature = token.encode().split(b".")
    signing_input = header + b"." + payload
    raw = urlsafe_b64decode(signature)
    public = key.public_key
    if alg == "RS256":
        return lambda: public.verify(raw, signing_input, padding.PKCS1v15(), hashes.SHA256())
    if alg == "ES256":
        half = len(raw) // 2
        der = utils.encode_dss_signature(int.from_bytes(raw[:half], "big"),
                                         int.from_bytes(raw[half:], "big"))
        return lambda: public.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
    return lambda: public.verify(raw, signing_input)


def calibrate(call: Callable[[int], float], seconds: float) -> int:
    """The iteration count for a run of about `seconds`; ends with a warm-up of that length."""
    n = 200
    while (elapsed := call(n)) < 0.2:
        n *= 2
    n = max(1, int(n * seconds / elapsed))
    call(n)
    return n


def interleaved(scenarios: list[tuple[str, Callable[[int], float]]], seconds: float, runs: int,
                cpu: int | None, max_load: float) -> list[tuple[str, list[float], float, int]]:
    """ops/s of `runs` runs of each scenario, run i of every scenario back to back (so drift of
    the machine hits all alike). A run during which other work took more than `max_load` of
    our core (`quiet.Meter`) is thrown away and made again after a 2 s pause, up to 5 times.
    Returns (label, ops/s per kept run, highest other load in a kept run, runs thrown away)."""
    counts = [calibrate(call, seconds) for _, call in scenarios]
    values: list[list[float]] = [[] for _ in scenarios]
    loads = [0.0 for _ in scenarios]
    repeats = [0 for _ in scenarios]
    for run in range(runs):
        for index, (label, call) in enumerate(scenarios):
            for attempt in range(6):
                elapsed, load = quiet.measured(functools.partial(call, counts[index]), cpu)
                if cpu is None or max_load <= 0 or load <= max_load or attempt == 5:
                    break
                repeats[index] += 1
                print(f"   {label[:50]}: run {run + 1} again, others took {load:.2f} of core "
                      f"{cpu}", file=sys.stderr)
                time.sleep(2.0)
            values[index].append(counts[index] / elapsed)
            loads[index] = max(loads[index], load)
    return [(label, values[i], loads[i], repeats[i]) for i, (label, _) in enumerate(scenarios)]


def sync_loop(fn: Callable[[], Any]) -> Callable[[int], float]:
    def call(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            fn()
        return time.perf_counter() - started
    return call


def async_loop(loop: asyncio.AbstractEventLoop,
               fn: Callable[[], Awaitable[Any]]) -> Callable[[int], float]:
    async def body(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            await fn()
        return time.perf_counter() - started

    return lambda n: loop.run_until_complete(body(n))


def breakdown(loop: asyncio.AbstractEventLoop, verifier: Verifier, token: str,
              key: Any, alg: str, cpu: int | None, max_load: float,
              two_parse: Verifier | None) -> list[tuple[str, float]]:
    """Microseconds per call of the parts of `verify` (each timed alone, median of 5)."""
    raw = token.encode("ascii")
    registry = verifier._registry
    obj = extract_compact(raw, registry=registry)
    kid = obj.headers()["kid"]
    assert validate_compact(obj, key, registry=registry)
    parts: list[tuple[str, Callable[[int], float]]] = [
        ("verify() total", async_loop(loop, lambda: verifier.verify(token))),
        ("_decode() (one parse, key lookup, validate_compact, payload JSON)",
         async_loop(loop, lambda: verifier._decode(token, "at+jwt"))),
        ("extract_compact(token, registry=...).headers() (the parse)",
         sync_loop(lambda: extract_compact(raw, registry=registry).headers())),
        ("_key(kid) lookup", async_loop(loop, lambda: verifier._key(kid))),
        ("validate_compact(obj, key, registry=...) (signature, joserfc checks)",
         sync_loop(lambda: validate_compact(obj, key, registry=registry))),
        ("json.loads(obj.payload)", sync_loop(lambda: json.loads(obj.payload or b""))),
        ("signature alone (cryptography)", sync_loop(signature_only(alg, token, key))),
    ]
    if two_parse is not None:
        parts.append(("before 8b78d8e: `_decode()` parsing twice (header, then jwt.decode)",
                      async_loop(loop, lambda: two_parse._decode(token, "at+jwt"))))
    timed = interleaved(parts, 0.5, 5, cpu, max_load)
    return [(name, 1e6 / statistics.median(values)) for name, values, _, _ in timed]


def profile(loop: asyncio.AbstractEventLoop, verifier: Verifier, token: str,
            n: int = 20000) -> str:
    async def body() -> None:
        for _ in range(n):
            await verifier.verify(token)

    profiler = cProfile.Profile()
    profiler.enable()
    loop.run_until_complete(body())
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(22)
    lines = [line for line in text.getvalue().splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    return "\n".join(lines[start:]).replace(str(Path(sys.prefix)), "<venv>")


def measure(loop: asyncio.AbstractEventLoop, alg: str, directory: Path,
            args: argparse.Namespace) -> tuple[list[str], list[str], bool, int]:
    """Rows of the results table and detail sections for one algorithm; whether a target was
    missed; the token's length."""
    token, jwks = make_token(alg, directory)
    feeds = {"both": (True, False), "on": (True,), "off": (False,)}[args.feed]
    verifiers: dict[bool | None, Verifier] = {
        feed: loop.run_until_complete(make_verifier(alg, jwks, feed)) for feed in feeds}
    scenarios: list[tuple[str, Callable[[int], float]]] = []
    for feed, verifier in verifiers.items():
        loop.run_until_complete(verifier.verify(token))  # valid, or fail loudly
        label = "`Verifier.verify`, feed " + (
            "configured (not polling in the loop)" if feed else "off")
        scenarios.append((label, async_loop(loop, functools.partial(verifier.verify, token))))
    if args.two_parse:
        two_parse = loop.run_until_complete(make_verifier(alg, jwks, True, TwoParseVerifier))
        claims = loop.run_until_complete(two_parse.verify(token)).claims
        assert claims == loop.run_until_complete(
            next(iter(verifiers.values())).verify(token)).claims
        verifiers[None] = two_parse
        scenarios.append(("before 8b78d8e: `_decode` parsing twice (bench subclass), feed "
                          "configured", async_loop(loop, functools.partial(two_parse.verify,
                                                                           token))))
    verifier = verifiers.get(True) or next(iter(verifiers.values()))
    key = verifier._find(extract_compact(token.encode()).headers()["kid"])
    scenarios.append(("`joserfc.jwt.decode(token, key)` alone", sync_loop(
        functools.partial(jwt.decode, token, key, algorithms=[alg]))))
    scenarios.append(("signature alone (`cryptography` verify)",
                      sync_loop(signature_only(alg, token, key))))
    cpu = args.cpu if args.cpu >= 0 else None
    print(f"== {alg}: {len(scenarios)} rows x {args.runs} runs", file=sys.stderr)
    results = interleaved(scenarios, args.seconds, args.runs, cpu, args.max_load)
    target = TARGETS.get(alg)
    rows: list[str] = []
    missed = False
    for label, values, load, repeated in results:
        median = statistics.median(values)
        ours = label.startswith("`Verifier")
        verdict = "-"
        if target is not None and ours:
            verdict = "met" if median >= target else "MISSED"
            missed = missed or median < target
        rows.append(f"| {alg} | {label} | **{median:,.0f}** | {min(values):,.0f}-"
                    f"{max(values):,.0f} | {1e6 / median:.1f} | "
                    f"{f'>= {target:,.0f}/s' if target and ours else '-'} | {verdict} | "
                    f"{load:.2f} / {repeated} |")
    details: list[str] = []
    if args.breakdown:
        details += [f"\n### Breakdown, {alg} (µs per call, each part timed alone)\n",
                    "| part | µs |", "|---|---:|"]
        details += [f"| {name} | {us:.1f} |"
                    for name, us in breakdown(loop, verifier, token, key, alg, cpu,
                                                   args.max_load, verifiers.get(None))]
    if args.profile:
        details += [f"\n### cProfile of `verify()`, {alg}, 20,000 calls "
                    "(cProfile inflates small calls)\n", "```",
                    profile(loop, verifier, token), "```"]
    for each in verifiers.values():
        loop.run_until_complete(each.aclose())
    return rows, details, missed, len(token)


def _machine() -> str:
    return measured_tree(ROOT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algs", nargs="+", default=["RS256", "ES256", "EdDSA"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--cpu", type=int, default=0, help="core to pin to (-1: no pinning)")
    parser.add_argument("--feed", choices=("both", "on", "off"), default="both")
    parser.add_argument("--profile", action="store_true", help="cProfile of the verify loop")
    parser.add_argument("--breakdown", action="store_true", help="time the verify path's parts")
    parser.add_argument("--no-two-parse", dest="two_parse", action="store_false",
                        help="leave out the comparison row of the two-parse `_decode` that "
                             "8b78d8e replaced")
    parser.add_argument("--max-load", type=float, default=0.1,
                        help="make a run again when other work took more than this share of "
                             "the pinned core during it (0.1; 0: keep every run)")
    args = parser.parse_args()
    # SIGTERM (e.g. from `timeout`) unwinds, so the temporary key directory is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})
    # joserfc warns that the name EdDSA is deprecated (RFC 9864) when the baseline decodes with
    # its default registry (the verifier's own registry does not warn).
    warnings.filterwarnings("ignore", category=SecurityWarning)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    rows: list[str] = []
    details: list[str] = []
    missed = False
    sizes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="authserver-verifier-bench.") as tmp:
        for alg in args.algs:
            alg_rows, alg_details, alg_missed, size = measure(loop, alg, Path(tmp), args)
            rows += alg_rows
            details += alg_details
            missed = missed or alg_missed
            sizes.append(f"{alg} {size}")
    loop.close()
    print(f"# Verifier throughput, {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}\n")
    print(_machine())
    print(f"- command: `{' '.join(sys.argv)}`\n")
    print(f"Pinned to core {args.cpu}; {args.runs} runs of ~{args.seconds:g} s per row after a "
          f"warm-up of the same length, the rows of one algorithm interleaved; a run during which "
          f"other work took > {args.max_load:g} of the core was made again (up to 5 times); "
          f"token bytes: {', '.join(sizes)}.\n")
    print("| alg | what | validations/s (median) | min-max | µs/call | target | | "
          "others on the core (max of kept runs) / runs made again |")
    print("|---|---|---:|---:|---:|---|---|---:|")
    print("\n".join(rows))
    print("\n".join(details))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
