"""The admin UI's operator pages in-process: registration tokens (shown once, revoked, used by a
real registration), organisations (create, rename, disable cuts off keys and clients), the
self-registered clients, and who may see or change what."""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import select

from authserver import apikeys, audit, organizations, registration
from authserver.clock import FakeClock
from authserver.storage.db import Database
from authserver.storage.models import AuditEntry, InitialAccessToken, Organization
from authserver.web.credentials import redact
from tests import factories
from tests.conftest import AppHarness, make_settings, running_app
from tests.test_admin_ui import csrf, make_user, sign_in

pytestmark = pytest.mark.anyio
SCOPES = [{"name": "read"}, {"name": "write"}, {"name": "admin"}]
MACHINE = {"client_name": "agent", "grant_types": ["client_credentials"],
           "software_id": "agent-sdk", "software_version": "2.4"}


@pytest.fixture
async def ui(tmp_path: Path, clock: FakeClock) -> Any:
    settings = make_settings(tmp_path, scopes=SCOPES,
                             registration={"policy": "initial_access_token",
                                           "open_scopes": ["read"]})
    async with running_app(settings, clock) as h:
        make_user(h, "alice")
        yield h


def new_org(h: AppHarness, name: str = "Tenant") -> str:
    with h.runtime.db.session(write=True) as session:
        return organizations.create_org(session, name, h.runtime.clock.now(),
                                        audit.Actor("test")).id


def shown(page: httpx.Response, element: str) -> str:
    match = re.search(rf'id="{element}">([^<]+)<', page.text)
    assert match, page.text[:800]
    return match.group(1)


def audited(h: AppHarness, prefix: str) -> list[tuple[str, str, str]]:
    with h.runtime.db.session() as session:
        return [(e.action, e.target, e.actor) for e in session.scalars(
            select(AuditEntry).where(AuditEntry.action.like(prefix + "%"))
            .order_by(AuditEntry.id))]


# -- registration tokens ---------------------------------------------------------------------


async def test_registration_tokens_issue_once_use_and_revoke(ui: AppHarness) -> None:
    h = ui
    await sign_in(h, "alice")
    page = await h.http.get("/admin/registration-tokens")
    assert page.status_code == 200 and "No registration tokens." in page.text
    assert 'href="/admin/registration-tokens"' in page.text  # in the nav for operators

    no_csrf = await h.http.post("/admin/registration-tokens", data={"description": "x"})
    assert no_csrf.status_code == 403
    cross = await h.http.post("/admin/registration-tokens", data={
        "description": "x", "csrf_token": csrf(page)}, headers={"origin": "https://evil.test"})
    assert cross.status_code == 403
    with h.runtime.db.session() as session:
        assert session.scalars(select(InitialAccessToken)).all() == []

    for bad, says in (({"max_uses": "0"}, "max uses"), ({"max_uses": "²"}, "max uses"),
                      ({"max_uses": "99999999999"}, "max uses"),
                      ({"expires_in_days": "-1"}, "expires in"),
                      ({"scopes": 'read b"ad'}, "RFC 6749"), ({"description": "x" * 201}, "200")):
        refused = await h.http.post("/admin/registration-tokens",
                                    data={**bad, "csrf_token": csrf(page)})
        assert refused.status_code == 400 and says in refused.text, (bad, refused.text[:300])

    made = await h.http.post("/admin/registration-tokens", data={
        "description": "CI agents", "scopes": "read write", "max_uses": "2",
        "expires_in_days": "7", "csrf_token": csrf(page)})
    assert made.status_code == 201
    token = str(factories.remember(shown(made, "registration-token")))
    token_id = shown(made, "token-id")
    assert token.startswith("asiat_") and token_id.startswith("iat_")
    assert 'data-copy="registration-token"' in made.text  # the copy button

    listing = await h.http.get("/admin/registration-tokens")
    assert token_id in listing.text and token not in listing.text  # shown once only
    assert "read write" in listing.text and "0 / 2" in listing.text

    registered = await h.http.post("/register", json={**MACHINE, "scope": "write"},
                                   headers={"authorization": f"Bearer {token}"})
    assert registered.status_code == 201
    for member in ("client_secret", "registration_access_token"):
        factories.remember(registered.json()[member])
    assert "1 / 2" in (await h.http.get("/admin/registration-tokens")).text

    revoked = await h.http.post(f"/admin/registration-tokens/{token_id}/revoke",
                                data={"csrf_token": csrf(page)})
    assert revoked.status_code == 303
    after = await h.http.get("/admin/registration-tokens")
    assert re.search(r'class="token-state">revoked', after.text)
    again = await h.http.post("/register", json=MACHINE,
                              headers={"authorization": f"Bearer {token}"})
    assert again.status_code == 401
    repeat = await h.http.post(f"/admin/registration-tokens/{token_id}/revoke",
                               data={"csrf_token": csrf(page)})
    assert repeat.status_code == 303  # a repeat is a no-op
    # A token pasted where its id belongs is not echoed (an unissued look-alike: httpx logs
    # the URL of each request it sends, which is this test's own log, not the server's).
    lookalike = "asiat_" + secrets.token_urlsafe(32)
    pasted = await h.http.post(f"/admin/registration-tokens/{lookalike}/revoke",
                               data={"csrf_token": csrf(page)})
    assert pasted.status_code == 404 and lookalike not in pasted.text
    assert lookalike not in redact(f"POST /admin/registration-tokens/{lookalike}/revoke")
    assert (await h.http.post("/admin/registration-tokens/iat_nope/revoke",
                              data={"csrf_token": csrf(page)})).status_code == 404

    actions = audited(h, "registration_token.")
    assert [(a, t) for a, t, _ in actions] == [("registration_token.create", token_id),
                                               ("registration_token.revoke", token_id)]
    assert all(actor.startswith("user:") for _, _, actor in actions)


