"""The admin web UI in-process: sign-in, session cookie, CSRF, organisation scoping, the client
pages (secret shown once), the audit page. The browser walk-through is in
test_admin_ui_browser.py."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from authserver import apikeys, audit, organizations, users
from authserver.storage.models import AuditEntry, Client, WebSession
from tests import factories
from tests.conftest import AppHarness

pytestmark = pytest.mark.anyio
PASSWORD = "correct horse battery staple"


def make_user(h: AppHarness, username: str, role: str = "admin",
              org_id: str = "org_default") -> None:
    with h.runtime.db.session(write=True) as session:
        users.create_user(session, username, PASSWORD, h.runtime.clock.now(),
                          audit.Actor("test"), role=role, org_id=org_id)


async def sign_in(h: AppHarness, username: str, password: str = PASSWORD) -> httpx.Response:
    return await h.http.post("/admin/login", data={"username": username, "password": password})


def csrf(page: httpx.Response) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, page.text[:500]
    return match.group(1)


async def test_sign_in_session_and_sign_out(harness: AppHarness) -> None:
    h = harness
    make_user(h, "alice")
    assert (await h.http.get("/admin")).headers["location"] == "/admin/login"
    wrong = await sign_in(h, "alice", "not the password!")
    assert wrong.status_code == 401 and "Wrong username or password" in wrong.text
    ok = await sign_in(h, "alice")
    assert ok.status_code == 303 and ok.headers["location"] == "/admin"
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    assert "Secure" not in cookie  # the issuer is http://127.0.0.1 here
    dashboard = await h.http.get("/admin")
    assert dashboard.status_code == 200 and "Dashboard" in dashboard.text
    assert dashboard.headers["x-frame-options"] == "DENY"
    token = h.http.cookies.get("authserver_session")
    assert token and token not in dashboard.text
    with h.runtime.db.session() as session:
        stored = session.scalars(select(WebSession.id)).all()
        assert len(stored) == 1 and token not in stored  # only its digest
    out = await h.http.post("/admin/logout", data={"csrf_token": csrf(dashboard)})
    assert out.status_code == 303
    h.http.cookies.set("authserver_session", token)  # a copied cookie is dead too
    assert (await h.http.get("/admin")).status_code == 303


async def test_only_admins_sign_in(harness: AppHarness) -> None:
    make_user(harness, "bob", role="user")
    assert (await sign_in(harness, "bob")).status_code == 401


async def test_create_a_client_and_csrf(harness: AppHarness) -> None:
    h = harness
    make_user(h, "alice")
    await sign_in(h, "alice")
    page = await h.http.get("/admin/clients")
    no_csrf = await h.http.post("/admin/clients", data={"name": "sneaky"})
    assert no_csrf.status_code == 403
    cross = await h.http.post("/admin/clients", data={"name": "sneaky", "csrf_token": csrf(page)},
                              headers={"origin": "https://evil.example"})
    assert cross.status_code == 403
    with h.runtime.db.session() as session:
        assert session.scalars(select(Client).where(Client.name == "sneaky")).all() == []
    made = await h.http.post("/admin/clients", data={
        "name": "billing", "scope": "read write", "csrf_token": csrf(page)})
    assert made.status_code == 201
    secret = factories.remember(re.search(r'id="client-secret">([^<]+)<', made.text)
                                .group(1))  # type: ignore[union-attr]
    client_id = re.search(r'id="client-id">([^<]+)<', made.text).group(1)  # type: ignore[union-attr]
    token = await h.http.post("/token", data={"grant_type": "client_credentials"},
                              headers=factories.basic_auth(client_id, str(secret)))
    assert token.status_code == 200
    detail = await h.http.get(f"/admin/clients/{client_id}")
    assert str(secret) not in detail.text
    saved = await h.http.post(f"/admin/clients/{client_id}", data={
        "name": "billing", "scope_text": "read", "ip_allow_text": "",
        "resources_text": "https://api.example.test\nhttps://billing.example.test",
        "csrf_token": csrf(page)})
    assert saved.status_code == 303
    with h.runtime.db.session() as session:
        assert session.get(Client, client_id).resources == [  # type: ignore[union-attr]
            "https://api.example.test", "https://billing.example.test"]
    shown = await h.http.get(f"/admin/clients/{client_id}")
    assert "https://billing.example.test" in shown.text
    not_uri = await h.http.post(f"/admin/clients/{client_id}", data={
        "name": "billing", "scope_text": "read", "resources_text": "billing-api",
        "csrf_token": csrf(page)})
    assert not_uri.status_code == 400 and "RFC 8707" in not_uri.text
    bad = await h.http.post(f"/admin/clients/{client_id}", data={
        "name": "billing", "scope_text": "read", "ip_allow_text": "not-an-ip",
        "csrf_token": csrf(page)})
    assert bad.status_code == 400 and "not-an-ip" in bad.text
    with h.runtime.db.session() as session:
        actions = [e.action for e in session.scalars(
            select(AuditEntry).where(AuditEntry.target == client_id))]
        actors = {e.actor for e in session.scalars(
            select(AuditEntry).where(AuditEntry.target == client_id))}
    assert actions == ["client.create", "client.update"]  # the refused ones changed nothing
    assert len(actors) == 1 and actors.pop().startswith("user:")
    log = await h.http.get("/admin/audit", params={"action": "client."})
    assert client_id in log.text and "client.update" in log.text
    # a time range (UTC minutes, as the datetime-local fields send them); "until" takes in
    # its whole minute
    from datetime import UTC, datetime, timedelta
    minute = datetime.fromtimestamp(h.runtime.clock.now(), UTC).replace(second=0, microsecond=0)
    stamp = "%Y-%m-%dT%H:%M"
    within = await h.http.get("/admin/audit", params={
        "target": client_id, "since": minute.strftime(stamp), "until": minute.strftime(stamp)})
    assert within.status_code == 200 and "client.update" in within.text
    later = await h.http.get("/admin/audit", params={
        "target": client_id, "since": (minute + timedelta(minutes=1)).strftime(stamp)})
    assert later.status_code == 200 and "client.update" not in later.text
    assert "No entries." in later.text
    wrong = await h.http.get("/admin/audit", params={"since": "yesterday"})
    assert wrong.status_code == 400


async def test_an_org_admin_sees_only_its_organisation(harness: AppHarness) -> None:
    h = harness
    with h.runtime.db.session(write=True) as session:
        org = organizations.create_org(session, "Tenant", h.runtime.clock.now(),
                                       audit.Actor("test")).id
    theirs, _ = factories.create_client(h.runtime, name="operator-client")
    mine, _ = factories.create_client(h.runtime, name="tenant-client", org_id=org)
    make_user(h, "tina", org_id=org)
    await sign_in(h, "tina")
    listing = await h.http.get("/admin/clients")
    assert "tenant-client" in listing.text and "operator-client" not in listing.text
    assert (await h.http.get(f"/admin/clients/{theirs.client_id}")).status_code == 404
    page: Any = await h.http.get(f"/admin/clients/{mine.client_id}")
    assert page.status_code == 200
    refused = await h.http.post(f"/admin/clients/{theirs.client_id}/delete",
                                data={"csrf_token": csrf(page)})
    assert refused.status_code == 404
    with h.runtime.db.session(write=True) as session:
        operator_key = apikeys.create_key(
            session, h.runtime.catalog, apikeys.ApiKeySpec("op", "org_default", ("*",)), "as",
            h.runtime.clock.now(), audit.Actor("test"))
    factories.remember(operator_key[1])
    keys_page = await h.http.get("/admin/api-keys")
    assert operator_key[0].id not in keys_page.text
    assert (await h.http.post(f"/admin/api-keys/{operator_key[0].id}/revoke",
                              data={"csrf_token": csrf(page)})).status_code == 404


async def test_https_issuer_gets_a_secure_host_cookie(tmp_path: Any) -> None:
    from tests.conftest import make_settings, running_app

    settings = make_settings(tmp_path, issuer="https://auth.example.test")
    async with running_app(settings) as h:
        make_user(h, "alice")
        ok = await sign_in(h, "alice")
        cookie = ok.headers["set-cookie"]
        assert cookie.startswith("__Host-authserver_session=")
        assert "Secure" in cookie and "Path=/" in cookie and "HttpOnly" in cookie
        assert (await h.http.get("/admin")).status_code == 200


async def test_signing_keys_page_and_rotation(harness: AppHarness) -> None:
    h = harness
    make_user(h, "alice")
    await sign_in(h, "alice")
    page = await h.http.get("/admin/keys")
    assert page.status_code == 200 and page.text.count('class="key-state"') == 1
    rotated = await h.http.post("/admin/keys/rotate", data={"csrf_token": csrf(page)})
    assert rotated.status_code == 303
    after = await h.http.get(rotated.headers["location"])
    assert after.text.count('class="key-state"') == 2 and "published" in after.text
    with h.runtime.db.session() as session:
        (entry,) = session.scalars(select(AuditEntry).where(
            AuditEntry.action == "signing_key.rotate")).all()
        assert entry.actor.startswith("user:") and entry.target in after.text


async def test_api_keys_pages(harness: AppHarness) -> None:
    h = harness
    make_user(h, "alice")
    await sign_in(h, "alice")
    page = await h.http.get("/admin/api-keys")
    assert page.status_code == 200
    made = await h.http.post("/admin/api-keys", data={
        "name": "billing", "permissions": "invoices.read", "org_id": "org_default",
        "environment": "test", "expires_in_days": "30", "csrf_token": csrf(page)})
    assert made.status_code == 201, made.text[:300]
    key = factories.remember(re.search(r'id="api-key">([^<]+)<', made.text)
                             .group(1))  # type: ignore[union-attr]
    key_id = re.search(r'id="key-id">([^<]+)<', made.text).group(1)  # type: ignore[union-attr]
    assert key and key.startswith("as_test_")
    me = await h.http.get("/api/v1/api-key", headers={"x-api-key": key})
    assert me.status_code == 200 and me.json()["permissions"] == ["invoices.read"]
    listing = await h.http.get("/admin/api-keys")
    assert key_id in listing.text and key not in listing.text
    bad = await h.http.post("/admin/api-keys", data={
        "name": "x", "permissions": "invoices.fly", "csrf_token": csrf(page)})
    assert bad.status_code == 400 and "invoices.fly" in bad.text
    rotated = await h.http.post(f"/admin/api-keys/{key_id}/rotate",
                                data={"grace_hours": "0", "csrf_token": csrf(page)})
    assert rotated.status_code == 201
    new_key = factories.remember(re.search(r'id="api-key">([^<]+)<', rotated.text)
                                 .group(1))  # type: ignore[union-attr]
    assert (await h.http.get("/api/v1/api-key", headers={"x-api-key": key})).status_code == 401
    new_id = re.search(r'id="key-id">([^<]+)<', rotated.text).group(1)  # type: ignore[union-attr]
    revoked = await h.http.post(f"/admin/api-keys/{new_id}/revoke",
                                data={"csrf_token": csrf(page)})
    assert revoked.status_code == 303
    assert (await h.http.get("/api/v1/api-key",
                             headers={"x-api-key": str(new_key)})).status_code == 401
    with h.runtime.db.session() as session:
        actions = [e.action for e in session.scalars(select(AuditEntry).where(
            AuditEntry.actor.like("user:%"), AuditEntry.action.like("api_key.%"))
            .order_by(AuditEntry.id))]
    assert actions == ["api_key.create", "api_key.rotate", "api_key.revoke"]
