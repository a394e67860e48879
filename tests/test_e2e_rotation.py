"""Key rotation under live token traffic, seen by a verifier that caches the JWKS for exactly the
advertised max-age and never refetches on an unknown kid (the strictest verifier we promise to
support, DESIGN: propagation_delay >= jwks_max_age + reload_interval)."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact

from authserver.keyring import Keyring
from tests import factories
from tests.conftest import LiveServer, start_live_server

JWKS_PATH = "/.well-known/jwks.json"
MAX_AGE = re.compile(r"(?:^|[,\s])max-age=(\d+)(?:$|[,\s])")
SHORT_SIGNING = {"jwks_max_age": 1, "propagation_delay": 2, "reload_interval": 0.2}
WORKERS = 4
MAX_TOKENS = 1000  # bound on the traffic, whatever the machine's speed


def max_age(response: httpx.Response) -> int:
    match = MAX_AGE.search(response.headers["cache-control"])
    assert match, response.headers["cache-control"]
    return int(match.group(1))


class CachingVerifier:
    """Holds one JWKS for exactly its Cache-Control max-age. A token whose kid is not in the
    cached set fails: no refetch, which is how a strict, cache-respecting verifier behaves."""

    def __init__(self, issuer: str, audience: str) -> None:
        self.issuer = issuer
        self.audience = audience
        self.http = httpx.Client(timeout=10)
        self._lock = threading.Lock()
        self._keys: KeySet | None = None
        self._kids: frozenset[str] = frozenset()
        self._expires = 0.0
        self.fetches = 0
        self.max_ages: set[int] = set()

    def close(self) -> None:
        self.http.close()

    def keys(self) -> tuple[KeySet, frozenset[str]]:
        with self._lock:
            if self._keys is None or time.monotonic() >= self._expires:
                response = self.http.get(self.issuer + JWKS_PATH)
                response.raise_for_status()
                age = max_age(response)
                # Counted from receipt: the longest a cache may hold it, so the strictest check.
                self._expires = time.monotonic() + age
                self._keys = KeySet.import_key_set(response.json())
                self._kids = frozenset(k["kid"] for k in response.json()["keys"])
                self.fetches += 1
                self.max_ages.add(age)
            return self._keys, self._kids

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims; raises on any failure, unknown kid included."""
        header = extract_compact(token.encode()).protected
        keys, kids = self.keys()
        if header.get("kid") not in kids:
            raise LookupError(f"kid {header.get('kid')} is not in the cached JWKS")
        decoded = jwt.decode(token, keys, algorithms=["RS256"])
        if decoded.header["typ"] != "at+jwt":
            raise ValueError("typ is not at+jwt")
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.audience},
            exp={"essential": True},
        ).validate(decoded.claims)
        return {"kid": header["kid"], **decoded.claims}


class Traffic:
    """Worker threads that each request a token and verify it, until stopped or capped."""

    def __init__(self, live: LiveServer, client_id: str, secret: str,
                 verifier: CachingVerifier) -> None:
        self.live, self.auth, self.verifier = live, (client_id, secret), verifier
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.kids: Counter[str] = Counter()
        self.failures: list[str] = []
        self.issued = 0
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(WORKERS)]

    def _take(self) -> bool:
        with self.lock:
            if self.issued >= MAX_TOKENS:
                return False
            self.issued += 1
            return True

    def _run(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self.stop.is_set() and self._take():
                try:
                    response = http.post(self.live.url + "/token", auth=self.auth,
                                         data={"grant_type": "client_credentials"})
                    if response.status_code != 200:
                        raise RuntimeError(f"token endpoint answered {response.status_code}")
                    token = response.json()["access_token"]
                    factories.remember(token)
                    claims = self.verifier.verify(token)
                except (httpx.HTTPError, RuntimeError, LookupError, ValueError,
                        JoseError) as exc:
                    with self.lock:
                        self.failures.append(f"{type(exc).__name__}: {exc}")
                else:
                    with self.lock:
                        self.kids[claims["kid"]] += 1
                time.sleep(0.03)  # spread over the whole rotation window

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)
        assert not any(t.is_alive() for t in self.threads), "a traffic thread did not stop"


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    server = start_live_server(tmp_path, signing=SHORT_SIGNING,
                               tokens={"access_token_lifetime": 60})
    try:
        yield server
    finally:
        server.stop()


def jwks_kids(live: LiveServer) -> set[str]:
    response = httpx.get(live.url + JWKS_PATH, timeout=10)
    assert response.status_code == 200
    return {k["kid"] for k in response.json()["keys"]}


