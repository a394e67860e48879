"""The admin UI's API key edit page and the dashboard's token rate, in-process; the token-rate
ring itself; the pages' CSP (no 'unsafe-inline') and their stylesheet."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from authserver import apikeys, audit, organizations
from authserver.clock import FakeClock
from authserver.storage.models import AuditEntry
from authserver.tokenrate import TokenRate
from tests import factories
from tests.conftest import AppHarness
from tests.test_admin_ui import csrf, make_user, sign_in

pytestmark = pytest.mark.anyio


def new_key(h: AppHarness, org_id: str = "org_default", *permissions: str,
            expires_at: float | None = None) -> tuple[str, str]:
    with h.runtime.db.session(write=True) as session:
        record, key = apikeys.create_key(
            session, h.runtime.catalog,
            apikeys.ApiKeySpec("billing", org_id, permissions or ("invoices.read",),
                               expires_at=expires_at),
            h.runtime.settings.api_keys.prefix, h.runtime.clock.now(), audit.Actor("test"))
    factories.remember(key)
    return record.id, key


def updates(h: AppHarness, key_id: str) -> list[tuple[str, dict[str, object]]]:
    with h.runtime.db.session() as session:
        return [(e.actor, dict(e.details)) for e in session.scalars(
            select(AuditEntry).where(AuditEntry.action == "api_key.update",
                                     AuditEntry.target == key_id).order_by(AuditEntry.id))]


async def test_edit_an_api_key(harness: AppHarness) -> None:
    h = harness
    make_user(h, "alice")
    await sign_in(h, "alice")
    key_id, key = new_key(h, "org_default", "invoices.read")
    listing = await h.http.get("/admin/api-keys")
    assert f'href="/admin/api-keys/{key_id}"' in listing.text
    page = await h.http.get(f"/admin/api-keys/{key_id}")
    assert page.status_code == 200 and key not in page.text
    assert 'value="invoices.read"' in page.text and ">never<" in page.text
    token = csrf(page)

    no_csrf = await h.http.post(f"/admin/api-keys/{key_id}", data={
        "name": "hijacked", "permissions": "*"})
    assert no_csrf.status_code == 403
    assert updates(h, key_id) == []

    saved = await h.http.post(f"/admin/api-keys/{key_id}", data={
        "name": "billing v2", "permissions": "invoices.read invoices.create",
        "ip_allow_text": "10.0.0.0/8\n127.0.0.1/32", "expires_in_days": "30",
        "csrf_token": token})
    assert saved.status_code == 303, saved.text[-700:]
    assert saved.headers["location"] == f"/admin/api-keys/{key_id}?saved=1"
    me = await h.http.get("/api/v1/api-key", headers={"x-api-key": key})
    assert me.status_code == 200
    body = me.json()
    assert body["name"] == "billing v2"
    assert body["permissions"] == ["invoices.read", "invoices.create"]
    assert body["ip_allowlist"] == ["10.0.0.0/8", "127.0.0.1/32"]
    assert body["expires_at"] == pytest.approx(h.runtime.clock.now() + 30 * 86400)
    shown = await h.http.get(saved.headers["location"])
    assert "Saved." in shown.text and "billing v2" in shown.text

    # Only what differs is changed and audited; nothing at all is a notice, not an error.
    same = {"name": "billing v2", "permissions": "invoices.read invoices.create",
            "ip_allow_text": "10.0.0.0/8 127.0.0.1/32", "csrf_token": token}
    unchanged = await h.http.post(f"/admin/api-keys/{key_id}", data=same)
    assert unchanged.status_code == 200 and "Nothing changed." in unchanged.text
    narrowed = await h.http.post(f"/admin/api-keys/{key_id}", data={
        **same, "ip_allow_text": "10.0.0.0/8", "no_expiry": "1"})
    assert narrowed.status_code == 303
    assert (await h.http.get("/api/v1/api-key", headers={"x-api-key": key})).status_code == 401
    entries = updates(h, key_id)
    assert [set(d) for _, d in entries] == [
        {"name", "permissions", "ip_allow", "expires_at"}, {"ip_allow", "expires_at"}]
    assert entries[1][1]["expires_at"] is None
    assert all(actor.startswith("user:") for actor, _ in entries)

    for bad, says in (({"permissions": "invoices.fly"}, "invoices.fly"),
                      ({"permissions": ""}, "at least one"),
                      ({"ip_allow_text": "not-an-ip"}, "not-an-ip"),
                      ({"expires_in_days": "0"}, "expires in"),
                      ({"expires_in_days": "5", "no_expiry": "1"}, "not both"),
                      ({"name": "x" * 201}, "name")):
        refused = await h.http.post(f"/admin/api-keys/{key_id}", data={**same, **bad})
        assert refused.status_code == 400 and says in refused.text, (bad, refused.text[-600:])
    assert len(updates(h, key_id)) == 2

    pasted = await h.http.get(f"/admin/api-keys/{'as_live_' + 'A' * 43}")
    assert pasted.status_code == 400 and "A" * 43 not in pasted.text
    assert (await h.http.get("/admin/api-keys/key_nope")).status_code == 404

    revoked = await h.http.post(f"/admin/api-keys/{key_id}/revoke", data={"csrf_token": token})
    assert revoked.status_code == 303
    after = await h.http.get(f"/admin/api-keys/{key_id}")
    assert after.status_code == 200 and "cannot be changed" in after.text
    late = await h.http.post(f"/admin/api-keys/{key_id}", data={**same, "name": "zombie"})
    assert late.status_code == 400 and "revoked" in late.text


async def test_an_org_admin_edits_only_its_keys(harness: AppHarness) -> None:
    h = harness
    with h.runtime.db.session(write=True) as session:
        org = organizations.create_org(session, "Tenant", h.runtime.clock.now(),
                                       audit.Actor("test")).id
    theirs, _ = new_key(h, "org_default", "*")
    mine, _ = new_key(h, org, "invoices.read")
    make_user(h, "tina", org_id=org)
    await sign_in(h, "tina")
    page = await h.http.get(f"/admin/api-keys/{mine}")
    assert page.status_code == 200
    assert (await h.http.get(f"/admin/api-keys/{theirs}")).status_code == 404
    refused = await h.http.post(f"/admin/api-keys/{theirs}", data={
        "name": "mine now", "permissions": "*", "csrf_token": csrf(page)})
    assert refused.status_code == 404
    assert updates(h, theirs) == []
    ok = await h.http.post(f"/admin/api-keys/{mine}", data={
        "name": "billing", "permissions": "invoices.*", "csrf_token": csrf(page)})
    assert ok.status_code == 303 and updates(h, mine)[0][1] == {"permissions": ["invoices.*"]}


async def test_dashboard_token_rate(harness: AppHarness, clock: FakeClock) -> None:
    h = harness
    make_user(h, "alice")
    client, secret = factories.create_client(h.runtime, name="busy")
    assert secret
    clock.advance(60 - clock.now() % 60)  # the start of a minute
    for _ in range(3):
        issued = await h.http.post("/token", data={"grant_type": "client_credentials"},
                                   headers=factories.basic_auth(client.client_id, secret))
        factories.remember(issued.json()["access_token"])
    await h.http.post("/token", data={"grant_type": "client_credentials"},
                      headers=factories.basic_auth(client.client_id, "wrong"))  # not counted
    await sign_in(h, "alice")
    now = await h.http.get("/admin")
    assert re.search(r'id="tokens-last-minute">0<', now.text)
    assert "3 so far this minute" in now.text
    clock.advance(60)
    later = await h.http.get("/admin")
    assert re.search(r'id="tokens-last-minute">3<', later.text)
    assert re.search(r'id="tokens-last-hour">3<', later.text) and "(0.1/min)" in later.text
    assert "each instance behind a load balancer counts its own" in later.text
    clock.advance(3600)
    gone = await h.http.get("/admin")
    assert re.search(r'id="tokens-last-hour">0<', gone.text)

    with h.runtime.db.session(write=True) as session:
        org = organizations.create_org(session, "Tenant", clock.now(), audit.Actor("test")).id
    make_user(h, "tina", org_id=org)
    await sign_in(h, "tina")
    tenant = await h.http.get("/admin")
    assert tenant.status_code == 200 and "token-rate" not in tenant.text  # every org's tokens


def test_token_rate_ring() -> None:
    rate = TokenRate()
    start = 1_800_000_000.0 - 1_800_000_000.0 % 60
    for second in range(0, 120, 2):  # 30 in each of two minutes
        rate.bump(start + second)
    figures = rate.figures(start + 125)
    assert (figures.last_minute, figures.last_hour, figures.this_minute) == (30, 60, 0)
    assert rate.figures(start + 60 * 61 + 1).last_hour == 30  # the first minute has left
    assert rate.figures(start + 60 * 62 + 1).last_hour == 0
    rate.bump(start + 60 * 61)  # reuses the first minute's bucket
    later = rate.figures(start + 60 * 62)
    assert (later.last_minute, later.last_hour) == (1, 1)
    assert rate.figures(start).this_minute == 0  # a stale bucket never counts


async def test_pages_have_a_strict_csp_and_a_stylesheet(harness: AppHarness) -> None:
    h = harness
    login = await h.http.get("/admin/login")
    csp = login.headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "style-src 'self'" in csp
    assert "<style" not in login.text and " style=" not in login.text
    css = await h.http.get("/admin/admin.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "--accent" in css.text
