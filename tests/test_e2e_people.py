"""End to end, a person's flow with the MCP SDK's `OAuthClientProvider`, over real sockets.

An MCP resource server (the SDK's streamable-http server, validating tokens against authserver's
JWKS with aud = its own URL) sends the SDK to authserver through RFC 9728 metadata. The SDK
discovers authserver (RFC 8414), registers itself (RFC 7591, public client) or uses a Client ID
Metadata Document, sends the person to /authorize (the redirect handler stands in for the
browser: it signs in and consents through the real HTML forms), exchanges the code with PKCE,
calls a tool, refreshes its token with the refresh_token grant and calls a tool again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from mcp.client import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)
from mcp.types import TextContent

from authserver import audit, users
from tests import factories
from tests.conftest import LiveServer, bind_loopback, start_live_server
from tests.jwks_server import StaticServer
from tests.people_flow import Browser, query_of
from tests.test_e2e_mcp import ADVERTISED_SCOPES, TOOL_SCOPE, McpServer, start_mcp_server

pytestmark = pytest.mark.anyio

REDIRECT = "http://127.0.0.1:33418/callback"  # never contacted: the browser stops at it
USERNAME = "alice"
PASSWORD = "correct horse battery staple"


@dataclass
class RecordingStorage:
    """In-memory TokenStorage that keeps every token set it was given, in order."""

    history: list[OAuthToken] = field(default_factory=list)
    client_info: OAuthClientInformationFull | None = None

    @property
    def tokens(self) -> OAuthToken | None:
        return self.history[-1] if self.history else None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        factories.remember(tokens.access_token)
        factories.remember(tokens.refresh_token)
        self.history.append(tokens)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


@dataclass
class PersonAtBrowser:
    """The SDK's redirect and callback handlers: a person who signs in and allows access, in
    their own browser (a separate HTTP client with its own cookies), not the SDK's client."""

    auth_url: str
    authorization_urls: list[str] = field(default_factory=list)
    locations: list[str] = field(default_factory=list)

    async def redirect_handler(self, authorization_url: str) -> None:
        self.authorization_urls.append(authorization_url)
        # httpcore's DEBUG trace logs response headers, so the redirect's Location with the
        # code: the session-wide secrets-in-logs check would (rightly) flag the test's own
        # browser. authserver's logs stay under that check.
        trace = logging.getLogger("httpcore")
        level = trace.level
        trace.setLevel(logging.INFO)
        try:
            async with httpx.AsyncClient(base_url=self.auth_url, timeout=15) as http:
                location = await Browser(http, USERNAME, PASSWORD).authorize(authorization_url)
        finally:
            trace.setLevel(level)
        factories.remember(query_of(location).get("code"))
        self.locations.append(location)

    async def callback_handler(self) -> AuthorizationCodeResult:
        back = query_of(self.locations[-1])
        return AuthorizationCodeResult(code=back["code"], state=back.get("state"),
                                       iss=back.get("iss"))


@dataclass
class Stack:
    auth: LiveServer
    mcp: McpServer
    user_id: str


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """authserver (open registration and metadata documents allowed the MCP server's scope,
    loopback documents allowed) with one person, and the MCP server it issues tokens for."""
    sock, url = bind_loopback()
    mcp_url = url + "/mcp"
    try:
        live = start_live_server(
            tmp_path,
            resources=[{"identifier": mcp_url, "scopes": [TOOL_SCOPE]}],
            registration={"open_scopes": [TOOL_SCOPE]},
            cimd={"allow_loopback": True,
                  "scopes": ["openid", "profile", "email", "offline_access", TOOL_SCOPE]},
        )
        try:
            rt = live.runtime
            with rt.db.session(write=True) as session:
                user = users.create_user(session, USERNAME, PASSWORD, rt.clock.now(),
                                         audit.SYSTEM, role="user")
            mcp = start_mcp_server(sock, url, live.url)
            try:
                yield Stack(live, mcp, user.id)
            finally:
                mcp.stop()
        finally:
            live.stop()
    finally:
        sock.close()


def _client_metadata() -> OAuthClientMetadata:
    return OAuthClientMetadata.model_validate({
        "client_name": "People e2e agent",
        "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "scope": TOOL_SCOPE,
    })


