"""End to end with the MCP SDK: a client-credentials MCP client discovers authserver through a
small MCP resource server (RFC 9728), gets a token for it (RFC 8707) and calls a tool.

The MCP server validates the bearer token itself against authserver's JWKS (signature, typ,
iss, aud = its own URL, exp), as an independent resource server would.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import httpx2
import pytest
import uvicorn
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from mcp.client import Client
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.routes import build_resource_metadata_url, create_protected_resource_routes
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from starlette.types import ASGIApp, Receive, Scope, Send

from tests import factories
from tests.conftest import LiveServer, bind_loopback, serve_in_thread, start_live_server

TOOL_SCOPE = "mcp:tools"
# What the MCP server advertises in its RFC 9728 metadata, so what the SDK asks for: more than
# authserver lets this client have for this resource. Policy "intersect" grants the subset.
ADVERTISED_SCOPES = [TOOL_SCOPE, "mcp:admin"]


@dataclass
class JwksTokenVerifier:
    """An RFC 9068 resource server's check, against the authorization server's JWKS."""

    issuer: str
    audience: str
    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.get(self.issuer + "/.well-known/jwks.json")
            response.raise_for_status()
            decoded = jwt.decode(token, KeySet.import_key_set(response.json()),
                                 algorithms=["RS256"])
            if decoded.header.get("typ") != "at+jwt":
                raise ValueError(f"typ {decoded.header.get('typ')!r}")
            jwt.JWTClaimsRegistry(
                leeway=5,
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.audience},
                exp={"essential": True},
                sub={"essential": True},
                client_id={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError, httpx.HTTPError) as exc:
            self.rejected.append(type(exc).__name__)
            return None
        claims = decoded.claims
        self.accepted.append(claims)
        return AccessToken(
            token=token, client_id=claims["client_id"],
            scopes=claims.get("scope", "").split(), expires_at=claims["exp"],
            resource=claims["aud"], subject=claims["sub"], claims={"iss": claims["iss"]},
        )


def build_mcp_app(url: str, issuer: str, verifier: JwksTokenVerifier) -> ASGIApp:
    # Strings, not AnyHttpUrl(...): AuthSettings keeps a path-less issuer without a "/", which
    # RFC 8414's exact issuer comparison needs.
    auth = AuthSettings.model_validate({
        "issuer_url": issuer,
        "resource_server_url": url + "/mcp",
        "required_scopes": [TOOL_SCOPE],
        "validate_token_resource": True,
    })
    assert auth.resource_server_url is not None
    server = MCPServer(name="e2e resource server", token_verifier=verifier, auth=auth)

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @server.tool()
    def whoami() -> str:
        """The client the bearer token was issued to, and its scopes."""
        token = get_access_token()
        assert token is not None
        return f"{token.client_id} {' '.join(token.scopes)}"

    inner = server.streamable_http_app(host="127.0.0.1")
    # The SDK publishes scopes_supported = required_scopes; advertise more, as real servers do.
    (metadata_route,) = create_protected_resource_routes(
        resource_url=auth.resource_server_url, authorization_servers=[auth.issuer_url],
        scopes_supported=ADVERTISED_SCOPES,
    )
    metadata_path = str(build_resource_metadata_url(auth.resource_server_url)).removeprefix(url)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == metadata_path:
            await metadata_route(scope, receive, send)
        else:
            await inner(scope, receive, send)

    return app


@dataclass
class McpServer:
    url: str
    verifier: JwksTokenVerifier
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def mcp_url(self) -> str:
        return self.url + "/mcp"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_mcp_server(sock: socket.socket, url: str, issuer: str) -> McpServer:
    verifier = JwksTokenVerifier(issuer=issuer, audience=url + "/mcp")
    server, thread = serve_in_thread(build_mcp_app(url, issuer, verifier), sock)
    return McpServer(url, verifier, server, thread)


@dataclass
class MemoryTokenStorage:
    """TokenStorage that registers every token it is given with the log check."""

    tokens: OAuthToken | None = None
    client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        factories.remember(tokens.access_token)
        factories.remember(tokens.refresh_token)
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


@dataclass
class Stack:
    auth: LiveServer
    mcp: McpServer


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """authserver, configured with the MCP server as a resource, and the MCP server."""
    sock, url = bind_loopback()  # the MCP server's address first: authserver's settings name it
    mcp_url = url + "/mcp"
    try:
        live = start_live_server(
            tmp_path, resources=[{"identifier": mcp_url, "scopes": [TOOL_SCOPE]}]
        )
        try:
            mcp = start_mcp_server(sock, url, live.url)
            try:
                yield Stack(live, mcp)
            finally:
                mcp.stop()
        finally:
            live.stop()
    finally:
        sock.close()


@pytest.mark.anyio
async def test_mcp_client_credentials_discovers_authserver_and_calls_tool(stack: Stack) -> None:
    mcp_url = stack.mcp.mcp_url
    client, secret = factories.create_client(
        stack.auth.runtime, scopes=[TOOL_SCOPE, "reports:read"], resources=[mcp_url]
    )
    assert secret is not None
    storage = MemoryTokenStorage()
    provider = ClientCredentialsOAuthProvider(
        server_url=mcp_url, storage=storage, client_id=client.client_id, client_secret=secret,
        issuer=stack.auth.url,
    )
    token_requests: list[dict[str, list[str]]] = []

    async def record_token_request(request: httpx2.Request) -> None:
        if request.method == "POST" and str(request.url) == stack.auth.url + "/token":
            token_requests.append(parse_qs(request.content.decode()))

    async with (
        httpx2.AsyncClient(auth=provider, timeout=15,
                           event_hooks={"request": [record_token_request]}) as http,
        Client(streamable_http_client(mcp_url, http_client=http)) as session,
    ):
        added = await session.call_tool("add", {"a": 2, "b": 40})
        who = await session.call_tool("whoami", {})

    assert not added.is_error, added
    assert added.content[0].text == "42"
    assert not who.is_error, who
    assert who.content[0].text == f"{client.client_id} {TOOL_SCOPE}"

    # The SDK discovered authserver through the MCP server's RFC 9728 metadata, asked for
    # every advertised scope with resource=<MCP server>, and got the allowed subset.
    assert token_requests == [{"grant_type": ["client_credentials"], "resource": [mcp_url],
                               "scope": [" ".join(ADVERTISED_SCOPES)]}]
    assert storage.tokens is not None
    assert storage.tokens.scope == TOOL_SCOPE
    token = storage.tokens.access_token
    async with httpx.AsyncClient(timeout=10) as http:
        jwks = (await http.get(stack.auth.url + "/.well-known/jwks.json")).json()
    claims = jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["RS256"]).claims
    assert claims["aud"] == mcp_url
    assert claims["iss"] == stack.auth.url
    assert claims["client_id"] == claims["sub"] == client.client_id
    assert claims["scope"] == TOOL_SCOPE
    assert stack.mcp.verifier.rejected == []
    assert stack.mcp.verifier.accepted
    assert all(c["aud"] == mcp_url for c in stack.mcp.verifier.accepted)


@pytest.mark.anyio
async def test_mcp_server_refuses_token_for_another_audience(stack: Stack) -> None:
    """The verifier is not a rubber stamp: a valid authserver token for the issuer is refused."""
    client, secret = factories.create_client(stack.auth.runtime, scopes=[TOOL_SCOPE])
    assert secret is not None
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            stack.auth.url + "/token", data={"grant_type": "client_credentials"},
            auth=(client.client_id, secret),
        )
        assert response.status_code == 200, response.text
        token = factories.remember(response.json()["access_token"])
        refused = await http.post(
            stack.mcp.mcp_url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"authorization": f"Bearer {token}",
                     "accept": "application/json, text/event-stream"},
        )
    assert refused.status_code == 401
    assert "resource_metadata=" in refused.headers["www-authenticate"]
    assert stack.mcp.verifier.rejected == ["InvalidClaimError"]
