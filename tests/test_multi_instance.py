"""Three instances on one PostgreSQL and one Redis (docs/deploy.md "Several instances").

Each instance is a uvicorn server on its own loopback port (a thread each, as the other e2e
tests run theirs), with its own runtime, caches and event follower, all sharing one database,
one keys directory and one issuer (the URL a load balancer would give them). Checked:

- a client disabled and a token revoked through A are refused by B and C: within milliseconds
  with the fan-out (Redis pub/sub, or PostgreSQL NOTIFY), within `cache.event_poll_interval`
  when the fan-out channel is down (polling), measured;
- a key rotated through A is in B's and C's JWKS at least `jwks_max_age` before it signs;
- tokens of every instance validate at one `authserver.resource` verifier whose requests are
  spread over the three instances.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc.jws import extract_compact

from authserver import apikeys, audit
from authserver.keyring import Keyring
from authserver.resource import Settings as VerifierSettings
from authserver.resource import Verifier
from authserver.storage.db import Database
from authserver.wiring import build_runtime, create_app
from tests import factories
from tests.conftest import (
    POSTGRES_ENV,
    LiveServer,
    bind_loopback,
    fresh_postgres_database,
    make_settings,
    serve_in_thread,
)

pytestmark = pytest.mark.anyio

REDIS_ENV = "AUTHSERVER_TEST_REDIS_URL"
ISSUER = "http://auth.instances.test"  # what the load balancer in front would be called
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1: the channel is down
SIGNING = {"algorithm": "ES256", "jwks_max_age": 1, "propagation_delay": 3,
           "reload_interval": 0.5}
ROUNDS = 3  # revocations measured per test
FANOUT_POLL = 5.0  # with the fan-out up, a poll this rare cannot explain a quick refusal
FALLBACK_POLL = 1.0  # with it down, polling is the bound
SLACK = 1.5  # scheduling slack on a busy 2-core machine
DEADLINE = 15.0  # every wait in this file ends by then


def _urls() -> tuple[str, str]:
    postgres, redis_url = os.environ.get(POSTGRES_ENV), os.environ.get(REDIS_ENV)
    if not postgres or not redis_url:
        pytest.skip(f"needs {POSTGRES_ENV} and {REDIS_ENV} (one PostgreSQL and one Redis "
                    "shared by three instances)")
    return postgres, redis_url


@dataclass
class Cluster:
    instances: list[LiveServer]
    database_url: str
    keys_dir: Path

    @property
    def a(self) -> LiveServer:
        return self.instances[0]


@contextmanager
def cluster(tmp_path: Path, base_url: str, redis_url: str, fanout: str,
            poll: float) -> Iterator[Cluster]:
    channel = "mi_" + os.urandom(6).hex()  # this test's own channel on a shared Redis/database
    with fresh_postgres_database(base_url) as url:
        migrator = Database(url)
        migrator.migrate()
        migrator.dispose()
        keys = tmp_path / "keys"
        # Provisioned before the instances start, as docs/deploy.md asks for several instances.
        Keyring(keys, 3600).ensure_signer("ES256", time.time())
        instances: list[LiveServer] = []
        try:
            for name in ("a", "b", "c"):
                sock, _ = bind_loopback()
                settings = make_settings(
                    tmp_path / name, database_url=url, issuer=ISSUER, keys_dir=str(keys),
                    redis_url=redis_url, signing=SIGNING,
                    cache={"event_poll_interval": poll, "max_staleness": 30.0,
                           "fanout": fanout, "fanout_channel": channel})
                runtime = build_runtime(settings)
                server, thread = serve_in_thread(create_app(settings, runtime=runtime), sock)
                port = sock.getsockname()[1]
                instances.append(LiveServer(f"http://127.0.0.1:{port}", runtime, server, thread))
            yield Cluster(instances, url, keys)
        finally:
            for live in instances:
                live.stop()
            assert not any(live.thread.is_alive() for live in instances), "an instance hung"


class SpreadTransport(httpx.AsyncBaseTransport):
    """The load balancer: requests for the issuer go to the instances in turn."""

    def __init__(self, instances: list[LiveServer]) -> None:
        self.targets = [httpx.URL(live.url) for live in instances]
        self.inner = httpx.AsyncHTTPTransport()
        self.turn = 0
        self.hits = [0] * len(instances)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = self.turn % len(self.targets)
        self.turn += 1
        self.hits[index] += 1
        target = self.targets[index]
        request.url = request.url.copy_with(scheme=target.scheme, host=target.host,
                                            port=target.port)
        request.headers["host"] = f"{target.host}:{target.port}"
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def token_from(http: httpx.AsyncClient, live: LiveServer, auth: tuple[str, str]) -> str:
    answer = await http.post(live.url + "/token", data={"grant_type": "client_credentials"},
                             headers=factories.basic_auth(*auth))
    assert answer.status_code == 200, answer.text
    return str(factories.remember(answer.json()["access_token"]))


async def seconds_until(probe: Any, since: float) -> float:
    """Seconds from `since` until `await probe()` is true (probing every 10 ms), bounded."""
    import anyio

    while not await probe():
        if time.monotonic() - since > DEADLINE:
            raise AssertionError(f"not seen within {DEADLINE} s")
        await anyio.sleep(0.01)
    return time.monotonic() - since


def admin_key(live: LiveServer) -> str:
    rt = live.runtime
    with rt.db.session(write=True) as session:
        _, key = apikeys.create_key(session, rt.catalog,
                                    apikeys.ApiKeySpec("ops", "org_default", ("*",)),
                                    "as", rt.clock.now(), audit.Actor("test"))
    return str(factories.remember(key))


async def measure_revocations(http: httpx.AsyncClient, c: Cluster) -> dict[str, list[float]]:
    """ROUNDS times: a client disabled through A, and a token revoked through A; the seconds
    until B and C refuse the client's token request / introspect the token as inactive."""
    a, others = c.a, c.instances[1:]
    admin = {"x-api-key": admin_key(a)}
    resource, resource_secret = factories.create_client(a.runtime, name="rs")
    assert resource_secret is not None
    seen: dict[str, list[float]] = {"client disabled": [], "token revoked": []}
    for _ in range(ROUNDS):
        record, secret = factories.create_client(a.runtime, scopes=["read"])
        assert secret is not None
        auth = (record.client_id, secret)
        token = await token_from(http, others[0], auth)
        for live in others:  # each instance has the client cached now
            await token_from(http, live, auth)

        revoked = await http.post(a.url + "/revoke", data={"token": token},
                                  headers=factories.basic_auth(*auth))
        assert revoked.status_code == 200
        since = time.monotonic()
        for live in others:
            async def inactive(live: LiveServer = live, token: str = token) -> bool:
                answer = await http.post(live.url + "/introspect", data={"token": token},
                                         headers=factories.basic_auth(resource.client_id,
                                                                      resource_secret))
                assert answer.status_code == 200, answer.text
                return answer.json() == {"active": False}
            seen["token revoked"].append(await seconds_until(inactive, since))

        disabled = await http.post(f"{a.url}/api/v1/clients/{record.client_id}/disable",
                                   headers=admin)
        assert disabled.status_code == 200, disabled.text
        since = time.monotonic()
        refused_by_a = await http.post(a.url + "/token",
                                       data={"grant_type": "client_credentials"},
                                       headers=factories.basic_auth(*auth))
        assert refused_by_a.status_code == 401  # A itself at once
        for live in others:
            async def refused(live: LiveServer = live,
                              auth: tuple[str, str] = auth) -> bool:
                answer = await http.post(live.url + "/token",
                                         data={"grant_type": "client_credentials"},
                                         headers=factories.basic_auth(*auth))
                if answer.status_code == 200:
                    factories.remember(answer.json()["access_token"])
                    return False
                assert answer.status_code == 401, answer.text
                return True
            seen["client disabled"].append(await seconds_until(refused, since))
    return seen


