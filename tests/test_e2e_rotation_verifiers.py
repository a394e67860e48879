"""Signing-key rotation under live token traffic, over real HTTP, seen by real
`authserver.resource` verifiers: two rotations through `authserver keys rotate` in another
process while clients keep fetching tokens with authlib, and every token is verified at once by
a verifier following the revocation feed, one without it, and one that refetches the JWKS only
when its `Cache-Control` max-age runs out (docs/keys.md: "Rotation without a failed
validation")."""

from __future__ import annotations

import base64
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from joserfc import jwt
from joserfc.jwk import RSAKey
from joserfc.jws import extract_compact

from authserver.resource import Settings, TokenError, Verifier
from tests import factories
from tests.conftest import LiveServer, start_live_server

pytestmark = pytest.mark.anyio
JWKS_PATH = "/.well-known/jwks.json"
SHORT_SIGNING = {"jwks_max_age": 1, "propagation_delay": 2, "reload_interval": 0.2}
TOKEN_LIFETIME = 60
WORKERS = 4
MAX_TOKENS = 4000  # bounds on the traffic, whatever the machine's speed
DEADLINE = 25.0
PAUSE = 0.02  # between a worker's tokens: the traffic spans the whole rotation window
AFTER_ACTIVATION = 1.0  # traffic on each new key before the next step


class Watched:
    """A verifier on its own HTTP client, counting its JWKS fetches and the kids it accepted."""

    def __init__(self, name: str, settings: Settings) -> None:
        self.name = name
        self.jwks_fetches = 0
        self.kids: Counter[str] = Counter()
        self.http = httpx.AsyncClient(timeout=10, event_hooks={"request": [self._count]})
        self.verifier = Verifier(settings, http=self.http)

    async def _count(self, request: httpx.Request) -> None:
        if request.url.path == JWKS_PATH:
            self.jwks_fetches += 1

    async def aclose(self) -> None:
        await self.verifier.aclose()
        await self.http.aclose()


def kid_of(token: str) -> str:
    return str(extract_compact(token.encode()).headers()["kid"])


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = json.loads(extract_compact(token.encode()).payload)
    return claims


class Traffic:
    """Workers that each fetch a client_credentials token with authlib, then have every
    verifier check it, until stopped, capped or past the deadline."""

    def __init__(self, live: LiveServer, client_id: str, secret: str,
                 verifiers: list[Watched]) -> None:
        self.live, self.client_id, self.secret = live, client_id, secret
        self.verifiers = verifiers
        self.stop = anyio.Event()
        self.deadline = time.monotonic() + DEADLINE
        self.issued = 0
        self.kids: Counter[str] = Counter()
        self.samples: dict[str, str] = {}  # the first token of each kid, checked again later
        self.token_errors: list[str] = []
        self.failures: list[str] = []

    def _go_on(self) -> bool:
        return (not self.stop.is_set() and time.monotonic() < self.deadline
                and self.issued < MAX_TOKENS)

    async def worker(self) -> None:
        async with AsyncOAuth2Client(self.client_id, self.secret, timeout=10,
                                     token_endpoint_auth_method="client_secret_basic") as client:
            while self._go_on():
                self.issued += 1
                try:
                    issued = await client.fetch_token(self.live.url + "/token",
                                                      grant_type="client_credentials")
                except (OAuthError, httpx.HTTPError) as exc:
                    self.token_errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                token = str(factories.remember(issued["access_token"]))
                kid = kid_of(token)
                self.kids[kid] += 1
                self.samples.setdefault(kid, token)
                for watched in self.verifiers:
                    try:
                        await watched.verifier.verify(token, ["read"])
                    except TokenError as exc:
                        self.failures.append(
                            f"{watched.name}: kid {kid}: {exc.description} at {time.time():.3f}"
                            f" (JWKS fetches so far: {watched.jwks_fetches})")
                    else:
                        watched.kids[kid] += 1
                await anyio.sleep(PAUSE)


class JwksWatch:
    """Polls the JWKS without caching and notes, per kid, the latest instant by which the
    server had certainly not published it yet (the start of the last poll without it)."""

    def __init__(self, live: LiveServer) -> None:
        self.url = live.url + JWKS_PATH
        self.not_before: dict[str, float] = {}
        self.seen: set[str] = set()
        self.stop = anyio.Event()

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            last_start = 0.0
            while not self.stop.is_set():
                start = time.time()
                response = await http.get(self.url)
                for key in response.json()["keys"]:
                    if key["kid"] not in self.seen:
                        self.seen.add(key["kid"])
                        self.not_before[key["kid"]] = last_start
                last_start = start
                await anyio.sleep(0.05)