async def test_registration_token_default_scopes(ui: AppHarness) -> None:
    await sign_in(ui, "alice")
    page = await ui.http.get("/admin/registration-tokens")
    made = await ui.http.post("/admin/registration-tokens", data={"csrf_token": csrf(page)})
    assert made.status_code == 201
    factories.remember(shown(made, "registration-token"))
    with ui.runtime.db.session() as session:
        (view,) = registration.list_access_tokens(session)
    assert view.scopes == ("read",) and view.max_uses is None and view.expires_at is None


async def test_registration_tokens_are_for_operators_only(ui: AppHarness) -> None:
    h = ui
    org = new_org(h)
    make_user(h, "tina", org_id=org)
    await sign_in(h, "tina")
    dashboard = await h.http.get("/admin")
    assert "registration-tokens" not in dashboard.text  # not in the nav
    assert (await h.http.get("/admin/registration-tokens")).status_code == 403
    refused = await h.http.post("/admin/registration-tokens",
                                data={"description": "mine", "csrf_token": csrf(dashboard)})
    assert refused.status_code == 403
    with h.runtime.db.session(write=True) as session:
        operator_token = registration.create_access_token(session, h.runtime.catalog,
                                                          h.runtime.clock.now())
    factories.remember(operator_token.token)
    assert (await h.http.post(f"/admin/registration-tokens/{operator_token.view.id}/revoke",
                              data={"csrf_token": csrf(dashboard)})).status_code == 403
    with h.runtime.db.session() as session:
        rows = session.scalars(select(InitialAccessToken)).all()
        assert len(rows) == 1 and rows[0].revoked_at is None


# -- organisations ---------------------------------------------------------------------------


