"""People through the admin API (`/api/v1/users`): create, list (paged), show, change,
disable, enable, delete, consents; organisation scoping, no escalation, bad input as 4xx in
the envelope, and disabling or deleting a person ending their tokens and sessions."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from authserver import audit, users
from authserver.people import consents
from authserver.storage.models import AuditEntry, Consent, Event, User, WebSession
from authserver.tokens import mint_access_token
from tests import factories
from tests.conftest import AppHarness
from tests.test_api_keys import assert_envelope, new_key, new_org

pytestmark = pytest.mark.anyio
API = "/api/v1"
PASSWORD = "correct horse battery staple"


async def make(h: AppHarness, key: str, status: int = 201, **body: Any) -> dict[str, Any]:
    body.setdefault("password", PASSWORD)
    answer = await h.http.post(f"{API}/users", headers={"x-api-key": key}, json=body)
    assert answer.status_code == status, answer.text
    made: dict[str, Any] = answer.json()
    return made


def person_token(h: AppHarness, user_id: str, client_id: str) -> str:
    """An access token of the person for the client, as the authorization code flow mints."""
    rt = h.runtime
    signer = rt.keyring.snapshot(rt.clock.now()).signer
    assert signer is not None
    issued = mint_access_token(signer, issuer=h.settings.issuer, client_id=client_id,
                               subject=user_id, org_id="org_default",
                               audience="https://api.example.test", scopes=("read",),
                               lifetime=3600, now=rt.clock.now())
    token = factories.remember(issued.token)
    assert token
    return token


async def active(h: AppHarness, token: str) -> bool:
    h.runtime.poll_events()  # this instance follows the event log (as its poller would)
    return await h.runtime.revocation.inspector.active(token) is not None


async def admin_ui_session(h: AppHarness, username: str) -> httpx.AsyncClient:
    """The test client as this person's browser, signed in to the admin UI (the admin API
    calls it also makes carry an API key and ignore the cookie)."""
    signed = await h.http.post("/admin/login", data={"username": username,
                                                     "password": PASSWORD})
    assert signed.status_code == 303, signed.text
    assert (await h.http.get("/admin")).status_code == 200
    return h.http


async def test_create_list_show_and_change(harness: AppHarness) -> None:
    h = harness
    key_id, admin = new_key(h, "org_default", "*")
    auth = {"x-api-key": admin}
    made = await make(h, admin, username="Alice", email="alice@example.com", name="Alice A",
                      email_verified=True)
    h.runtime.clock.advance(1)  # type: ignore[attr-defined]  # the harness's FakeClock
    assert made["username"] == "alice" and made["role"] == "user"  # the default role
    assert made["org_id"] == "org_default" and made["status"] == "active"
    assert made["email_verified"] is True and made["last_login_at"] is None
    for i in range(3):
        await make(h, admin, username=f"p{i}", role="admin" if i == 0 else "user")
        h.runtime.clock.advance(1)  # type: ignore[attr-defined]
    for answer in [made, (await h.http.get(f"{API}/users", headers=auth)).json()]:
        text = str(answer)
        assert "password" not in text and "argon2" not in text and PASSWORD not in text

    first = (await h.http.get(f"{API}/users", headers=auth, params={"limit": 2})).json()
    assert [u["username"] for u in first["data"]] == ["alice", "p0"] and first["next_cursor"]
    rest = (await h.http.get(f"{API}/users", headers=auth,
                             params={"cursor": first["next_cursor"]})).json()
    assert [u["username"] for u in rest["data"]] == ["p1", "p2"] and rest["next_cursor"] is None
    admins = (await h.http.get(f"{API}/users", headers=auth, params={"role": "admin"})).json()
    assert [u["username"] for u in admins["data"]] == ["p0"]

    user_id = made["id"]
    shown = await h.http.get(f"{API}/users/{user_id}", headers=auth)
    assert shown.status_code == 200 and shown.json() == made
    assert shown.headers["cache-control"] == "no-store"
    changed = await h.http.patch(f"{API}/users/{user_id}", headers=auth, json={
        "name": "Alice B", "email": "alice@new.example"})
    assert changed.status_code == 200, changed.text
    body = changed.json()
    # a new address is not verified unless the change says so
    assert body["name"] == "Alice B" and body["email"] == "alice@new.example"
    assert body["email_verified"] is False
    body = (await h.http.patch(f"{API}/users/{user_id}", headers=auth, json={
        "email_verified": True, "role": "admin", "password": "another long password"})).json()
    assert body["email_verified"] is True and body["role"] == "admin"
    cleared = (await h.http.patch(f"{API}/users/{user_id}", headers=auth,
                                  json={"email": ""})).json()
    assert cleared["email"] is None
    with h.runtime.db.session(write=True) as session:
        assert users.login(session, "alice", "another long password",
                           h.runtime.clock.now()).user is not None
        entries = session.scalars(select(AuditEntry).where(AuditEntry.target == user_id)
                                  .order_by(AuditEntry.id)).all()
    assert [e.action for e in entries] == ["user.create", "user.update", "user.update",
                                           "user.set_password", "user.update", "user.login"]
    assert entries[0].actor == f"api_key:{key_id}" and entries[0].request_id
    assert entries[2].details == {"changed": ["email_verified", "role"], "role": "admin"}
    assert all("another long password" not in str(e.details) for e in entries)


async def test_organisations_see_only_their_people(harness: AppHarness) -> None:
    h = harness
    _, admin = new_key(h, "org_default", "*")
    org = new_org(h)
    _, tenant = new_key(h, org, "users.*")
    theirs = await make(h, tenant, username="tina")
    assert theirs["org_id"] == org
    ours = await make(h, admin, username="oscar")
    await make(h, admin, username="olga", org_id=org)
    listed = (await h.http.get(f"{API}/users", headers={"x-api-key": tenant})).json()
    assert sorted(u["username"] for u in listed["data"]) == ["olga", "tina"]
    everyone = (await h.http.get(f"{API}/users", headers={"x-api-key": admin})).json()
    assert len(everyone["data"]) == 3
    only = (await h.http.get(f"{API}/users", headers={"x-api-key": admin},
                             params={"org_id": org})).json()
    assert len(only["data"]) == 2
    t = {"x-api-key": tenant}
    for method, path in [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/disable"),
                         ("POST", "/enable"), ("GET", "/consents"),
                         ("DELETE", "/consents?client_id=x")]:
        answer = await h.http.request(method, f"{API}/users/{ours['id']}{path}", headers=t,
                                      json={"name": "x"} if method == "PATCH" else None)
        assert_envelope(answer, 404, "not_found")
    assert_envelope(await h.http.get(f"{API}/users", headers=t,
                                     params={"org_id": "org_default"}),
                    404, "organization_not_found")
    assert_envelope(await h.http.post(f"{API}/users", headers=t, json={
        "username": "sneaky", "password": PASSWORD, "org_id": "org_default"}),
        404, "organization_not_found")
    with h.runtime.db.session() as session:
        assert session.get(User, ours["id"]) is not None
        assert session.scalars(select(User).where(User.username == "sneaky")).first() is None


async def test_permissions_and_no_escalation(harness: AppHarness) -> None:
    h = harness
    _, admin = new_key(h, "org_default", "*")
    _, reader = new_key(h, "org_default", "users.read")
    _, manager = new_key(h, "org_default", "users.*")
    root = await make(h, admin, username="root", role="admin")
    person = await make(h, admin, username="pat")
    r, m = {"x-api-key": reader}, {"x-api-key": manager}
    assert (await h.http.get(f"{API}/users/{person['id']}", headers=r)).status_code == 200
    for method, path, action in [
            ("POST", "", "users.create"), ("PATCH", f"/{person['id']}", "users.update"),
            ("POST", f"/{person['id']}/disable", "users.update"),
            ("DELETE", f"/{person['id']}/consents?client_id=x", "users.update"),
            ("DELETE", f"/{person['id']}", "users.delete")]:
        answer = await h.http.request(method, f"{API}/users{path}", headers=r, json={})
        error = assert_envelope(answer, 403, "insufficient_permissions")
        assert error["details"]["required"] == action
    # an admin holds every permission in the admin UI: only a `*` caller makes one
    assert_envelope(await h.http.post(f"{API}/users", headers=m, json={
        "username": "boss", "password": PASSWORD, "role": "admin"}),
        403, "insufficient_permissions")
    assert_envelope(await h.http.patch(f"{API}/users/{person['id']}", headers=m,
                                       json={"role": "admin"}), 403, "insufficient_permissions")
    assert_envelope(await h.http.patch(f"{API}/users/{root['id']}", headers=m,
                                       json={"password": "a takeover password"}),
                    403, "insufficient_permissions")
    # what it may do
    assert (await h.http.patch(f"{API}/users/{person['id']}", headers=m, json={
        "password": "a brand new password"})).status_code == 200
    assert (await h.http.patch(f"{API}/users/{root['id']}", headers=m, json={
        "role": "user"})).status_code == 200
    assert (await h.http.get(f"{API}/users", headers={})).status_code == 401


async def test_bad_input_is_a_4xx_in_the_envelope(harness: AppHarness) -> None:
    h = harness
    _, admin = new_key(h, "org_default", "*")
    auth = {"x-api-key": admin}
    person = await make(h, admin, username="pat")
    one = f"{API}/users/{person['id']}"

    async def refused(method: str, url: str, status: int | tuple[int, ...] = 400,
                      **kwargs: Any) -> None:
        answer = await h.http.request(method, url, headers={**auth, **kwargs.pop(
            "headers", {})}, **kwargs)
        statuses = status if isinstance(status, tuple) else (status,)
        assert answer.status_code in statuses, (method, url, kwargs, answer.text)
        assert answer.json()["error"]["status"] == answer.status_code

    for body in [{"username": "x"}, {"password": PASSWORD}, {"username": 5, "password": "x"},
                 {"username": "bad name!", "password": PASSWORD},
                 {"username": "x" * 300, "password": PASSWORD},
                 {"username": "ok", "password": "short"},
                 {"username": "ok", "password": "p" * 2000},
                 {"username": "ok", "password": PASSWORD, "role": "root"},
                 {"username": "ok", "password": PASSWORD, "email": "not-an-address"},
                 {"username": "ok", "password": PASSWORD, "email": "a b@example.com"},
                 {"username": "ok", "password": PASSWORD, "email": ["x"]},
                 {"username": "ok", "password": PASSWORD, "email_verified": "yes"},
                 {"username": "ok", "password": PASSWORD, "name": "tab\there"},
                 {"username": "ok", "password": PASSWORD, "name": "n" * 300},
                 {"username": "ok", "password": PASSWORD, "name": "nul\x00"},
                 {"username": "ok\x00", "password": PASSWORD}]:
        await refused("POST", f"{API}/users", json=body)
    await refused("POST", f"{API}/users", 409, json={"username": "PAT", "password": PASSWORD})
    await refused("POST", f"{API}/users", 404, json={"username": "ok", "password": PASSWORD,
                                                     "org_id": "org_nope"})
    await refused("POST", f"{API}/users", content=b"{", headers={
        "content-type": "application/json"})
    await refused("POST", f"{API}/users", content=b"[]", headers={
        "content-type": "application/json"})
    await refused("POST", f"{API}/users", content=b'{"username": "\xff"}', headers={
        "content-type": "application/json"})
    await refused("POST", f"{API}/users", data={"username": "ok", "password": PASSWORD})
    await refused("POST", f"{API}/users", 413, content=b"{" + b" " * (
        h.settings.server.max_body_bytes + 1) + b"}", headers={
        "content-type": "application/json"})
    for body in [{"role": "root"}, {"email": "nope"}, {"email_verified": 1}, {"name": 7},
                 {"password": "short"}, {"name": "\x00"}]:
        await refused("PATCH", one, json=body)
    for params in [{"limit": "0"}, {"limit": "x"}, {"cursor": "nope"}, {"cursor": "e30"},
                   {"role": "root"}, {"status": "gone"}]:
        await refused("GET", f"{API}/users", params=params)
    for value in ["usr_0000000000000000", "x" * 500, "%00", "..", "\u202e"]:
        # a NUL character: no such person on SQLite, a value PostgreSQL cannot hold (400)
        status = (400, 404) if value == "%00" else 404
        await refused("GET", f"{API}/users/{value}", status)
        await refused("POST", f"{API}/users/{value}/disable", status)
    await refused("DELETE", f"{one}/consents")
    await refused("DELETE", f"{one}/consents", params={"client_id": "c" * 2001})
    await refused("DELETE", f"{one}/consents", 404, params={"client_id": "never-consented"})
    with h.runtime.db.session() as session:  # nothing refused changed anything
        assert [u.username for u in users.list_users(session)] == ["pat"]
        assert session.get(Consent, (person["id"], "never-consented")) is None


async def test_disabling_ends_tokens_and_sessions(harness: AppHarness) -> None:
    h = harness
    _, admin = new_key(h, "org_default", "*")
    auth = {"x-api-key": admin}
    client, _ = factories.create_client(h.runtime, scopes=["read"])
    person = await make(h, admin, username="bob", role="admin")
    browser = await admin_ui_session(h, "bob")
    token = person_token(h, person["id"], client.client_id)
    assert await active(h, token)
    h.runtime.clock.advance(1)  # type: ignore[attr-defined]

    disabled = await h.http.post(f"{API}/users/{person['id']}/disable", headers=auth)
    assert disabled.status_code == 200 and disabled.json()["status"] == "disabled"
    again = await h.http.post(f"{API}/users/{person['id']}/disable", headers=auth)
    assert again.status_code == 200  # a repeat is a no-op
    assert not await active(h, token)
    kicked = await browser.get("/admin")  # the signed-in session stopped working
    assert kicked.status_code == 303 and kicked.headers["location"] == "/admin/login"
    refused = await browser.post("/admin/login", data={"username": "bob",
                                                        "password": PASSWORD})
    assert refused.status_code == 401
    with h.runtime.db.session() as session:
        assert session.scalars(select(WebSession)).all() == []
        cutoffs = session.scalars(select(Event).where(Event.type == "subject.cutoff")).all()
        assert [e.data["reason"] for e in cutoffs] == ["user.disabled"]

    h.runtime.clock.advance(2)  # type: ignore[attr-defined]
    enabled = await h.http.post(f"{API}/users/{person['id']}/enable", headers=auth)
    assert enabled.json()["status"] == "active"
    assert not await active(h, token)  # cut-off tokens stay dead
    assert await active(h, person_token(h, person["id"], client.client_id))
    again_in = await browser.post("/admin/login", data={"username": "bob",
                                                         "password": PASSWORD})
    assert again_in.status_code == 303


async def test_delete_cuts_off_tokens_first(harness: AppHarness) -> None:
    h = harness
    key_id, admin = new_key(h, "org_default", "*")
    auth = {"x-api-key": admin}
    client, _ = factories.create_client(h.runtime, scopes=["read"])
    person = await make(h, admin, username="dora", role="admin")
    with h.runtime.db.session(write=True) as session:
        consents.grant(session, person["id"], client.client_id, ("read",),
                       h.runtime.clock.now(), 0, audit.Actor("test"))
    browser = await admin_ui_session(h, "dora")
    token = person_token(h, person["id"], client.client_id)
    h.runtime.clock.advance(1)  # type: ignore[attr-defined]

    gone = await h.http.delete(f"{API}/users/{person['id']}", headers=auth)
    assert gone.status_code == 204 and gone.content == b""
    assert not await active(h, token)
    assert (await browser.get("/admin")).status_code == 303
    assert_envelope(await h.http.get(f"{API}/users/{person['id']}", headers=auth),
                    404, "not_found")
    assert_envelope(await h.http.delete(f"{API}/users/{person['id']}", headers=auth),
                    404, "not_found")
    with h.runtime.db.session() as session:
        assert session.get(User, person["id"]) is None
        assert session.scalars(select(Consent)).all() == []  # went with the person
        cutoff = session.scalars(select(Event).where(Event.type == "subject.cutoff")).one()
        assert cutoff.data["reason"] == "user.deleted"
        entry = session.scalars(select(AuditEntry).where(
            AuditEntry.action == "user.delete")).one()
        assert entry.actor == f"api_key:{key_id}" and entry.details["username"] == "dora"
    # the username is free again, for a new person with a new id
    assert (await make(h, admin, username="dora"))["id"] != person["id"]


async def test_consents_listed_and_revoked(harness: AppHarness) -> None:
    h = harness
    _, admin = new_key(h, "org_default", "*")
    auth = {"x-api-key": admin}
    client, _ = factories.create_client(h.runtime, scopes=["read", "write"])
    other, _ = factories.create_client(h.runtime, scopes=["read"])
    person = await make(h, admin, username="erin")
    now = h.runtime.clock.now()
    with h.runtime.db.session(write=True) as session:
        consents.grant(session, person["id"], client.client_id, ("read", "write"), now,
                       3600, audit.Actor("test"))
        consents.grant(session, person["id"], other.client_id, ("read",), now + 1, 0,
                       audit.Actor("test"))
    url = f"{API}/users/{person['id']}/consents"
    listed = (await h.http.get(url, headers=auth)).json()["data"]
    assert listed == [
        {"client_id": client.client_id, "scopes": ["read", "write"], "granted_at": now,
         "expires_at": now + 3600},
        {"client_id": other.client_id, "scopes": ["read"], "granted_at": now + 1,
         "expires_at": None}]
    token = person_token(h, person["id"], client.client_id)
    kept = person_token(h, person["id"], other.client_id)
    h.runtime.clock.advance(1)  # type: ignore[attr-defined]
    revoked = await h.http.delete(url, headers=auth, params={"client_id": client.client_id})
    assert revoked.status_code == 204
    assert not await active(h, token) and await active(h, kept)
    listed = (await h.http.get(url, headers=auth)).json()["data"]
    assert [c["client_id"] for c in listed] == [other.client_id]
    again = await h.http.delete(url, headers=auth, params={"client_id": client.client_id})
    assert again.status_code == 204  # a repeat is a no-op
