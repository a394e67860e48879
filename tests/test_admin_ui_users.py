"""The admin UI's People pages in-process: list, create, edit, password, disable and enable
(which ends the person's sessions), delete, consents with revoke; CSRF, organisation scoping,
and odd input answered with a 4xx page, never a 500."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import select

from authserver import audit, organizations, users
from authserver.clock import FakeClock
from authserver.people import consents
from authserver.storage.db import Database
from authserver.storage.models import AuditEntry, Consent, User
from tests import factories
from tests.conftest import AppHarness, make_settings, running_app
from tests.test_admin_ui import PASSWORD, csrf, make_user, sign_in

pytestmark = pytest.mark.anyio


@pytest.fixture
async def ui(tmp_path: Path, clock: FakeClock) -> AsyncIterator[tuple[AppHarness, Any]]:
    """The app signed in as alice (an operator admin), and the app itself for more browsers."""
    running = running_app(make_settings(tmp_path), clock)
    async with running as h:
        make_user(h, "alice")
        assert (await sign_in(h, "alice")).status_code == 303
        yield h, running.app


async def browser(h: AppHarness, app: Any, username: str) -> httpx.AsyncClient:
    """Another browser on the same app, signed in as this person."""
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50001))
    other = httpx.AsyncClient(transport=transport, base_url=h.settings.issuer)
    signed = await other.post("/admin/login", data={"username": username,
                                                    "password": PASSWORD})
    assert signed.status_code == 303, signed.text
    return other


def user_id(h: AppHarness, username: str) -> str:
    with h.runtime.db.session() as session:
        return users.user_by_username(session, username).id


def row_of(page: httpx.Response, uid: str) -> str:
    match = re.search(rf'<tr id="user-{uid}">.*?</tr>', page.text, re.S)
    assert match, page.text[:800]
    return match.group(0)


async def test_people_page_create_disable_enable(ui: tuple[AppHarness, Any]) -> None:
    h, app = ui
    page = await h.http.get("/admin/users")
    assert page.status_code == 200 and "People" in page.text
    assert 'href="/admin/users" aria-current="page"' in page.text  # the nav link
    alice = user_id(h, "alice")
    assert "admin" in row_of(page, alice) and "never" not in row_of(page, alice)
    assert "Disable" not in row_of(page, alice)  # not oneself
    token = csrf(page)
    made = await h.http.post("/admin/users", data={
        "username": "Bob", "name": "Bob B", "email": "bob@example.com", "role": "admin",
        "org_id": "org_default", "password": PASSWORD, "email_verified": "1",
        "csrf_token": token})
    assert made.status_code == 303, made.text
    bob = user_id(h, "bob")
    assert made.headers["location"] == f"/admin/users?changed={bob}"
    page = await h.http.get("/admin/users")
    row = row_of(page, bob)
    assert "Bob B" in row and "bob@example.com" in row and "verified" in row
    assert 'class="user-role">admin<' in row and "never" in row
    assert "data-confirm" in row and "stops working" in row  # the warning, asked first
    assert PASSWORD not in page.text and "argon2" not in page.text

    bobs = await browser(h, app, "bob")
    assert (await bobs.get("/admin")).status_code == 200
    disabled = await h.http.post(f"/admin/users/{bob}/disable", data={"csrf_token": token})
    assert disabled.status_code == 303
    assert disabled.headers["location"] == f"/admin/users/{bob}?saved=disable"
    detail = await h.http.get(disabled.headers["location"])
    assert "every token they held was cut off" in detail.text
    assert re.search(r'id="status">disabled<', detail.text)
    kicked = await bobs.get("/admin")  # bob's signed-in session stopped working
    assert kicked.status_code == 303 and kicked.headers["location"] == "/admin/login"
    again = await bobs.post("/admin/login", data={"username": "bob", "password": PASSWORD})
    assert again.status_code == 401
    enabled = await h.http.post(f"/admin/users/{bob}/enable", data={"csrf_token": token})
    assert enabled.status_code == 303
    assert (await bobs.post("/admin/login", data={"username": "bob",
                                                  "password": PASSWORD})).status_code == 303
    assert (await bobs.get("/admin")).status_code == 200
    await bobs.aclose()
    with h.runtime.db.session() as session:
        entries = [(e.action, e.actor) for e in session.scalars(
            select(AuditEntry).where(AuditEntry.target == bob,
                                     AuditEntry.action != "user.login")
            .order_by(AuditEntry.id))]
    assert entries == [("user.create", f"user:{alice}"), ("user.disable", f"user:{alice}"),
                       ("user.enable", f"user:{alice}")]


async def test_csrf_and_origin_are_checked(ui: tuple[AppHarness, Any]) -> None:
    h, _ = ui
    make_user(h, "bob", role="user")
    bob = user_id(h, "bob")
    token = csrf(await h.http.get("/admin/users"))
    for path, data in [("/admin/users", {"username": "sneaky", "password": PASSWORD}),
                       (f"/admin/users/{bob}/disable", {}),
                       (f"/admin/users/{bob}/delete", {}),
                       (f"/admin/users/{bob}/password", {"password": "a sneaky password"}),
                       (f"/admin/users/{bob}/update", {"role": "admin"}),
                       (f"/admin/users/{bob}/revoke-consent", {"client_id": "x"})]:
        assert (await h.http.post(path, data=data)).status_code == 403
        assert (await h.http.post(path, data={**data, "csrf_token": "wrong"})).status_code \
            == 403
        cross = await h.http.post(path, data={**data, "csrf_token": token},
                                  headers={"origin": "https://evil.example"})
        assert cross.status_code == 403
    with h.runtime.db.session() as session:
        row = session.get(User, bob)
        assert row is not None and row.status == "active" and row.role == "user"
        assert session.scalars(select(User).where(User.username == "sneaky")).first() is None
        assert users.login(session, "bob", PASSWORD, h.runtime.clock.now()).user is not None


async def test_person_page_edit_password_consents_delete(ui: tuple[AppHarness, Any]) -> None:
    h, _ = ui
    make_user(h, "carol", role="user")
    carol = user_id(h, "carol")
    client, _ = factories.create_client(h.runtime, name="Notes app", scopes=["read"])
    with h.runtime.db.session(write=True) as session:
        consents.grant(session, carol, client.client_id, ("read",), h.runtime.clock.now(),
                       0, audit.Actor("test"))
        consents.grant(session, carol, "https://agent.example/meta.json", ("read",),
                       h.runtime.clock.now(), 0, audit.Actor("test"))
    page = await h.http.get(f"/admin/users/{carol}")
    assert page.status_code == 200
    assert "Notes app" in page.text and "https://agent.example/meta.json" in page.text
    assert page.text.count('class="consent"') == 2
    token = csrf(page)

    saved = await h.http.post(f"/admin/users/{carol}/update", data={
        "name": "Carol C", "email": "carol@example.com", "email_verified": "1",
        "role": "user", "csrf_token": token})
    assert saved.status_code == 303
    with h.runtime.db.session() as session:
        record = users.get_user(session, carol)
    assert (record.name, record.email, record.email_verified) == (
        "Carol C", "carol@example.com", True)
    short = await h.http.post(f"/admin/users/{carol}/password", data={
        "password": "short", "csrf_token": token})
    assert short.status_code == 400 and "12" in short.text
    changed = await h.http.post(f"/admin/users/{carol}/password", data={
        "password": "carol's new password", "csrf_token": token})
    assert changed.status_code == 303
    with h.runtime.db.session(write=True) as session:
        assert users.login(session, "carol", "carol's new password",
                           h.runtime.clock.now()).user is not None

    revoked = await h.http.post(f"/admin/users/{carol}/revoke-consent", data={
        "client_id": client.client_id, "csrf_token": token})
    assert revoked.status_code == 303
    page = await h.http.get(revoked.headers["location"])
    assert "Consent revoked" in page.text and page.text.count('class="consent"') == 1
    unknown = await h.http.post(f"/admin/users/{carol}/revoke-consent", data={
        "client_id": "never-consented", "csrf_token": token})
    assert unknown.status_code == 404
    missing = await h.http.post(f"/admin/users/{carol}/revoke-consent", data={
        "csrf_token": token})
    assert missing.status_code == 400

    deleted = await h.http.post(f"/admin/users/{carol}/delete", data={"csrf_token": token})
    assert deleted.status_code == 303
    assert deleted.headers["location"] == f"/admin/users?deleted={carol}"
    assert (await h.http.get(f"/admin/users/{carol}")).status_code == 404
    with h.runtime.db.session() as session:
        assert session.get(User, carol) is None
        assert session.scalars(select(Consent)).all() == []


async def test_no_one_disables_deletes_or_demotes_themselves(
        ui: tuple[AppHarness, Any]) -> None:
    h, _ = ui
    alice = user_id(h, "alice")
    page = await h.http.get(f"/admin/users/{alice}")
    assert 'id="user-role"' not in page.text and "Disable" not in page.text
    token = csrf(page)
    for action, data in [("disable", {}), ("delete", {}), ("update", {"role": "user"})]:
        refused = await h.http.post(f"/admin/users/{alice}/{action}",
                                    data={**data, "csrf_token": token})
        assert refused.status_code == 403 and "another admin" in refused.text
    # changing one's own profile is fine
    assert (await h.http.post(f"/admin/users/{alice}/update", data={
        "name": "Alice", "csrf_token": token})).status_code == 303
    assert (await h.http.get("/admin/users")).status_code == 200
    with h.runtime.db.session() as session:
        row = session.get(User, alice)
        assert row is not None and (row.status, row.role, row.name) == ("active", "admin",
                                                                       "Alice")


async def test_an_org_admin_sees_only_its_people(ui: tuple[AppHarness, Any]) -> None:
    h, app = ui
    with h.runtime.db.session(write=True) as session:
        org = organizations.create_org(session, "Tenant", h.runtime.clock.now(),
                                       audit.Actor("test")).id
    make_user(h, "tina", org_id=org)
    make_user(h, "tom", role="user", org_id=org)
    make_user(h, "oscar", role="user")
    oscar = user_id(h, "oscar")
    tinas = await browser(h, app, "tina")
    page = await tinas.get("/admin/users")
    assert "tom" in page.text and "oscar" not in page.text and "alice" not in page.text
    assert 'name="org_id"' not in page.text
    assert (await tinas.get(f"/admin/users/{oscar}")).status_code == 404
    token = csrf(page)
    for action in ("disable", "delete", "password", "update"):
        answer = await tinas.post(f"/admin/users/{oscar}/{action}", data={
            "csrf_token": token, "password": "a long enough password"})
        assert answer.status_code == 404
    made = await tinas.post("/admin/users", data={
        "username": "tess", "password": PASSWORD, "org_id": "org_default",
        "csrf_token": token})
    assert made.status_code == 303
    await tinas.aclose()
    with h.runtime.db.session() as session:
        assert users.user_by_username(session, "tess").org_id == org  # its own, not asked
        row = session.get(User, oscar)
        assert row is not None and row.status == "active"


async def test_odd_input_is_a_4xx_never_a_500(tmp_path: Path, database_url: str) -> None:
    """SQLite, and PostgreSQL when its URL is set (it cannot store a NUL character)."""
    migrator = Database(database_url)
    migrator.migrate()
    migrator.dispose()
    async with running_app(make_settings(tmp_path, database_url)) as h:
        make_user(h, "alice")
        make_user(h, "bob", role="user")
        await sign_in(h, "alice")
        bob = user_id(h, "bob")
        token = csrf(await h.http.get("/admin/users"))
        odd = ["\x00", "x" * 5000, "²", "-1", "1e9", "\u202e", " ", "admin\x00", "a@b",
               "<script>"]
        posts = ["/admin/users", f"/admin/users/{bob}/update", f"/admin/users/{bob}/password",
                 f"/admin/users/{bob}/revoke-consent", f"/admin/users/{bob}/nonsense"]
        fields = ["username", "password", "name", "email", "role", "org_id",
                  "email_verified", "client_id"]
        for path in posts:
            for value in odd:
                answer = await h.http.post(path, data={**{f: value for f in fields},
                                                       "csrf_token": token})
                assert answer.status_code < 500, (path, value[:20], answer.text[-400:])
                assert "<script>" not in answer.text
        for value in odd:
            for path in ("/admin/users/", "/admin/users?changed=", "/admin/users?deleted="):
                answer = await h.http.get(path + quote(value))
                assert answer.status_code < 500, (path, value[:20])
                assert "<script>" not in answer.text
            answer = await h.http.post(f"/admin/users/{quote(value)}/disable",
                                       data={"csrf_token": token})
            assert answer.status_code in (400, 404), (value[:20], answer.status_code)
        repeated = await h.http.post("/admin/users", content=(
            f"csrf_token={token}&username=a&username=b&password={quote(PASSWORD)}").encode(),
            headers={"content-type": "application/x-www-form-urlencoded"})
        assert repeated.status_code == 403  # a malformed form carries no CSRF token
        with h.runtime.db.session() as session:
            row = session.get(User, bob)
            assert row is not None and row.status == "active"
