"""The admin web UI in a real browser: headless Chromium (Playwright) against a live server.

One walk-through as an operator would do it: sign in, create a client and copy its secret,
get a token with that secret over HTTP, narrow the client's scopes in the UI (the token dies),
rotate the signing key, and find all of it in the audit log under the signed-in person.

Needs /usr/bin/chromium (Debian's `chromium`; `.ci/run` installs it). With
AUTHSERVER_SCREENSHOTS=1 the pages are also saved to docs/screenshots/ for the README.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from authserver import apikeys, audit, users
from authserver.web.wellknown import JWKS_PATH
from tests import factories
from tests.conftest import LiveServer, start_live_server

CHROMIUM = Path(os.environ.get("AUTHSERVER_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
USERNAME, PASSWORD = "alice", "correct horse battery staple"
TIMEOUT_MS = 10_000
expect.set_options(timeout=TIMEOUT_MS)

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does it)")


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    server = start_live_server(tmp_path)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


class Shots:
    """Full-page screenshots into docs/screenshots/, only when AUTHSERVER_SCREENSHOTS=1."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.enabled = os.environ.get("AUTHSERVER_SCREENSHOTS") == "1"
        if self.enabled:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str) -> None:
        if self.enabled:
            self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True,
                                 animations="disabled", caret="hide")


