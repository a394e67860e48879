# ruff: noqa: F811 - the fixtures imported below are parameters of the test
"""The authorization code flow in a real browser: headless Chromium (Playwright) against a
live server, with the client's redirect URI served by a small local HTTP server.

A person signs in on the login page, reads on the consent page who is asking and where they
will be sent, allows, and lands on the client's callback with a code; the client then
exchanges the code (with its PKCE verifier) at /token over real HTTP.

Needs /usr/bin/chromium (Debian's `chromium`; `.ci/run` installs it). With
AUTHSERVER_SCREENSHOTS=1 the consent page is saved to docs/screenshots/consent.png.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, expect

from authserver import audit, users
from tests import factories
from tests.conftest import LiveServer
from tests.jwks_server import StaticServer
from tests.people_flow import pkce_pair, query_of

# The admin UI test's server and Chromium fixtures, shared (pytest passes them by name).
from tests.test_admin_ui_browser import (  # noqa: F401
    CHROMIUM,
    PASSWORD,
    TIMEOUT_MS,
    Shots,
    browser,
    live,
)

USERNAME = "alice"
# the data: icon keeps Chromium from asking the callback server for /favicon.ico (a 404)
CALLBACK_PAGE = (b'<!doctype html><link rel="icon" href="data:,"><title>Desk Agent</title>'
                 b"<p>Signed in.</p>")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does it)")


class _IgnoringQuery(dict[str, Any]):
    """StaticServer's routes, looked up by path alone: the callback comes with a query."""

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.split("?", 1)[0], default)


@pytest.fixture
def callback() -> Iterator[StaticServer]:
    with StaticServer() as server:
        server.routes = _IgnoringQuery(
            {"/callback": (200, {"content-type": "text/html; charset=utf-8"}, CALLBACK_PAGE)})
        yield server


def test_person_signs_in_and_allows(live: LiveServer, browser: Browser,
                                    callback: StaticServer) -> None:
    redirect = callback.url + "/callback"
    with live.runtime.db.session(write=True) as session:
        users.create_user(session, USERNAME, PASSWORD, live.runtime.clock.now(), audit.SYSTEM,
                          role="user")
    client, _ = factories.create_client(
        live.runtime, name="Desk Agent", auth_method="none",
        grant_types=("authorization_code", "refresh_token"), redirect_uris=(redirect,))
    verifier, challenge = pkce_pair()
    state = "state-" + verifier[:8]
    authorize = "/authorize?" + urlencode({
        "response_type": "code", "client_id": client.client_id, "redirect_uri": redirect,
        "code_challenge": challenge, "code_challenge_method": "S256", "state": state,
        "scope": "openid"})

    context = browser.new_context(base_url=live.url, viewport={"width": 1280, "height": 800},
                                  color_scheme="light", locale="en-GB")
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    problems: list[str] = []  # script errors, CSP violations, failed loads
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    try:
        # 1. the authorization request sends a stranger to the sign-in page
        page.goto(authorize)
        expect(page).to_have_url(re.compile(re.escape(live.url) + r"/login\?return_to="))
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        page.get_by_label("Username").fill(USERNAME)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()

        # 2. back at /authorize: the consent page names the client and where it leads
        expect(page.locator("#allow")).to_be_visible()
        assert urlsplit(page.url).path == "/authorize"
        expect(page.locator("#client-name")).to_have_text("Desk Agent")
        expect(page.locator("#redirect-host")).to_have_text(urlsplit(redirect).netloc)
        assert page.locator("#redirect-host").inner_text().strip() == \
            f"127.0.0.1:{urlsplit(callback.url).port}"
        Shots(page)("consent")
        page.locator("#allow").click()

        # 3. the browser lands on the client's real callback page with code, state and iss
        page.wait_for_url(lambda url: url.startswith(redirect + "?"))
        expect(page.locator("p")).to_have_text("Signed in.")
        back = query_of(page.url)
        assert back["state"] == state and back["iss"] == live.url
        code = factories.remember(back["code"])
        assert code
        assert callback.hits == {"/callback?" + urlsplit(page.url).query: 1}
        assert problems == [], problems
    finally:
        context.close()

    # 4. the client exchanges the code with its PKCE verifier over real HTTP
    response = httpx.post(live.url + "/token", timeout=10, data={
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
        "client_id": client.client_id, "redirect_uri": redirect})
    assert response.status_code == 200, response.text
    body = response.json()
    factories.remember(body["access_token"])
    assert body["access_token"] and body["token_type"].lower() == "bearer"