async def test_organisations_create_rename_disable_enable(ui: AppHarness) -> None:
    h = ui
    await sign_in(h, "alice")
    page = await h.http.get("/admin/organizations")
    assert page.status_code == 200 and "org_default" in page.text
    assert "Create an organisation" in page.text
    no_csrf = await h.http.post("/admin/organizations", data={"name": "Sneaky"})
    assert no_csrf.status_code == 403
    with h.runtime.db.session() as session:
        assert session.scalars(select(Organization).where(
            Organization.name == "Sneaky")).all() == []
    blank = await h.http.post("/admin/organizations", data={"name": " ", "csrf_token":
                                                            csrf(page)})
    assert blank.status_code == 400 and "name" in blank.text

    made = await h.http.post("/admin/organizations", data={"name": "Acme",
                                                           "csrf_token": csrf(page)})
    assert made.status_code == 303
    org_id = made.headers["location"].rsplit("=", 1)[1]
    assert org_id.startswith("org_")
    renamed = await h.http.post(f"/admin/organizations/{org_id}/rename",
                                data={"name": "Acme Corp", "csrf_token": csrf(page)})
    assert renamed.status_code == 303
    assert "Acme Corp" in (await h.http.get("/admin/organizations")).text

    client, secret = factories.create_client(h.runtime, name="acme-app", org_id=org_id,
                                             scopes=("read",))
    assert secret
    rs, rs_secret = factories.create_client(h.runtime, name="resource server")
    assert rs_secret
    token = await h.http.post("/token", data={"grant_type": "client_credentials"},
                              headers=factories.basic_auth(client.client_id, secret))
    access = str(factories.remember(token.json()["access_token"]))
    with h.runtime.db.session(write=True) as session:
        _, key = apikeys.create_key(session, h.runtime.catalog, apikeys.ApiKeySpec(
            "acme-key", org_id, ("clients.read",)), "as", h.runtime.clock.now(),
            audit.Actor("test"))
    factories.remember(key)
    assert (await h.http.get("/api/v1/api-key", headers={"x-api-key": key})).status_code == 200

    listing = await h.http.get("/admin/organizations")
    assert "stops its API keys at once" in listing.text  # the warning
    assert re.search(rf'organizations/{org_id}/disable"[^>]*data-confirm="Disable', listing.text)
    no_csrf_disable = await h.http.post(f"/admin/organizations/{org_id}/disable")
    assert no_csrf_disable.status_code == 403
    disabled = await h.http.post(f"/admin/organizations/{org_id}/disable",
                                 data={"csrf_token": csrf(page)})
    assert disabled.status_code == 303
    assert (await h.http.get("/api/v1/api-key", headers={"x-api-key": key})).status_code == 401
    answer = await h.http.post("/introspect", data={"token": access},
                               headers=factories.basic_auth(rs.client_id, rs_secret))
    assert answer.json() == {"active": False}
    assert 'class="tag bad">disabled' in (await h.http.get("/admin/organizations")).text

    enabled = await h.http.post(f"/admin/organizations/{org_id}/enable",
                                data={"csrf_token": csrf(page)})
    assert enabled.status_code == 303
    assert (await h.http.get("/api/v1/api-key", headers={"x-api-key": key})).status_code == 200

    own = await h.http.post("/admin/organizations/org_default/disable",
                            data={"csrf_token": csrf(page)})
    assert own.status_code == 403
    assert (await h.http.post("/admin/organizations/org_nope/rename", data={
        "name": "x", "csrf_token": csrf(page)})).status_code == 404
    assert (await h.http.post(f"/admin/organizations/{org_id}/explode",
                              data={"csrf_token": csrf(page)})).status_code == 404
    assert [(a, t) for a, t, _ in audited(h, "organization.")] == [
        ("organization.create", org_id), ("organization.rename", org_id),
        ("organization.disable", org_id), ("organization.enable", org_id)]


async def test_an_org_admin_sees_and_renames_only_its_organisation(ui: AppHarness) -> None:
    h = ui
    mine, other = new_org(h, "Tenant"), new_org(h, "Other Co")
    make_user(h, "tina", org_id=mine)
    await sign_in(h, "tina")
    page = await h.http.get("/admin/organizations")
    assert page.status_code == 200 and mine in page.text
    assert other not in page.text and "Other Co" not in page.text
    assert "org_default" not in page.text.replace('action="/admin', "")
    assert "Create an organisation" not in page.text and "/disable" not in page.text
    token = csrf(page)
    assert (await h.http.post("/admin/organizations", data={
        "name": "Mine Too", "csrf_token": token})).status_code == 403
    for org in (other, "org_default"):
        for action in ("rename", "disable", "enable"):
            refused = await h.http.post(f"/admin/organizations/{org}/{action}",
                                        data={"name": "Taken", "csrf_token": token})
            assert refused.status_code == 404, (org, action)
    assert (await h.http.post(f"/admin/organizations/{mine}/disable",
                              data={"csrf_token": token})).status_code == 403
    renamed = await h.http.post(f"/admin/organizations/{mine}/rename",
                                data={"name": "Tenant Ltd", "csrf_token": token})
    assert renamed.status_code == 303
    with h.runtime.db.session() as session:
        names = {o.id: (o.name, o.status) for o in organizations.list_orgs(session)}
    assert names[mine] == ("Tenant Ltd", "active") and names[other] == ("Other Co", "active")
    assert names["org_default"][1] == "active"


# -- self-registered clients -----------------------------------------------------------------