def introspect(live: LiveServer, who: tuple[str, str], token: str) -> dict[str, Any]:
    response = httpx.post(live.url + "/introspect", auth=who, data={"token": token},
                          timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def get_token(live: LiveServer, client_id: str, secret: str) -> dict[str, Any]:
    response = httpx.post(live.url + "/token", data={"grant_type": "client_credentials"},
                          headers=factories.basic_auth(client_id, secret), timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    factories.remember(body["access_token"])
    return body


def extra_screenshots(live: LiveServer, page: Page, shot: Shots) -> None:
    """Organisations, registration tokens, self-registered clients, an API key's edit page
    and the dashboard with its token rate, each with something on it."""
    page.get_by_role("link", name="Organisations", exact=True).click()
    page.get_by_label("Name", exact=True).fill("Acme")
    page.get_by_role("button", name="Create organisation").click()
    expect(page.get_by_role("status")).to_contain_text("Saved")
    shot("organizations")

    page.get_by_role("link", name="Registration tokens", exact=True).click()
    page.get_by_label("Description").fill("CI agents")
    page.get_by_label("Max uses (empty: no limit)").fill("10")
    page.get_by_role("button", name="Issue token").click()
    token = factories.remember(page.locator("#registration-token").inner_text().strip())
    assert token and token.startswith("asiat_")
    page.locator("#registration-token").evaluate("node => { node.textContent = 'asiat_••••'; }")
    shot("registration-token-created")
    registered = httpx.post(live.url + "/register", timeout=10,
                            headers={"authorization": f"Bearer {token}"},
                            json={"client_name": "nightly-agent", "software_id": "agent-sdk",
                                  "software_version": "2.4",
                                  "grant_types": ["client_credentials"]})
    assert registered.status_code == 201, registered.text
    for member in ("client_secret", "registration_access_token"):
        factories.remember(registered.json()[member])
    page.get_by_role("link", name="Registration tokens", exact=True).click()
    expect(page.locator("td.token-state")).to_have_text(["active"])
    shot("registration-tokens")

    page.get_by_role("link", name="Self-registered", exact=True).click()
    expect(page.locator("td.software")).to_have_text(["agent-sdk 2.4"])
    shot("registered-clients")

    with live.runtime.db.session(write=True) as session:
        _, key = apikeys.create_key(
            session, live.runtime.catalog,
            apikeys.ApiKeySpec("billing export", "org_default", ("invoices.read",)),
            live.settings.api_keys.prefix, live.runtime.clock.now(), audit.Actor("test"))
    factories.remember(key)
    page.get_by_role("link", name="API keys", exact=True).click()
    page.get_by_role("link", name="billing export", exact=True).click()
    page.get_by_label("Permissions").fill("invoices.read invoices.create")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_contain_text("Saved.")
    shot("api-key")

    page.get_by_role("link", name="Dashboard", exact=True).click()
    expect(page.locator("#token-rate")).to_be_visible()
    shot("dashboard")


def test_operator_walk_through(live: LiveServer, browser: Browser) -> None:
    with live.runtime.db.session(write=True) as session:
        person = users.create_user(session, USERNAME, PASSWORD, live.runtime.clock.now(),
                                   audit.Actor("test"), role="admin")
    actor = f"user:{person.id}"
    rs, rs_secret = factories.create_client(live.runtime, name="resource server")
    assert rs_secret
    resource_server = (rs.client_id, rs_secret)

    context = browser.new_context(base_url=live.url, viewport={"width": 1280, "height": 800},
                                  color_scheme="light", locale="en-GB")
    context.set_default_timeout(TIMEOUT_MS)
    try:
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live.url)
        clipboard = True
    except PlaywrightError:  # a browser without these permissions: read the page instead
        clipboard = False
    page = context.new_page()
    problems: list[str] = []  # script errors, CSP violations, failed loads

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"{message.location.get('url', '')}: {message.text}")

    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", console)
    shot = Shots(page)
    try:
        # 1. sign in: /admin sends a stranger to the login page
        page.goto("/admin")
        expect(page).to_have_url(live.url + "/admin/login")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        shot("login")
        page.get_by_label("Username").fill(USERNAME)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(live.url + "/admin")
        expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
        expect(page.locator("header")).to_contain_text(USERNAME)
        shot("dashboard")

        # 2. create a client in the UI; copy the secret shown once
        page.get_by_role("link", name="Clients", exact=True).click()
        expect(page.get_by_role("heading", name="Clients", exact=True)).to_be_visible()
        page.locator("#name").fill("billing")
        page.locator("#scope").fill("read write")
        page.get_by_role("button", name="Create client").click()
        expect(page.get_by_role("heading", name="Client created: billing")).to_be_visible()
        client_id = page.locator("#client-id").inner_text().strip()
        shown = page.locator("#client-secret").inner_text().strip()
        factories.remember(shown)
        assert client_id.startswith("cli_") and shown.startswith("ascs_")
        page.locator("#copy-secret").click()
        secret = shown
        if clipboard:
            expect(page.locator("#copy-secret")).to_have_text("Copied")
            copied = page.evaluate("() => navigator.clipboard.readText()")
            assert copied == shown  # the button copies exactly the secret
            secret = copied
        factories.remember(secret)
        page.locator("#client-secret").evaluate("node => { node.textContent = 'ascs_••••'; }")
        shot("client-created")

        # 3. that secret gets a token over real HTTP; 4. introspection says it is live
        token = get_token(live, client_id, secret)
        assert token["scope"] == "read write"
        live_answer = introspect(live, resource_server, token["access_token"])
        assert live_answer["active"] is True and live_answer["client_id"] == client_id
        assert live_answer["scope"] == "read write"

        page.get_by_role("link", name="Clients", exact=True).click()
        row = page.locator("tr", has=page.get_by_role("link", name="billing"))
        expect(row).to_contain_text(client_id)
        expect(row).to_contain_text("read write")
        shot("clients")

        # 5. narrow the scopes in the UI: the token issued before the change is dead
        row.get_by_role("link", name="billing").click()
        expect(page).to_have_url(f"{live.url}/admin/clients/{client_id}")
        expect(page.locator("#scope_text")).to_have_value("read write")
        assert secret not in page.content()
        page.locator("#scope_text").fill("read")
        page.get_by_role("button", name="Save").click()
        expect(page.get_by_role("status")).to_contain_text("Saved.")
        expect(page.locator("#scope_text")).to_have_value("read")
        shot("client")
        assert introspect(live, resource_server, token["access_token"]) == {"active": False}
        assert get_token(live, client_id, secret)["scope"] == "read"

        # 6. rotate the signing key in the UI: a second key, published, in the JWKS
        page.get_by_role("link", name="Signing keys").click()
        states = page.locator("td.key-state")
        expect(states).to_have_count(1)
        expect(states).to_have_text(["active"])
        page.get_by_role("button", name="Rotate signing key").click()
        expect(page).to_have_url(re.compile(re.escape(live.url) + r"/admin/keys\?rotated=."))
        expect(page.get_by_role("status")).to_contain_text("is published now")
        kid = page.get_by_role("status").locator("code").inner_text().strip()
        expect(states).to_have_count(2)
        new_row = page.locator("tr", has=page.locator("td", has_text=kid))
        expect(new_row.locator("td.key-state")).to_have_text("published")
        jwks = httpx.get(live.url + JWKS_PATH, timeout=10).json()
        assert kid in {key["kid"] for key in jwks["keys"]}
        shot("keys")

        # 7. the audit log has the sign-in and all three changes, by the signed-in person
        page.get_by_role("link", name="Audit log").click()
        page.get_by_label("Actor").fill(actor)
        page.get_by_role("button", name="Filter").click()
        expect(page).to_have_url(re.compile(r"/admin/audit\?actor=user%3A"))
        rows = page.locator("tbody tr")
        expect(rows).to_have_count(4)
        cells = [[c.strip() for c in r.locator("td").all_inner_texts()] for r in rows.all()]
        assert {(c[2], c[3], c[4]) for c in cells} == {
            (actor, "user.login", person.id), (actor, "client.create", client_id),
            (actor, "client.update", client_id), (actor, "signing_key.rotate", kid)}
        assert all(c[5] == "success" and c[6] == "127.0.0.1" for c in cells)
        page.get_by_label("Action").fill("client.")
        page.get_by_role("button", name="Filter").click()
        expect(rows).to_have_count(2)
        expect(rows.locator("td:nth-child(4)")).to_have_text(["client.update", "client.create"])
        page.get_by_label("Action").fill("")
        page.get_by_role("button", name="Filter").click()
        expect(rows).to_have_count(4)
        shot("audit")
        assert secret not in page.content()
        assert problems == []

        # 8. screenshots of the other pages (their behaviour is tested in-process)
        extra_screenshots(live, page, shot)
        assert problems == []
    finally:
        context.close()