def cli_config(tmp_path: Path, live: LiveServer) -> Path:
    """The configuration an operator's `authserver` command would use: same store, same keys
    directory, same signing timings."""
    s = live.settings
    signing = "\n".join(f"{name} = {value}" for name, value in SHORT_SIGNING.items())
    path = tmp_path / "authserver.toml"
    path.write_text(
        f"issuer = {json.dumps(s.issuer)}\ndata_dir = {json.dumps(s.data_dir)}\n"
        f"database_url = {json.dumps(s.database_url)}\nkeys_dir = {json.dumps(s.keys_dir)}\n"
        f"[tokens]\naccess_token_lifetime = {TOKEN_LIFETIME}\n[signing]\n{signing}\n")
    return path


async def cli_rotate(config: Path) -> dict[str, Any]:
    """`authserver --json keys rotate` in its own process; the server learns of the new key
    only by reloading the directory."""
    done = await anyio.run_process(
        [sys.executable, "-m", "authserver.cli", "--config", str(config), "--json",
         "keys", "rotate"], check=False)
    assert done.returncode == 0, done.stderr.decode()
    rotated: dict[str, Any] = json.loads(done.stdout)
    return rotated


async def sleep_until(instant: float) -> None:
    await anyio.sleep(max(0.0, instant - time.time()))


async def rotate_twice(config: Path) -> list[dict[str, Any]]:
    await anyio.sleep(1.0)  # every verifier now holds the one-key JWKS, traffic on the first key
    rotations = []
    for _ in range(2):
        rotated = await cli_rotate(config)
        rotations.append(rotated)
        await sleep_until(rotated["activate_at"] + AFTER_ACTIVATION)
    return rotations


def forgeries(token: str, signer_kid: str) -> dict[str, str]:
    """A real token with its claims changed, and its claims signed by a key not ours (under
    the signer's kid, and under the foreign key's own kid)."""
    header, _, rest = token.partition(".")
    _, _, signature = rest.partition(".")
    changed = {**claims_of(token), "scope": "read admin"}
    payload = base64.urlsafe_b64encode(json.dumps(changed).encode()).rstrip(b"=").decode()
    foreign = RSAKey.generate_key(2048, private=True)

    def sign(kid: str) -> str:
        return jwt.encode({"alg": "RS256", "typ": "at+jwt", "kid": kid}, claims_of(token),
                          foreign)

    return {"claims changed": f"{header}.{payload}.{signature}",
            "foreign key, our kid": sign(signer_kid),
            "foreign key, its kid": sign(foreign.thumbprint())}