async def test_self_registered_clients_page(tmp_path: Path, clock: FakeClock) -> None:
    settings = make_settings(tmp_path, scopes=SCOPES, registration={"open_scopes": ["read"]})
    async with running_app(settings, clock) as h:
        make_user(h, "alice")
        with h.runtime.db.session(write=True) as session:
            iat = registration.create_access_token(session, h.runtime.catalog, clock.now(),
                                                   scopes=["read"])
        factories.remember(iat.token)
        bodies = []
        for headers in ({}, {"authorization": f"Bearer {iat.token}"}):
            made = await h.http.post("/register", json={**MACHINE, "client_name": "agent-"
                                                         + str(len(bodies))}, headers=headers)
            assert made.status_code == 201, made.text
            bodies.append(made.json())
            for member in ("client_secret", "registration_access_token"):
                factories.remember(made.json()[member])
        operator_made, _ = factories.create_client(h.runtime, name="made-by-operator")
        used = await h.http.post("/token", data={"grant_type": "client_credentials"},
                                 headers=factories.basic_auth(bodies[0]["client_id"],
                                                              bodies[0]["client_secret"]))
        factories.remember(used.json()["access_token"])
        h.runtime.flush_usage()  # what the background task does: last use to the store

        await sign_in(h, "alice")
        page = await h.http.get("/admin/registered-clients")
        assert page.status_code == 200
        assert 'href="/admin/registered-clients" aria-current="page"' in page.text
        assert "made-by-operator" not in page.text
        assert page.text.count('class="software">agent-sdk 2.4<') == 2
        assert "open from 127.0.0.1" in page.text and iat.view.id in page.text
        rows = dict(re.findall(r'<tr><td><a [^>]+>(agent-\d)</a>.*?<td class="mono">([^<]*)'
                               r'</td>\s*<td class="mono origin">', page.text, re.S))
        assert rows["agent-0"][:2] == "20" and rows["agent-1"] == "never"  # last use
        assert bodies[0]["client_secret"] not in page.text
        redirect = await h.http.get("/admin/clients", params={"origin": "registered"})
        assert redirect.status_code == 303
        assert redirect.headers["location"] == "/admin/registered-clients"

        org = new_org(h)
        make_user(h, "tina", org_id=org)
        await h.http.post("/admin/logout", data={"csrf_token": csrf(page)})
        await sign_in(h, "tina")
        theirs = await h.http.get("/admin/registered-clients")
        assert theirs.status_code == 200 and "No self-registered clients." in theirs.text
        assert operator_made.client_id not in theirs.text


async def test_odd_input_is_a_4xx_never_a_500(tmp_path: Path, database_url: str) -> None:
    """SQLite, and PostgreSQL when its URL is set (it cannot store a NUL character)."""
    migrator = Database(database_url)
    migrator.migrate()
    migrator.dispose()
    async with running_app(make_settings(tmp_path, database_url, scopes=SCOPES)) as h:
        make_user(h, "alice")
        await sign_in(h, "alice")
        await odd_input(h)


async def odd_input(h: AppHarness) -> None:
    org = new_org(h)
    client, _ = factories.create_client(h.runtime, name="odd")
    with h.runtime.db.session(write=True) as session:
        record, key = apikeys.create_key(session, h.runtime.catalog, apikeys.ApiKeySpec(
            "odd", "org_default", ("clients.read",)), "as", h.runtime.clock.now(),
            audit.Actor("test"))
    factories.remember(key)
    token = csrf(await h.http.get("/admin"))
    odd = ["\x00", "x" * 5000, "²", "-1", "1e9", "99999999999999999999999", "\u202e", " "]
    posts = ["/admin/registration-tokens", "/admin/organizations",
             f"/admin/organizations/{org}/rename", "/admin/api-keys",
             f"/admin/api-keys/{record.id}", f"/admin/api-keys/{record.id}/rotate",
             f"/admin/clients/{client.client_id}", "/admin/clients"]
    fields = ["name", "description", "scopes", "max_uses", "expires_in_days", "permissions",
              "ip_allow_text", "grace_hours", "scope_text", "org_id", "no_expiry"]
    for path in posts:
        for value in odd:
            answer = await h.http.post(path, data={**{f: value for f in fields},
                                                   "csrf_token": token})
            assert answer.status_code < 500, (path, value[:20], answer.text[-400:])
    for value in odd:
        for path in ("/admin/audit?before=", "/admin/api-keys/", "/admin/clients?origin="):
            answer = await h.http.get(path + quote(value))
            assert answer.status_code < 500, (path, value[:20])