def test_approvals_page(tmp_path: Path, browser: Browser) -> None:
    """The approvals page with a pending request from the UI, one from the admin API and an
    approved one (screenshots `approvals`)."""
    live = start_live_server(tmp_path, approvals={
        "required": 2, "actions": ["api_key.create.privileged", "organization.delete",
                                   "client.delete"]})
    context = browser.new_context(base_url=live.url, viewport={"width": 1280, "height": 800},
                                  color_scheme="light", locale="en-GB")
    context.set_default_timeout(TIMEOUT_MS)
    try:
        now = live.runtime.clock.now()
        with live.runtime.db.session(write=True) as session:
            for name in (USERNAME, "bob"):
                users.create_user(session, name, PASSWORD, now, audit.Actor("test"),
                                  role="admin")
            _, key = apikeys.create_key(
                session, live.runtime.catalog,
                apikeys.ApiKeySpec("ops admin", "org_default", ("*",)),
                live.settings.api_keys.prefix, now, audit.Actor("test"))
        factories.remember(key)
        client, secret = factories.create_client(live.runtime, name="legacy importer")
        assert secret
        asked = httpx.delete(f"{live.url}/api/v1/clients/{client.client_id}", timeout=10,
                             headers={"x-api-key": key})
        assert asked.status_code == 202, asked.text

        page = context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.goto("/admin/login")
        page.get_by_label("Username").fill(USERNAME)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("link", name="API keys", exact=True).click()
        page.get_by_label("Name", exact=True).fill("deploy root")
        page.get_by_label("Permissions").fill("*")
        page.get_by_role("button", name="Create API key").click()
        expect(page.get_by_role("status")).to_contain_text("needs 2 approvals")
        request_id = page.locator("#approval-link").inner_text().strip()

        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("link", name=re.compile(r"^Approvals")).click()
        expect(page.locator("#pending-approvals")).to_contain_text("2")
        expect(page.locator("tr.approval-row")).to_have_count(2)
        page.get_by_role("link", name=asked.json()["id"]).click()
        page.get_by_role("button", name="Approve").click()
        expect(page.get_by_role("status")).to_contain_text("Approved.")
        expect(page.locator("#approvals")).to_contain_text(USERNAME)
        page.get_by_role("link", name="Back to the approvals").click()
        expect(page.locator("tr.approval-row")).to_have_count(2)
        expect(page.get_by_role("link", name=request_id)).to_be_visible()
        Shots(page)("approvals")
        assert not problems, problems
    finally:
        context.close()
        live.stop()