async def test_two_rotations_under_traffic_fail_no_resource_verifier(tmp_path: Path) -> None:
    live = start_live_server(tmp_path, signing=SHORT_SIGNING,
                             tokens={"access_token_lifetime": TOKEN_LIFETIME})
    verifiers: list[Watched] = []
    try:
        client, secret = factories.create_client(live.runtime, scopes=["read"])
        feed_client, feed_secret = factories.create_client(
            live.runtime, name="api", scopes=[live.settings.feed.scope])
        assert secret and feed_secret
        signer = live.runtime.keyring.snapshot(time.time()).signer
        assert signer is not None
        first_kid = signer.kid
        config = cli_config(tmp_path, live)
        common: dict[str, Any] = {"issuer": live.url, "audience": live.url}
        verifiers = [
            Watched("feed, refetch on unknown kid", Settings(
                **common, jwks_refetch_interval=0.5, feed_client_id=feed_client.client_id,
                feed_client_secret=feed_secret, poll_interval=0.2)),
            Watched("no feed, refetch on unknown kid", Settings(
                **common, jwks_refetch_interval=0.5)),
            # Never refetches on an unknown kid within the run: only max-age expiry refreshes
            # its JWKS, so it fails if a key signs before every cache can know it.
            Watched("max-age only", Settings(**common, jwks_refetch_interval=3600)),
        ]
        for watched in verifiers:
            await watched.verifier.start()
        started = time.time()
        traffic = Traffic(live, client.client_id, secret, verifiers)
        watch = JwksWatch(live)
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch.run)
            for _ in range(WORKERS):
                tg.start_soon(traffic.worker)
            rotations = await rotate_twice(config)
            traffic.stop.set()
            watch.stop.set()
        elapsed = time.time() - started
        # How long each new key was served before it signed, at most: this has to cover a
        # cache's max-age (docs/keys.md), or a cache-respecting verifier can fail.
        served_before_signing = {
            r["kid"]: round(r["activate_at"] - watch.not_before[r["kid"]], 3) for r in rotations}

        kids = [first_kid] + [r["kid"] for r in rotations]
        assert traffic.token_errors == [], traffic.token_errors[:5]
        assert traffic.failures == [], (len(traffic.failures), traffic.failures[:10],
                                        served_before_signing)
        assert all(seconds >= SHORT_SIGNING["jwks_max_age"]
                   for seconds in served_before_signing.values()), served_before_signing
        assert len(set(kids)) == 3
        assert set(traffic.kids) == set(kids), traffic.kids
        assert all(traffic.kids[kid] >= 5 for kid in kids), traffic.kids
        assert traffic.issued < MAX_TOKENS, "the traffic was capped before the rotations ended"
        for watched in verifiers:
            assert watched.kids == traffic.kids, watched.name
        # The max-age-only verifier really did hold each JWKS and fetch it again on expiry.
        strict = verifiers[-1]
        assert strict.jwks_fetches >= 3, strict.jwks_fetches
        assert strict.jwks_fetches <= elapsed / SHORT_SIGNING["jwks_max_age"] + 2
        feed = verifiers[0].verifier
        assert feed.last_feed_ok is not None and feed.last_feed_ok > started

        states = {v.kid: v.state for v in live.runtime.keyring.snapshot(time.time()).views}
        assert states == {kids[0]: "retired", kids[1]: "retired", kids[2]: "active"}
        jwks = (await verifiers[1].http.get(live.url + JWKS_PATH)).json()
        assert {k["kid"] for k in jwks["keys"]} == set(kids)
        # A token of each key, the retired ones included, is still accepted everywhere.
        for kid in kids:
            for watched in verifiers:
                verified = await watched.verifier.verify(traffic.samples[kid], ["read"])
                assert verified.client_id == client.client_id

        # The verifiers do refuse: a changed claim, and a signature by a key not ours.
        refusals: dict[tuple[str, str], str] = {}
        for name, forged in forgeries(traffic.samples[kids[2]], kids[2]).items():
            for watched in verifiers:
                try:
                    await watched.verifier.verify(forged, ["read"])
                except TokenError as exc:
                    refusals[name, watched.name] = exc.description
                else:
                    refusals[name, watched.name] = "accepted"
        expected = {"claims changed": "The token's signature does not verify",
                    "foreign key, our kid": "The token's signature does not verify",
                    "foreign key, its kid": "The token is signed by an unknown key"}
        assert refusals == {(name, watched.name): reason for name, reason in expected.items()
                            for watched in verifiers}
    finally:
        for watched in verifiers:
            await watched.aclose()
        live.stop()


async def test_the_max_age_verifier_catches_a_key_that_signs_before_it_is_cached(
    tmp_path: Path,
) -> None:
    """Control: with no propagation delay the max-age-only verifier refuses the new key's
    tokens (so the zero failures above mean something), while a verifier that refetches on an
    unknown kid does not notice."""
    live = start_live_server(tmp_path, signing={"jwks_max_age": 30, "propagation_delay": 31,
                                                "reload_interval": 0.2})
    common: dict[str, Any] = {"issuer": live.url, "audience": live.url}
    strict = Verifier(Settings(**common, jwks_refetch_interval=3600))
    eager = Verifier(Settings(**common, jwks_refetch_interval=0))
    try:
        client, secret = factories.create_client(live.runtime, scopes=["read"])
        assert secret
        await strict.start()
        await eager.start()

        async def token() -> str:
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.post(live.url + "/token", auth=(client.client_id, secret),
                                           data={"grant_type": "client_credentials"})
            assert response.status_code == 200, response.text
            return str(factories.remember(response.json()["access_token"]))

        before = await token()
        await strict.verify(before)
        await eager.verify(before)
        new = live.runtime.keyring.rotate("RS256", time.time(), propagation_delay=0)
        after = await token()
        assert kid_of(after) == new.kid
        with pytest.raises(TokenError, match="unknown key"):
            await strict.verify(after)
        assert (await eager.verify(after)).client_id == client.client_id
    finally:
        await strict.aclose()
        await eager.aclose()
        live.stop()
