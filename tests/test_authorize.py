"""The authorization code flow in process: sign-in, consent, code, token, refresh, userinfo,
and what must fail (PKCE, redirect URIs, reuse, revoked consent, disabled person)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from authserver import audit, users
from authserver.clock import FakeClock
from authserver.people import accounts
from authserver.storage.db import Database
from tests.conftest import make_settings, running_app
from tests.factories import create_client, remember
from tests.people_flow import Browser, hidden_fields, pkce_pair, query_of

pytestmark = pytest.mark.anyio
REDIRECT = "http://127.0.0.1/callback"
PASSWORD = "correct horse battery staple"


def _settings(tmp_path: Path, database_url: str, **extra: Any) -> Any:
    migrator = Database(database_url)
    migrator.migrate()  # `serve` migrates only the embedded SQLite store itself
    migrator.dispose()
    return make_settings(tmp_path, database_url, scopes=[
        {"name": "notes.read", "description": "Read your notes"}], **extra)


async def _setup(h: Any, **client: Any) -> tuple[str, str]:
    rt = h.runtime
    with rt.db.session(write=True) as session:
        user = users.create_user(session, "alice", PASSWORD, rt.clock.now(), audit.SYSTEM,
                                 role="user", email="alice@example.com", name="Alice")
    spec: dict[str, Any] = {"name": "Desk Agent", "auth_method": "none",
                            "grant_types": ("authorization_code", "refresh_token"),
                            "scopes": ("notes.read",), "redirect_uris": (REDIRECT,)}
    spec.update(client)
    record, _ = create_client(rt, **spec)
    return user.id, record.client_id


def _authorize_url(client_id: str, challenge: str, **extra: str) -> str:
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
              "code_challenge": challenge, "code_challenge_method": "S256",
              "state": "xyz", "scope": "openid profile email notes.read", "nonce": "n-1"}
    params.update(extra)
    return "/authorize?" + urlencode({k: v for k, v in params.items() if v != ""})


async def _exchange(http: httpx.AsyncClient, client_id: str, code: str, verifier: str,
                    **extra: str) -> httpx.Response:
    return await http.post("/token", data={
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
        "client_id": client_id, "redirect_uri": REDIRECT, **extra})


async def _userinfo(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.get("/userinfo", headers={"authorization": f"Bearer {token}"})


async def test_code_flow_with_consent_refresh_and_userinfo(
        tmp_path: Path, database_url: str) -> None:
    async with running_app(_settings(tmp_path, database_url)) as h:
        user_id, client_id = await _setup(h)
        verifier, challenge = pkce_pair()
        browser = Browser(h.http, "alice", PASSWORD)
        location = await browser.authorize(_authorize_url(client_id, challenge))
        assert location.startswith(REDIRECT + "?")
        back = query_of(location)
        assert back["state"] == "xyz" and back["iss"] == h.settings.issuer  # RFC 9207
        remember(back["code"])
        response = await _exchange(h.http, client_id, back["code"], verifier)
        assert response.status_code == 200, response.text
        body = response.json()
        for name in ("access_token", "refresh_token", "id_token"):
            remember(body[name])
        assert body["scope"] == "openid profile email notes.read"
        claims = h.runtime.revocation.inspector.verified(body["access_token"])
        assert claims is not None and claims["sub"] == user_id
        assert claims["client_id"] == client_id
        id_claims = h.runtime.keyring.snapshot(h.runtime.clock.now()).signer.verify(
            body["id_token"])
        assert id_claims["nonce"] == "n-1" and id_claims["aud"] == client_id
        assert id_claims["sub"] == user_id and id_claims["email"] == "alice@example.com"
        info = await _userinfo(h.http, body["access_token"])
        assert info.status_code == 200
        assert info.json() == {"sub": user_id, "name": "Alice", "preferred_username": "alice",
                               "email": "alice@example.com", "email_verified": False}

        # The consent is remembered: a second authorization goes straight back with a code.
        _, challenge2 = pkce_pair()
        response = await h.http.get(_authorize_url(client_id, challenge2))
        assert response.status_code == 303 and "code=" in response.headers["location"]
        # prompt=consent asks again.
        response = await h.http.get(_authorize_url(client_id, challenge2, prompt="consent"))
        assert response.status_code == 200 and "127.0.0.1" in response.text

        # Refresh: rotated for a public client; the old one used again revokes the family.
        first = body["refresh_token"]
        response = await h.http.post("/token", data={
            "grant_type": "refresh_token", "refresh_token": first, "client_id": client_id})
        assert response.status_code == 200, response.text
        second = remember(response.json()["refresh_token"])
        assert second and second != first
        newer_access = response.json()["access_token"]
        assert (await _userinfo(h.http, newer_access)).status_code == 200
        reuse = await h.http.post("/token", data={
            "grant_type": "refresh_token", "refresh_token": first, "client_id": client_id})
        assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
        after = await h.http.post("/token", data={
            "grant_type": "refresh_token", "refresh_token": second, "client_id": client_id})
        assert after.status_code == 400  # the family is revoked
        assert (await _userinfo(h.http, newer_access)).status_code == 401


async def test_code_reuse_revokes_what_it_issued(tmp_path: Path, database_url: str) -> None:
    async with running_app(_settings(tmp_path, database_url)) as h:
        _, client_id = await _setup(h)
        verifier, challenge = pkce_pair()
        location = await Browser(h.http, "alice", PASSWORD).authorize(
            _authorize_url(client_id, challenge))
        code = remember(query_of(location)["code"])
        assert code
        first = await _exchange(h.http, client_id, code, verifier)
        assert first.status_code == 200
        token, refresh_token = first.json()["access_token"], first.json()["refresh_token"]
        assert (await _userinfo(h.http, token)).status_code == 200
        second = await _exchange(h.http, client_id, code, verifier)
        assert second.status_code == 400 and second.json()["error"] == "invalid_grant"
        assert (await _userinfo(h.http, token)).status_code == 401
        response = await h.http.post("/token", data={
            "grant_type": "refresh_token", "refresh_token": refresh_token,
            "client_id": client_id})
        assert response.status_code == 400


async def test_pkce_and_redirect_rules(harness: Any) -> None:
    h = harness
    _, client_id = await _setup(h)
    verifier, challenge = pkce_pair()
    browser = Browser(h.http, "alice", PASSWORD)
    # No PKCE, or plain: an error sent back to the (verified) redirect URI.
    for extra in ({"code_challenge": ""}, {"code_challenge_method": "plain"},
                  {"code_challenge_method": ""}):
        response = await h.http.get(_authorize_url(client_id, challenge, **extra))
        assert response.status_code == 303
        back = query_of(response.headers["location"])
        assert back["error"] == "invalid_request" and back["state"] == "xyz"
        assert back["iss"] == h.settings.issuer
    # A redirect URI that is not registered: an error page, no redirect at all.
    for bad in ("https://evil.example/cb", REDIRECT + "/x", "http://127.0.0.1/callback#f"):
        response = await h.http.get(_authorize_url(client_id, challenge, redirect_uri=bad))
        assert response.status_code == 400 and "location" not in response.headers
    unknown = await h.http.get(_authorize_url("no-such-client", challenge))
    assert unknown.status_code == 400 and "location" not in unknown.headers
    # A loopback redirect URI matches on any port (RFC 8252 §7.3).
    location = await browser.authorize(_authorize_url(
        client_id, challenge, redirect_uri="http://127.0.0.1:53123/callback"))
    assert location.startswith("http://127.0.0.1:53123/callback?")
    code = query_of(location)["code"]
    wrong = await _exchange(h.http, client_id, code, "x" * 50,
                            redirect_uri="http://127.0.0.1:53123/callback")
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    # The code was used up by the failed attempt: the right verifier cannot use it now.
    again = await _exchange(h.http, client_id, code, verifier,
                            redirect_uri="http://127.0.0.1:53123/callback")
    assert again.status_code == 400
    # response_type other than code, unknown scope: redirected errors.
    response = await h.http.get(_authorize_url(client_id, challenge, response_type="token"))
    assert query_of(response.headers["location"])["error"] == "unsupported_response_type"
    response = await h.http.get(_authorize_url(client_id, challenge, scope="admin.all"))
    assert query_of(response.headers["location"])["error"] == "invalid_scope"
    # A repeated parameter is refused on a page (nothing about it can be trusted).
    response = await h.http.get(_authorize_url(client_id, challenge) + "&state=again")
    assert response.status_code == 400 and "location" not in response.headers


async def test_prompt_none_and_denied_consent(harness: Any) -> None:
    h = harness
    _, client_id = await _setup(h)
    _, challenge = pkce_pair()
    response = await h.http.get(_authorize_url(client_id, challenge, prompt="none"))
    assert query_of(response.headers["location"])["error"] == "login_required"
    location = await Browser(h.http, "alice", PASSWORD, decision="deny").authorize(
        _authorize_url(client_id, challenge))
    assert query_of(location)["error"] == "access_denied"
    response = await h.http.get(_authorize_url(client_id, challenge, prompt="none"))
    assert query_of(response.headers["location"])["error"] == "consent_required"


async def test_revoked_consent_and_disabled_person_end_tokens(
        tmp_path: Path, database_url: str) -> None:
    clock = FakeClock(time.time())
    async with running_app(_settings(tmp_path, database_url), clock) as h:
        user_id, client_id = await _setup(h)
        verifier, challenge = pkce_pair()
        browser = Browser(h.http, "alice", PASSWORD)
        code = query_of(await browser.authorize(_authorize_url(client_id, challenge)))["code"]
        body = (await _exchange(h.http, client_id, code, verifier)).json()
        remember(body["refresh_token"])
        assert (await _userinfo(h.http, body["access_token"])).status_code == 200
        page = await h.http.get("/account")
        assert page.status_code == 200 and "Desk Agent" in page.text
        csrf = dict(hidden_fields(page.text.split('id="consents"', 1)[1]))["csrf_token"]
        response = await h.http.post("/account/consents/revoke",
                                     data={"csrf_token": csrf, "client_id": client_id})
        assert response.status_code == 303
        h.runtime.poll_events()
        assert (await _userinfo(h.http, body["access_token"])).status_code == 401
        refreshed = await h.http.post("/token", data={
            "grant_type": "refresh_token", "refresh_token": body["refresh_token"],
            "client_id": client_id})
        assert refreshed.status_code == 400
        # Consent again (a new token), then disable the person: that one dies too.
        clock.advance(2)  # the cutoff is the next whole second: later tokens live
        verifier, challenge = pkce_pair()
        code = query_of(await browser.authorize(_authorize_url(client_id, challenge)))["code"]
        fresh = await _exchange(h.http, client_id, code, verifier)
        assert fresh.status_code == 200, fresh.text
        token = fresh.json()["access_token"]
        clock.advance(2)
        with h.runtime.db.session(write=True) as session:
            accounts.set_status(session, user_id, "disabled", h.runtime.clock.now(),
                                audit.SYSTEM)
        h.runtime.poll_events()
        assert (await _userinfo(h.http, token)).status_code == 401
        assert (await h.http.get("/account")).status_code == 303  # session ended


async def test_client_rules_for_the_code_flow(harness: Any) -> None:
    from authserver.errors import Invalid
    rt = harness.runtime
    for spec in ({"grant_types": ("implicit",), "redirect_uris": (REDIRECT,)},
                 {"grant_types": ("authorization_code",)},
                 {"grant_types": ("client_credentials",), "auth_method": "none"},
                 {"grant_types": ("authorization_code",), "redirect_uris": ("http://x.example/cb",)},
                 {"grant_types": ("authorization_code",), "redirect_uris": (REDIRECT + "#f",)}):
        with pytest.raises(Invalid):
            create_client(rt, name="bad", **spec)
    # A public client cannot use client_credentials at the token endpoint either.
    _, client_id = await _setup(harness)
    response = await harness.http.post("/token", data={
        "grant_type": "client_credentials", "client_id": client_id})
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


async def test_metadata_document_client_through_consent_to_tokens(tmp_path: Path) -> None:
    """A client_id that is a URL: fetched, shown on the consent page, usable at /token; a
    document whose client_id differs, or a private address, gives an error page, never a
    redirect."""
    import json

    from tests.jwks_server import StaticServer

    with StaticServer() as docs:
        url = docs.url + "/agent.json"
        docs.put("/agent.json", json.dumps({
            "client_id": url, "client_name": "Doc Agent", "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none"}).encode(),
            **{"content-type": "application/json"})
        wrong = docs.url + "/wrong.json"
        docs.put("/wrong.json", json.dumps({
            "client_id": docs.url + "/other.json", "client_name": "X",
            "redirect_uris": [REDIRECT]}).encode(), **{"content-type": "application/json"})
        settings = _settings(tmp_path, f"sqlite:///{tmp_path / 'a.db'}",
                             cimd={"allow_loopback": True})
        async with running_app(settings) as h:
            with h.runtime.db.session(write=True) as session:
                users.create_user(session, "alice", PASSWORD, h.runtime.clock.now(),
                                  audit.SYSTEM, role="user")
            verifier, challenge = pkce_pair()
            page = await h.http.get(_authorize_url(url, challenge, scope="openid"))
            assert page.status_code == 303  # to sign-in: the document was accepted
            location = await Browser(h.http, "alice", PASSWORD).authorize(
                _authorize_url(url, challenge, scope="openid"))
            code = query_of(location)["code"]
            response = await _exchange(h.http, url, code, verifier)
            assert response.status_code == 200, response.text
            body = response.json()
            remember(body["access_token"])
            remember(body["refresh_token"])
            info = await _userinfo(h.http, body["access_token"])
            assert info.status_code == 200
            refused = await h.http.get(_authorize_url(wrong, challenge))
            assert refused.status_code == 400 and "location" not in refused.headers
            assert "not accepted" in refused.text
        strict = _settings(tmp_path / "strict", f"sqlite:///{tmp_path / 'b.db'}")
        async with running_app(strict) as h:  # loopback not allowed: 127.0.0.1 is private
            refused = await h.http.get(_authorize_url(url, challenge))
            assert refused.status_code == 400 and "location" not in refused.headers


async def test_revoking_a_refresh_token_ends_its_family(harness: Any) -> None:
    h = harness
    _, client_id = await _setup(h)
    verifier, challenge = pkce_pair()
    code = query_of(await Browser(h.http, "alice", PASSWORD).authorize(
        _authorize_url(client_id, challenge)))["code"]
    body = (await _exchange(h.http, client_id, code, verifier)).json()
    remember(body["refresh_token"])
    assert (await _userinfo(h.http, body["access_token"])).status_code == 200
    other, secret = create_client(h.runtime, name="other")
    assert secret
    foreign = await h.http.post("/revoke", data={"token": body["refresh_token"]},
                                auth=(other.client_id, secret))
    assert foreign.status_code == 400  # unauthorized_client: not its token
    response = await h.http.post("/revoke", data={
        "token": body["refresh_token"], "token_type_hint": "refresh_token",
        "client_id": client_id})
    assert response.status_code == 200
    assert (await _userinfo(h.http, body["access_token"])).status_code == 401
    refreshed = await h.http.post("/token", data={
        "grant_type": "refresh_token", "refresh_token": body["refresh_token"],
        "client_id": client_id})
    assert refreshed.status_code == 400
    again = await h.http.post("/revoke", data={"token": "rt_unknown", "client_id": client_id})
    assert again.status_code == 200
