"""RFC 7009 revocation and RFC 7662 introspection, and the deny-list behind them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from authserver import clients
from authserver.clock import FakeClock
from authserver.revocation import deny_token
from authserver.storage.db import Database
from authserver.storage.models import AuditEntry, Event, RevokedToken
from tests import factories
from tests.conftest import AppHarness, make_settings, running_app

pytestmark = pytest.mark.anyio
basic = factories.basic_auth


async def new_token(h: AppHarness, client_id: str, secret: str) -> str:
    response = await h.http.post("/token", data={"grant_type": "client_credentials"},
                                 headers=basic(client_id, secret))
    assert response.status_code == 200
    token = factories.remember(response.json()["access_token"])
    assert token is not None
    return token


async def introspect(h: AppHarness, token: str, who: tuple[str, str]) -> httpx.Response:
    return await h.http.post("/introspect", data={"token": token}, headers=basic(*who))


async def revoke(h: AppHarness, token: str, who: tuple[str, str], **extra: str) -> httpx.Response:
    return await h.http.post("/revoke", data={"token": token, **extra}, headers=basic(*who))


@pytest.fixture
def pair(harness: AppHarness) -> tuple[tuple[str, str], tuple[str, str]]:
    """Two clients with secrets: the token holder and a resource server."""
    owner, owner_secret = factories.create_client(harness.runtime, scopes=["read", "write"])
    rs, rs_secret = factories.create_client(harness.runtime, name="resource server")
    assert owner_secret and rs_secret
    return (owner.client_id, owner_secret), (rs.client_id, rs_secret)


async def test_introspection_of_a_live_token(harness: AppHarness, pair: Any) -> None:
    owner, rs = pair
    token = await new_token(harness, *owner)
    response = await introspect(harness, token, rs)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["active"] is True
    assert body["token_type"] == "Bearer"
    assert body["client_id"] == body["sub"] == owner[0]
    assert body["scope"] == "read write"
    assert body["iss"] == harness.settings.issuer
    assert body["aud"] == harness.settings.issuer
    assert body["exp"] == body["iat"] + 3600
    assert isinstance(body["jti"], str)


async def test_introspection_needs_client_authentication(harness: AppHarness, pair: Any) -> None:
    owner, _ = pair
    token = await new_token(harness, *owner)
    response = await harness.http.post("/introspect", data={"token": token})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    missing = await harness.http.post("/introspect", data={}, headers=basic(*owner))
    assert missing.status_code == 400


@pytest.mark.parametrize("bad", ["", "not-a-jwt", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "x" * 9000])
async def test_malformed_tokens_are_exactly_inactive(
    harness: AppHarness, pair: Any, bad: str
) -> None:
    _, rs = pair
    response = await harness.http.post("/introspect", data={"token": bad or "-"},
                                       headers=basic(*rs))
    assert response.status_code == 200
    assert response.json() == {"active": False}


async def test_a_token_signed_by_someone_else_is_inactive(
    harness: AppHarness, pair: Any, tmp_path: Path
) -> None:
    _, rs = pair
    async with running_app(make_settings(tmp_path / "other")) as other:
        stranger, secret = factories.create_client(other.runtime)
        assert secret
        foreign = await new_token(other, stranger.client_id, secret)
    assert (await introspect(harness, foreign, rs)).json() == {"active": False}


async def test_expired_tokens_are_inactive(
    harness: AppHarness, pair: Any, clock: FakeClock
) -> None:
    owner, rs = pair
    token = await new_token(harness, *owner)
    clock.advance(3601)
    assert (await introspect(harness, token, rs)).json() == {"active": False}


async def test_revocation_kills_one_token(harness: AppHarness, pair: Any) -> None:
    owner, rs = pair
    token = await new_token(harness, *owner)
    other = await new_token(harness, *owner)
    live = (await introspect(harness, token, rs)).json()
    response = await revoke(harness, token, owner, token_type_hint="access_token")
    assert response.status_code == 200
    assert response.content == b""
    assert (await introspect(harness, token, rs)).json() == {"active": False}
    assert (await introspect(harness, other, rs)).json()["active"] is True
    assert (await revoke(harness, token, owner)).status_code == 200  # twice: a no-op
    with harness.runtime.db.session() as session:
        rows = session.scalars(select(RevokedToken)).all()
        assert [(r.jti, r.client_id, r.exp) for r in rows] == [
            (live["jti"], owner[0], live["exp"])]
        revoked = session.scalars(select(Event).where(Event.type == "token.revoked")).all()
        assert len(revoked) == 1
        assert revoked[0].data["jti"] == rows[0].jti
        (entry,) = session.scalars(select(AuditEntry).where(
            AuditEntry.action == "token.revoke")).all()  # in the same transaction, once
        assert (entry.actor, entry.target, entry.source) == (
            f"client:{owner[0]}", live["jti"], "127.0.0.1")
        assert token not in str(entry.details)


async def test_revocation_answers(harness: AppHarness, pair: Any) -> None:
    owner, rs = pair
    token = await new_token(harness, *owner)
    assert (await revoke(harness, "not-a-token", owner)).status_code == 200  # RFC 7009 §2.2
    foreign = await revoke(harness, token, rs)
    assert foreign.status_code == 400
    assert foreign.json()["error"] == "unauthorized_client"
    assert (await introspect(harness, token, rs)).json()["active"] is True
    assert (await harness.http.post("/revoke", data={"token": token})).status_code == 401
    assert (await harness.http.post("/revoke", data={}, headers=basic(*owner))).status_code == 400


async def test_revocation_storage_failure_is_503(harness: AppHarness, pair: Any) -> None:
    owner, rs = pair
    token = await new_token(harness, *owner)
    service = harness.runtime.revocation
    working = service.db
    service.db = Database("postgresql://postgres@127.0.0.1:1/nowhere")
    try:
        response = await revoke(harness, token, owner)
        assert response.status_code == 503
        assert response.json()["error"] == "temporarily_unavailable"
    finally:
        service.db.dispose()
        service.db = working
    assert (await introspect(harness, token, rs)).json()["active"] is True  # nothing faked


async def test_client_changes_cut_off_earlier_tokens(
    harness: AppHarness, pair: Any, clock: FakeClock
) -> None:
    owner, rs = pair
    rt = harness.runtime
    token = await new_token(harness, *owner)
    clock.advance(2)
    with rt.db.session(write=True) as session:
        clients.update_client(session, rt.catalog, owner[0],
                              clients.ClientUpdate(scopes=("read",)), clock.now())
    rt.poll_events()  # the change came from another process (the CLI)
    assert (await introspect(harness, token, rs)).json() == {"active": False}
    fresh = await new_token(harness, *owner)
    assert (await introspect(harness, fresh, rs)).json()["scope"] == "read"

    clock.advance(2)
    with rt.db.session(write=True) as session:
        clients.set_disabled(session, owner[0], True, clock.now())
    rt.poll_events()
    assert (await introspect(harness, fresh, rs)).json() == {"active": False}
    with rt.db.session(write=True) as session:
        clients.set_disabled(session, owner[0], False, clock.now())
        clients.delete_client(session, owner[0], clock.now())
    rt.poll_events()
    assert (await introspect(harness, fresh, rs)).json() == {"active": False}


async def test_the_deny_list_outlives_a_restart_and_follows_the_log(
    tmp_path: Path, clock: FakeClock
) -> None:
    settings = make_settings(tmp_path, cache={"event_poll_interval": 60.0,
                                              "max_staleness": 600.0})
    async with running_app(settings, clock) as h:
        owner, secret = factories.create_client(h.runtime)
        rs, rs_secret = factories.create_client(h.runtime, name="rs")
        assert secret and rs_secret
        revoked_here = await new_token(h, owner.client_id, secret)
        revoked_elsewhere = await new_token(h, owner.client_id, secret)
        assert (await revoke(h, revoked_here, (owner.client_id, secret))).status_code == 200
        claims = h.runtime.revocation.inspector.verified(revoked_elsewhere)
        assert claims is not None
        with h.runtime.db.session(write=True) as session:  # another instance revoked it
            deny_token(session, claims["jti"], owner.client_id, claims["exp"], clock.now())
        who = (rs.client_id, rs_secret)
        assert (await introspect(h, revoked_elsewhere, who)).json()["active"] is True
        h.runtime.poll_events()
        assert (await introspect(h, revoked_elsewhere, who)).json() == {"active": False}
    async with running_app(settings, clock) as again:
        for token in (revoked_here, revoked_elsewhere):
            assert (await introspect(again, token, who)).json() == {"active": False}
        clock.advance(3601)
        assert again.runtime.purge_expired()[:2] == (2, 0)
        with again.runtime.db.session() as session:
            assert session.scalars(select(RevokedToken)).all() == []


async def test_a_stale_deny_list_defers_to_the_store(tmp_path: Path, clock: FakeClock) -> None:
    """When the event log cannot be followed past the bound, another instance's revocation is
    read from the store; with the store down too, introspection is 503, never `active`."""
    settings = make_settings(tmp_path, cache={"event_poll_interval": 60.0, "max_staleness": 5.0})
    async with running_app(settings, clock) as h:
        rt = h.runtime
        owner, secret = factories.create_client(rt)
        rs, rs_secret = factories.create_client(rt, name="rs")
        assert secret and rs_secret
        who = (rs.client_id, rs_secret)
        token = await new_token(h, owner.client_id, secret)
        claims = rt.revocation.inspector.verified(token)
        assert claims is not None
        with rt.db.session(write=True) as session:  # another instance revoked it
            deny_token(session, claims["jti"], owner.client_id, claims["exp"], clock.now())
        assert (await introspect(h, token, who)).json()["active"] is True  # within the bound
        clock.advance(6)  # no event poll got through since
        rt.enforce_staleness()
        assert (await introspect(h, token, who)).json() == {"active": False}
        working = rt.revocation.inspector.db
        rt.revocation.inspector.db = Database("postgresql://postgres@127.0.0.1:1/nowhere")
        try:
            fresh = await new_token(h, owner.client_id, secret)
            response = await introspect(h, fresh, who)
            assert response.status_code == 503
            assert response.json()["error"] == "temporarily_unavailable"
        finally:
            rt.revocation.inspector.db.dispose()
            rt.revocation.inspector.db = working
        rt.poll_events()  # the log is followed again: the memory is trusted again
        assert not rt.denied.stale
        assert (await introspect(h, token, who)).json() == {"active": False}