async def _claims(auth_url: str, token: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as http:
        jwks = (await http.get(auth_url + "/.well-known/jwks.json")).json()
    return dict(jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["RS256"]).claims)


async def _run_flow(stack: Stack, provider: OAuthClientProvider,
                    storage: RecordingStorage) -> list[dict[str, list[str]]]:
    """Two tool calls with a forced refresh between them; returns the SDK's requests to
    authserver's /register and /token (form fields, or the JSON body for /register)."""
    auth_requests: list[dict[str, list[str]]] = []

    async def record(request: httpx2.Request) -> None:
        if request.method != "POST" or not str(request.url).startswith(stack.auth.url):
            return
        if str(request.url) == stack.auth.url + "/token":
            auth_requests.append({"_endpoint": ["/token"], **parse_qs(request.content.decode())})
        elif str(request.url) == stack.auth.url + "/register":
            auth_requests.append({"_endpoint": ["/register"],
                                  "body": [request.content.decode()]})

    async with (
        httpx2.AsyncClient(auth=provider, timeout=30, event_hooks={"request": [record]}) as http,
        Client(streamable_http_client(stack.mcp.mcp_url, http_client=http)) as session,
    ):
        first = await session.call_tool("add", {"a": 2, "b": 40})
        assert not first.is_error, first
        assert isinstance(first.content[0], TextContent) and first.content[0].text == "42"
        assert len(storage.history) == 1
        # The access token's lifetime is at least 60 s (tokens.access_token_lifetime); instead
        # of waiting, let the SDK's own clock of it run out: its next request refreshes first.
        provider.context.token_expiry_time = time.time() - 1
        second = await session.call_tool("whoami", {})
        assert not second.is_error, second
    # The MCP server saw the refreshed token's client and scope.
    assert storage.client_info is not None
    assert isinstance(second.content[0], TextContent)
    assert second.content[0].text.split()[0] == storage.client_info.client_id
    assert TOOL_SCOPE in second.content[0].text.split()[1:]
    return auth_requests


async def _assert_person_tokens(stack: Stack, storage: RecordingStorage, client_id: str) -> None:
    mcp_url = stack.mcp.mcp_url
    assert len(storage.history) == 2, storage.history
    before, after = storage.history
    # Public client: the refresh token was rotated, and a new access token issued.
    assert before.refresh_token and after.refresh_token
    assert after.refresh_token != before.refresh_token
    assert after.access_token != before.access_token
    for token in (before, after):
        claims = await _claims(stack.auth.url, token.access_token)
        assert claims["sub"] == stack.user_id and claims["sub"].startswith("usr_")
        assert claims["client_id"] == client_id
        assert claims["aud"] == mcp_url
        assert claims["iss"] == stack.auth.url
        assert TOOL_SCOPE in claims["scope"].split()
    # The MCP server accepted both tokens (the person's, for its audience), refused none.
    assert stack.mcp.verifier.rejected == []
    accepted_jtis = {c["jti"] for c in stack.mcp.verifier.accepted}
    assert {(await _claims(stack.auth.url, t.access_token))["jti"]
            for t in storage.history} <= accepted_jtis
    assert {c["sub"] for c in stack.mcp.verifier.accepted} == {stack.user_id}
    # The rotated-out refresh token is dead (a replay is refused).
    async with httpx.AsyncClient(timeout=10) as http:
        replay = await http.post(stack.auth.url + "/token", data={
            "grant_type": "refresh_token", "refresh_token": before.refresh_token,
            "client_id": client_id})
    assert replay.status_code == 400, replay.text
    assert replay.json()["error"] == "invalid_grant"


def _grant_requests(requests: list[dict[str, list[str]]]) -> list[dict[str, list[str]]]:
    return [r for r in requests if r["_endpoint"] == ["/token"]]