def report(title: str, seen: dict[str, list[float]]) -> None:
    for what, values in seen.items():
        print(f"\n{title}: {what}, seen by B and C after "
              f"median {statistics.median(values) * 1000:.0f} ms, "
              f"max {max(values) * 1000:.0f} ms over {len(values)}")


def kid_of(token: str) -> str:
    return str(extract_compact(token.encode()).protected["kid"])


@pytest.mark.parametrize("fanout", ["redis", "postgres"])
async def test_three_instances_share_revocations_keys_and_tokens(
    tmp_path: Path, http: httpx.AsyncClient, fanout: str
) -> None:
    import anyio

    base, redis_url = _urls()
    with cluster(tmp_path, base, redis_url, fanout, FANOUT_POLL) as c:
        a, b, cc = c.instances
        async def subscribed() -> bool:  # every instance listens before anything happens
            return all(live.runtime.fanout is not None and live.runtime.fanout.connected
                       for live in c.instances)
        await seconds_until(subscribed, time.monotonic())

        # -- revocation: the fan-out carries it to B and C long before their next poll ------
        seen = await measure_revocations(http, c)
        report(f"fan-out {fanout}, poll every {FANOUT_POLL:.0f} s", seen)
        for what, values in seen.items():
            assert max(values) < 1.0, (what, values)
        for live in c.instances:  # each instance heard the changes
            assert live.runtime.fanout is not None and live.runtime.fanout.received > 0

        # -- tokens of every instance validate at one verifier --------------------------------
        spread = SpreadTransport(c.instances)
        verifier = Verifier(VerifierSettings(issuer=ISSUER, audience=ISSUER),
                            http=httpx.AsyncClient(transport=spread, timeout=10))
        await verifier.start()
        try:
            record, secret = factories.create_client(a.runtime, scopes=["read"])
            assert secret is not None
            auth = (record.client_id, secret)
            (old_kid,) = {kid_of(await token_from(http, live, auth)) for live in c.instances}
            for live in c.instances:
                assert (await verifier.verify(await token_from(http, live, auth))).client_id \
                    == record.client_id

            # -- a key rotated through A: published by B and C before it signs ----------------
            new = a.runtime.keyring.rotate("ES256", time.time(), SIGNING["propagation_delay"])
            assert new.activate_at is not None
            published: dict[str, float] = {}
            for name, live in (("b", b), ("c", cc)):
                async def listed(live: LiveServer = live) -> bool:
                    answer = await http.get(live.url + "/.well-known/jwks.json")
                    return new.kid in {k["kid"] for k in answer.json()["keys"]}
                await seconds_until(listed, time.monotonic())
                published[name] = time.time()
            for name, at in published.items():
                print(f"\nkey {new.kid[:8]} published by {name} "
                      f"{new.activate_at - at:.2f} s before it signs")
                assert at + SIGNING["jwks_max_age"] <= new.activate_at, (name, published)
            # meanwhile every instance still signs with the old key
            assert {kid_of(await token_from(http, live, auth)) for live in c.instances} \
                == {old_kid}
            await anyio.sleep(max(0.0, new.activate_at - time.time()) + 0.2)
            tokens = [await token_from(http, live, auth) for live in c.instances]
            assert {kid_of(t) for t in tokens} == {new.kid}
            for token in tokens:  # the verifier refetched per max-age, from any instance
                assert (await verifier.verify(token)).client_id == record.client_id
            assert min(spread.hits) >= 1
        finally:
            await verifier.aclose()
            await spread.aclose()


async def test_with_the_fanout_down_polling_keeps_the_bound(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    base, _ = _urls()
    # Redis unreachable: the channel never comes up; rate limits fail open (docs/deploy.md).
    with cluster(tmp_path, base, UNREACHABLE_REDIS, "redis", FALLBACK_POLL) as c:
        seen = await measure_revocations(http, c)
        report(f"fan-out down, poll every {FALLBACK_POLL:.0f} s", seen)
        for what, values in seen.items():
            assert max(values) <= FALLBACK_POLL + SLACK, (what, values)
        assert not any(live.runtime.fanout.connected  # type: ignore[union-attr]
                       for live in c.instances)