def wait_until(instant: float) -> None:
    while time.time() < instant:
        time.sleep(min(0.05, max(0.0, instant - time.time())))


@pytest.mark.parametrize("rotator", ["server keyring", "another process's keyring"])
def test_rotation_under_traffic_never_fails_a_caching_verifier(
    live: LiveServer, rotator: str
) -> None:
    client, secret = factories.create_client(live.runtime, scopes=["read"])
    assert secret is not None
    verifier = CachingVerifier(live.url, audience=live.url)
    (old_kid,) = jwks_kids(live)
    etag_before = httpx.get(live.url + JWKS_PATH, timeout=10).headers["etag"]
    # "another process's keyring": the CLI's view of the same directory; the server only learns
    # of the new key through its reload loop, which propagation_delay also has to cover.
    keyring = live.runtime.keyring if rotator == "server keyring" else Keyring(
        Path(live.settings.keys_dir), live.settings.tokens.access_token_lifetime)
    started = time.monotonic()
    try:
        with Traffic(live, client.client_id, secret, verifier) as traffic:
            time.sleep(1.2)  # the verifier has cached the one-key JWKS by now
            new = keyring.rotate("RS256", time.time(), live.settings.signing.propagation_delay)
            assert new.activate_at is not None
            assert new.activate_at - time.time() > SHORT_SIGNING["jwks_max_age"]
            wait_until(new.activate_at + 1.5)  # well into the new key's signing period
            kids_after = jwks_kids(live)
            verifier_kids_after = verifier.keys()[1]
    finally:
        verifier.close()
    elapsed = time.monotonic() - started

    assert traffic.failures == [], traffic.failures[:5]
    assert set(traffic.kids) == {old_kid, new.kid}, traffic.kids
    assert len(traffic.kids) >= 2
    assert traffic.kids[old_kid] > 0
    assert traffic.kids[new.kid] > 0
    # The old key is still published after the new one activated (its tokens are still valid).
    assert kids_after == {old_kid, new.kid}
    assert verifier_kids_after == {old_kid, new.kid}
    states = {v.kid: v.state for v in live.runtime.keyring.snapshot(time.time()).views}
    assert states == {old_kid: "retired", new.kid: "active"}
    # The verifier really did cache per max-age=1 and refetch throughout.
    assert verifier.max_ages == {SHORT_SIGNING["jwks_max_age"]}
    assert verifier.fetches >= 3
    assert httpx.get(live.url + JWKS_PATH, timeout=10).headers["etag"] != etag_before
    assert elapsed < 20


def test_the_verifier_would_catch_a_key_that_signs_before_it_is_cached(tmp_path: Path) -> None:
    """Control: rotating with no propagation delay makes this verifier fail, so the zero
    failures above mean something."""
    live = start_live_server(tmp_path, signing={"jwks_max_age": 30, "propagation_delay": 31,
                                                "reload_interval": 0.2})
    verifier = CachingVerifier(live.url, audience=live.url)
    try:
        client, secret = factories.create_client(live.runtime)
        assert secret is not None

        def token() -> str:
            response = httpx.post(live.url + "/token", auth=(client.client_id, secret),
                                  data={"grant_type": "client_credentials"}, timeout=10)
            assert response.status_code == 200, response.text
            return str(factories.remember(response.json()["access_token"]))

        verifier.verify(token())
        new = live.runtime.keyring.rotate("RS256", time.time(), propagation_delay=0)
        with pytest.raises(LookupError, match=new.kid):
            verifier.verify(token())
    finally:
        verifier.close()
        live.stop()


def test_jwks_http_caching_headers(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url, timeout=10) as http:
        first = http.get(JWKS_PATH)
        assert first.status_code == 200
        assert first.headers["content-type"].startswith("application/jwk-set+json")
        etag = first.headers["etag"]
        assert re.fullmatch(r'"[^"]+"', etag)
        assert max_age(first) == SHORT_SIGNING["jwks_max_age"]

        again = http.get(JWKS_PATH, headers={"if-none-match": etag})
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert max_age(again) == SHORT_SIGNING["jwks_max_age"]

        other = http.get(JWKS_PATH, headers={"if-none-match": '"something-else"'})
        assert other.status_code == 200
        assert other.json() == first.json()

        live.runtime.keyring.rotate("RS256", time.time(), live.settings.signing.propagation_delay)
        changed = http.get(JWKS_PATH, headers={"if-none-match": etag})
        assert changed.status_code == 200
        assert changed.headers["etag"] != etag
        assert len(changed.json()["keys"]) == 2