async def test_sdk_person_flow_with_dynamic_registration_and_refresh(stack: Stack) -> None:
    mcp_url = stack.mcp.mcp_url
    storage = RecordingStorage()
    person = PersonAtBrowser(stack.auth.url)
    provider = OAuthClientProvider(
        server_url=mcp_url, client_metadata=_client_metadata(), storage=storage,
        redirect_handler=person.redirect_handler, callback_handler=person.callback_handler,
    )

    requests = await _run_flow(stack, provider, storage)

    # Dynamic registration of a public client, once.
    registrations = [r for r in requests if r["_endpoint"] == ["/register"]]
    assert len(registrations) == 1
    registered = json.loads(registrations[0]["body"][0])
    assert registered["token_endpoint_auth_method"] == "none"
    assert registered["redirect_uris"] == [REDIRECT]
    assert storage.client_info is not None
    client_id = storage.client_info.client_id
    assert storage.client_info.client_secret is None

    # The person was sent to authserver's /authorize once, with PKCE and resource; they
    # came back to the redirect URI with a code, the state and authserver as issuer (RFC 9207).
    assert len(person.authorization_urls) == 1
    sent = query_of(person.authorization_urls[0])
    assert person.authorization_urls[0].startswith(stack.auth.url + "/authorize?")
    assert sent["client_id"] == client_id
    assert sent["code_challenge_method"] == "S256"
    assert sent["resource"] == mcp_url
    assert set(sent["scope"].split()) >= set(ADVERTISED_SCOPES)
    back = query_of(person.locations[0])
    assert person.locations[0].startswith(REDIRECT + "?")
    assert back["state"] == sent["state"] and back["iss"] == stack.auth.url

    # The grants: authorization_code (PKCE, no secret), then refresh_token, both for the MCP URL.
    grants = _grant_requests(requests)
    assert [g["grant_type"] for g in grants] == [["authorization_code"], ["refresh_token"]]
    code_grant, refresh_grant = grants
    assert code_grant["client_id"] == [client_id] and "code_verifier" in code_grant
    assert code_grant["resource"] == [mcp_url] and "client_secret" not in code_grant
    assert refresh_grant["client_id"] == [client_id]
    assert refresh_grant["resource"] == [mcp_url]
    assert refresh_grant["refresh_token"] == [storage.history[0].refresh_token]

    await _assert_person_tokens(stack, storage, client_id)


async def test_sdk_person_flow_with_client_id_metadata_document(stack: Stack) -> None:
    """The SDK's CIMD path: authserver advertises client_id_metadata_document_supported, so the
    SDK skips registration and uses the document URL as client_id; authserver fetches it."""
    mcp_url = stack.mcp.mcp_url
    with StaticServer() as documents:
        doc_url = documents.url + "/agent/client.json"
        documents.put("/agent/client.json", json.dumps({
            "client_id": doc_url, "client_name": "People e2e CIMD agent",
            "redirect_uris": [REDIRECT], "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"], "token_endpoint_auth_method": "none",
        }).encode())
        storage = RecordingStorage()
        person = PersonAtBrowser(stack.auth.url)
        provider = OAuthClientProvider(
            server_url=mcp_url, client_metadata=_client_metadata(), storage=storage,
            redirect_handler=person.redirect_handler, callback_handler=person.callback_handler,
        )
        # The SDK's constructor accepts only an https client_metadata_url
        # (mcp/client/auth/utils.py is_valid_client_metadata_url); this document is served over
        # plain http on loopback (authserver's [cimd] allow_loopback), so it is set after the
        # check. Everything else is the SDK's own CIMD path (should_use_client_metadata_url).
        with pytest.raises(ValueError, match="HTTPS"):
            OAuthClientProvider(server_url=mcp_url, client_metadata=_client_metadata(),
                                storage=RecordingStorage(), client_metadata_url=doc_url)
        provider.context.client_metadata_url = doc_url

        requests = await _run_flow(stack, provider, storage)

        assert documents.hits.get("/agent/client.json", 0) >= 1  # authserver fetched it

    assert [r for r in requests if r["_endpoint"] == ["/register"]] == []  # no DCR
    assert storage.client_info is not None and storage.client_info.client_id == doc_url
    sent = query_of(person.authorization_urls[0])
    assert sent["client_id"] == doc_url and sent["resource"] == mcp_url
    grants = _grant_requests(requests)
    assert [g["grant_type"] for g in grants] == [["authorization_code"], ["refresh_token"]]
    assert all(g["client_id"] == [doc_url] for g in grants)
    await _assert_person_tokens(stack, storage, doc_url)
