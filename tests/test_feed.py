"""The revocation feed: RFC 8417 SETs delivered by RFC 8936 poll, with acknowledgements."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import jwt
import pytest
from sqlalchemy import select

from authserver import clients
from authserver.clock import FakeClock
from authserver.feed import CUTOFF_EVENT, REVOKED_EVENT
from authserver.storage.models import Event, SetReceiver
from tests import factories
from tests.conftest import AppHarness, make_settings, running_app

pytestmark = pytest.mark.anyio
basic = factories.basic_auth
FEED = "/sets/poll"


async def poll(h: AppHarness, who: dict[str, str], **body: Any) -> httpx.Response:
    headers = {"authorization": who["authorization"]}  # the body is JSON, not a form
    return await h.http.post(FEED, json={"returnImmediately": True, **body}, headers=headers)


def decode(h: AppHarness, token: str, audience: str) -> dict[str, Any]:
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "secevent+jwt"
    keys = jwt.PyJWKSet.from_json(h.runtime.keyring.snapshot(h.runtime.clock.now()).jwks.decode())
    key = next(k for k in keys.keys if k.key_id == header["kid"])
    claims: dict[str, Any] = jwt.decode(token, key, algorithms=[header["alg"]],
                                        audience=audience, issuer=h.settings.issuer)
    return claims


@pytest.fixture
async def feed(tmp_path: Path, clock: FakeClock) -> Any:
    settings = make_settings(tmp_path, cache={"event_poll_interval": 60.0,
                                              "max_staleness": 600.0},
                             feed={"long_poll_timeout": 0.3})
    async with running_app(settings, clock) as h:
        owner, secret = factories.create_client(h.runtime, scopes=["read", "write"])
        receiver, rs_secret = factories.create_client(h.runtime, name="rs",
                                                      scopes=["revocation-feed"])
        assert secret and rs_secret
        auth = {"authorization": basic(receiver.client_id, rs_secret)["authorization"]}
        yield h, (owner.client_id, secret), receiver.client_id, auth


async def revoke_one(h: AppHarness, owner: tuple[str, str]) -> str:
    issued = await h.http.post("/token", data={"grant_type": "client_credentials"},
                               headers=basic(*owner))
    token = factories.remember(issued.json()["access_token"])
    assert token
    assert (await h.http.post("/revoke", data={"token": token},
                              headers=basic(*owner))).status_code == 200
    return str(jwt.decode(token, options={"verify_signature": False})["jti"])


async def test_feed_delivers_signed_sets_until_acknowledged(feed: Any, clock: FakeClock) -> None:
    h, owner, receiver, auth = feed
    jti = await revoke_one(h, owner)
    with h.runtime.db.session(write=True) as session:
        clients.update_client(session, h.runtime.catalog, owner[0],
                              clients.ClientUpdate(scopes=("read",)), clock.now())
    first = await poll(h, auth)
    assert first.status_code == 200
    assert first.headers["cache-control"] == "no-store"
    sets = first.json()["sets"]
    assert first.json()["moreAvailable"] is False
    claims = [decode(h, token, receiver) for token in sets.values()]
    assert [c["jti"] for c in claims] == list(sets)
    revoked, cutoff = claims
    assert revoked["events"] == {REVOKED_EVENT: {"jti": jti, "client_id": owner[0],
                                                 "exp": revoked["events"][REVOKED_EVENT]["exp"]}}
    assert cutoff["events"][CUTOFF_EVENT]["client_id"] == owner[0]
    assert cutoff["events"][CUTOFF_EVENT]["tokens_valid_after"] == int(clock.now()) + 1
    assert cutoff["events"][CUTOFF_EVENT]["reason"] == "client.updated"

    again = await poll(h, auth)  # nothing acknowledged: delivered again
    assert list(again.json()["sets"]) == list(sets)
    one, two = list(sets)
    partly = await poll(h, auth, ack=[one])
    assert list(partly.json()["sets"]) == [two]
    done = await poll(h, auth, ack=[two])
    assert done.json() == {"sets": {}, "moreAvailable": False}

    # acknowledged ids wait above the cursor until they are older than the rescan margin
    with h.runtime.db.session() as session:
        state = session.get(SetReceiver, f"{receiver}/default")
        assert state is not None
        assert state.acked == sorted(int(j) for j in sets)
    clock.advance(11)
    await poll(h, auth)
    with h.runtime.db.session() as session:
        state = session.get(SetReceiver, f"{receiver}/default")
        assert state is not None
        assert (state.cursor, state.acked) == (int(two), [])


async def test_max_events_and_more_available(feed: Any) -> None:
    h, owner, _, auth = feed
    for _ in range(3):
        await revoke_one(h, owner)
    page = (await poll(h, auth, maxEvents=2)).json()
    assert len(page["sets"]) == 2 and page["moreAvailable"] is True
    rest = (await poll(h, auth, ack=list(page["sets"]), maxEvents=2)).json()
    assert len(rest["sets"]) == 1 and rest["moreAvailable"] is False
    only_ack = (await poll(h, auth, setErrs={next(iter(rest["sets"])): {"err": "x"}},
                           maxEvents=0)).json()
    assert only_ack == {"sets": {}, "moreAvailable": False}
    assert (await poll(h, auth)).json()["sets"] == {}  # an error report ends redelivery
    odd = await poll(h, auth, ack=["²", "9" * 40, "-1", "x", ""])  # foreign jtis: ignored
    assert odd.status_code == 200


async def test_who_may_poll(feed: Any) -> None:
    h, owner, _, auth = feed
    assert (await h.http.post(FEED, json={})).status_code == 401
    no_scope = await poll(h, basic(*owner))
    assert no_scope.status_code == 403
    assert no_scope.json()["error"] == "insufficient_scope"
    # an access token, even one carrying the feed scope, is not how a receiver authenticates:
    # a token meant for some API could otherwise acknowledge (hide) the client's SETs
    rs_token = (await h.http.post("/token", data={"grant_type": "client_credentials"},
                                  headers=auth)).json()["access_token"]  # httpx sets the type
    factories.remember(rs_token)
    assert (await poll(h, {"authorization": f"Bearer {rs_token}"})).status_code == 401


async def test_each_receiver_name_keeps_its_own_position(feed: Any) -> None:
    """A restarted verifier (a new receiver name) still gets the revocations another process
    of the same client acknowledged; acks of ids never sent are ignored."""
    h, owner, _, auth = feed
    first = (await poll(h, auth, receiver="worker-1")).json()["sets"]
    assert (await poll(h, auth, receiver="worker-1", ack=["999999"])).json()["sets"] == {}
    await revoke_one(h, owner)
    sets = (await poll(h, auth, receiver="worker-1")).json()["sets"]
    assert len(sets) == len(first) + 1  # the bogus ack hid nothing
    assert (await poll(h, auth, receiver="worker-1", ack=list(sets))).json()["sets"] == {}
    fresh = (await poll(h, auth, receiver="worker-2")).json()["sets"]
    assert list(fresh) == list(sets)
    bad = await h.http.post(FEED, json={"receiver": "a b"}, headers=auth)
    assert bad.status_code == 400


@pytest.mark.parametrize("body", [{"ack": "1"}, {"ack": [1]}, {"maxEvents": -1},
                                  {"maxEvents": True}, {"returnImmediately": "yes"},
                                  {"setErrs": []}, {"ack": ["1"] * 1001}])
async def test_bad_poll_requests_are_400(feed: Any, body: dict[str, Any]) -> None:
    h, _, _, auth = feed
    response = await h.http.post(FEED, json=body, headers=auth)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_long_poll_waits_then_wakes_on_an_event(feed: Any) -> None:
    h, owner, _, auth = feed
    empty = await h.http.post(FEED, json={}, headers=auth)  # waits long_poll_timeout
    assert empty.json() == {"sets": {}, "moreAvailable": False}
    answers: list[httpx.Response] = []

    async def long_poll() -> None:
        answers.append(await h.http.post(FEED, json={}, headers=auth))

    async with anyio.create_task_group() as tg:
        tg.start_soon(long_poll)
        await anyio.sleep(0.05)
        await revoke_one(h, owner)
        h.runtime.poll_events()  # what the background follower does every poll interval
    assert len(answers[0].json()["sets"]) == 1


async def test_concurrent_first_polls_and_revocations(tmp_path: Path, database_url: str) -> None:
    """Two instances meeting a new receiver (or revoking one token) at once: no 503."""
    import concurrent.futures

    from authserver.feed import PollRequest
    from authserver.revocation import deny_token
    from authserver.storage.db import Database

    migrator = Database(database_url)
    migrator.migrate()
    migrator.dispose()
    async with running_app(make_settings(tmp_path, database_url=database_url)) as h:
        rt = h.runtime
        request = PollRequest(return_immediately=True, receiver="new")

        def first_poll(_: int) -> bool:
            return rt.feed._poll("cli_receiver", request)[1] is False

        def revoke(_: int) -> bool:
            with rt.db.session(write=True) as session:
                return deny_token(session, "same-jti", "cli_x", rt.clock.now() + 60,
                                  rt.clock.now())

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            assert all(pool.map(first_poll, range(8)))
            outcomes = sorted(pool.map(revoke, range(8)))
            assert outcomes == [False] * 7 + [True], outcomes
        with rt.db.session() as session:
            assert len(session.scalars(select(SetReceiver)).all()) == 1
            assert len(session.scalars(select(Event).where(
                Event.type == "token.revoked")).all()) == 1


async def test_a_newer_long_poll_of_the_same_receiver_ends_the_older(feed: Any) -> None:
    h, _, receiver, auth = feed
    h.runtime.feed.settings = h.runtime.feed.settings.model_copy(
        update={"long_poll_timeout": 30.0})
    answers: list[float] = []

    async def long_poll(receiver: str) -> None:
        await h.http.post(FEED, json={"receiver": receiver}, headers=auth)
        answers.append(anyio.current_time())

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            start = anyio.current_time()
            tg.start_soon(long_poll, "one")
            await anyio.sleep(0.1)
            assert set(h.runtime.feed._waiting) == {f"{receiver}/one"}
            tg.start_soon(long_poll, "one")  # takes over: the first answers at once
            await anyio.sleep(0.3)
            assert len(answers) == 1 and answers[0] - start < 1.0
            tg.cancel_scope.cancel()


async def test_past_max_long_polls_a_poll_answers_at_once(feed: Any) -> None:
    h, _, _, auth = feed
    h.runtime.feed.settings = h.runtime.feed.settings.model_copy(
        update={"long_poll_timeout": 30.0, "max_long_polls": 0})
    with anyio.fail_after(5):
        answer = await h.http.post(FEED, json={}, headers=auth)
    assert answer.json() == {"sets": {}, "moreAvailable": False}


def test_an_abandoned_long_poll_stops_waiting(tmp_path: Path) -> None:
    """Over real HTTP: the client gives up, the server stops the wait (no waiter left behind)."""
    import time

    from tests.conftest import start_live_server

    server = start_live_server(tmp_path, feed={"long_poll_timeout": 60.0})
    try:
        receiver, secret = factories.create_client(server.runtime, name="rs",
                                                   scopes=["revocation-feed"])
        assert secret
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.url + FEED, json={}, timeout=0.5,
                       headers={"authorization":
                                basic(receiver.client_id, secret)["authorization"]})
        deadline = time.monotonic() + 5
        while server.runtime.feed._waiting and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.runtime.feed._waiting == {}
    finally:
        server.stop()


async def test_silent_receivers_are_purged(feed: Any, clock: FakeClock) -> None:
    h, _, _, auth = feed
    assert (await poll(h, auth, receiver="gone")).status_code == 200
    clock.advance(3600)
    assert (await poll(h, auth, receiver="alive")).status_code == 200
    assert h.runtime.purge_expired()[:2] == (0, 0)
    clock.advance(86400 - 1800)
    assert h.runtime.purge_expired()[:2] == (0, 1)
    with h.runtime.db.session() as session:
        assert [r.id.split("/")[1] for r in session.scalars(select(SetReceiver))] == ["alive"]
