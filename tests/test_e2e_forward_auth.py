"""End to end over real sockets: a gateway asks authserver's forward-auth endpoint before each
request to an example API, the way nginx `auth_request`, Traefik `forwardAuth` and Envoy
`ext_authz` (HTTP mode) do (docs/forward-auth.md).

Three servers run under uvicorn on loopback: authserver (trusting 127.0.0.1 as its proxy), the
example API, and the gateway written below. Callers reach the gateway from distinct loopback
addresses (127.0.0.5, 127.0.0.9, ...), so the address the gateway claims in X-Forwarded-For is
the real peer address, as behind a real proxy.
"""

from __future__ import annotations

import http.client
import io
import os
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
import redis
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from authserver import apikeys, audit, organizations
from authserver.apikeys import ApiKeyRecord
from authserver.storage.models import DEFAULT_ORG_ID
from authserver.wiring import build_runtime, create_app
from tests import factories
from tests.conftest import (
    LiveServer,
    bind_loopback,
    serve_in_thread,
    start_live_server,
)

REDIS_ENV = "AUTHSERVER_TEST_REDIS_URL"
Style = Literal["nginx", "traefik", "envoy"]
STYLES: tuple[Style, ...] = ("nginx", "traefik", "envoy")

GATEWAY_PEER = "127.0.0.1"  # the only trusted proxy
ALLOWED = "127.0.0.5"  # an integrator's address, inside the allowlists below
OTHER = "127.0.0.9"  # an address outside every allowlist
UNTRUSTED = "127.0.0.2"  # a host that is not a trusted proxy
POLL = 0.25  # cache.event_poll_interval: how stale a cached key may be on each instance
STALENESS = 4 * POLL + 2.0  # how long a test waits for a change to reach the cache
TIMEOUT = httpx.Timeout(10.0)
ENVELOPE = {"type", "code", "message", "status", "request_id"}
ACTOR = audit.Actor("test")

# Request headers that belong to one hop only, and response headers a gateway hands back.
HOP_BY_HOP = {"host", "connection", "keep-alive", "transfer-encoding", "te", "trailer",
              "upgrade", "proxy-authorization", "proxy-authenticate", "content-length"}
DENIAL_HEADERS = {"content-type", "retry-after", "www-authenticate", "cache-control",
                  "x-request-id", "deprecation", "warning"}
SUCCESS_HEADERS = {"deprecation", "warning"}


# -- the example API ----------------------------------------------------------------------------


def upstream_app() -> Starlette:
    """A tiny API that reports what reached it: route, identity headers, query, credentials."""

    def seen(request: Request, route: str, status: int = 200, **extra: Any) -> Response:
        return JSONResponse({
            "route": route,
            "identity": {k: v for k, v in request.headers.items() if k.startswith("x-auth-")},
            "query": dict(request.query_params),
            "api_key_seen": "x-api-key" in request.headers
            or "x-api-key" in request.query_params,
            **extra,
        }, status)

    async def list_invoices(request: Request) -> Response:
        return seen(request, "invoices.list")

    async def create_invoice(request: Request) -> Response:
        return seen(request, "invoices.create", 201, body=await request.json())

    async def delete_invoice(request: Request) -> Response:
        return seen(request, "invoices.delete", invoice=request.path_params["invoice_id"])

    async def list_customers(request: Request) -> Response:
        return seen(request, "customers.list")

    return Starlette(routes=[
        Route("/api/v1/invoices", list_invoices, methods=["GET"]),
        Route("/api/v1/invoices", create_invoice, methods=["POST"]),
        Route("/api/v1/invoices/{invoice_id}", delete_invoice, methods=["DELETE"]),
        Route("/api/v1/customers", list_customers, methods=["GET"]),
    ])


# -- the gateway ----------------------------------------------------------------------------------


def without_query_key(query: str) -> str:
    """The query minus `x-api-key`: a gateway should not hand the key on to the API."""
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(k, v) for k, v in pairs if k.lower() != "x-api-key"])


class Gateway:
    """A reverse proxy that asks forward-auth first, in one gateway's dialect.

    nginx: `GET /forward-auth` with X-Forwarded-Method / -Uri set by `proxy_set_header`.
    Traefik: the same plus X-Forwarded-Proto / -Host. Envoy: the original method
    on `/forward-auth` + the original path and query, no body. nginx and Traefik pass every
    client header on to the check by default, Envoy only its `allowed_headers` (here the
    credentials). All three send X-Forwarded-For (the client's list plus the peer, like
    nginx's `$proxy_add_x_forwarded_for`). On 2xx the request goes upstream with the `x-auth-*`
    answer headers (any the client sent are dropped); otherwise authserver's status, body and
    headers go back.
    """

    def __init__(self, style: Style, auth_url: str, upstream_url: str) -> None:
        self.style = style
        self.auth_url = auth_url
        self.upstream_url = upstream_url
        self.http: httpx.AsyncClient | None = None

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=TIMEOUT) as self.http:
            yield

    def app(self) -> Starlette:
        methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        return Starlette(routes=[Route("/{path:path}", self.handle, methods=methods)],
                         lifespan=self.lifespan)

    def check_request(self, request: Request, path: str, query: str
                      ) -> tuple[str, str, dict[str, str]]:
        peer = request.client.host if request.client else ""
        claimed = ", ".join([*request.headers.getlist("x-forwarded-for"), peer])
        if self.style == "envoy":  # only the allowed_headers
            headers = {k: v for k, v in request.headers.items()
                       if k in ("x-api-key", "authorization")}
        else:  # nginx and Traefik hand on every request header by default
            headers = {k: v for k, v in request.headers.items() if k not in HOP_BY_HOP}
        headers |= {"x-forwarded-for": claimed, "x-request-id": secrets.token_hex(8)}
        uri = path + (f"?{query}" if query else "")
        if self.style == "nginx":  # proxy_set_header, as docs/forward-auth.md configures it
            headers |= {"x-forwarded-method": request.method, "x-forwarded-uri": uri}
            return "GET", self.auth_url + "/forward-auth", headers
        if self.style == "traefik":
            headers |= {"x-forwarded-method": request.method, "x-forwarded-uri": uri,
                        "x-forwarded-proto": "http",
                        "x-forwarded-host": request.headers.get("host", "")}
            return "GET", self.auth_url + "/forward-auth", headers
        return request.method, self.auth_url + "/forward-auth" + uri, headers

    async def handle(self, request: Request) -> Response:
        assert self.http is not None
        path = request.scope["raw_path"].decode("latin-1")
        query = request.scope["query_string"].decode("latin-1")
        method, url, headers = self.check_request(request, path, query)
        verdict = await self.http.request(method, url, headers=headers)
        if not 200 <= verdict.status_code < 300:
            back = {k: v for k, v in verdict.headers.items()
                    if k in DENIAL_HEADERS or k.startswith("ratelimit-")}
            return Response(verdict.content, verdict.status_code, back)
        forward = {k: v for k, v in request.headers.items()
                   if k not in HOP_BY_HOP and k != "x-api-key" and not k.startswith("x-auth-")}
        forward |= {k: v for k, v in verdict.headers.items() if k.startswith("x-auth-")}
        rest = without_query_key(query)
        answer = await self.http.request(
            request.method, self.upstream_url + path + (f"?{rest}" if rest else ""),
            headers=forward, content=await request.body())
        back = {"content-type": answer.headers.get("content-type", "application/json")}
        back |= {k: v for k, v in verdict.headers.items()
                 if k in SUCCESS_HEADERS or k.startswith("ratelimit-")}
        return Response(answer.content, answer.status_code, back)


# -- the stack ------------------------------------------------------------------------------------


@dataclass
class Served:
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def serve(app: Any) -> Served:
    sock, url = bind_loopback()
    server, thread = serve_in_thread(app, sock)
    return Served(url, server, thread)


def start_authserver_beside(first: LiveServer) -> LiveServer:
    """A second instance on the same database, keys and issuer (behind one load balancer)."""
    sock, url = bind_loopback()
    runtime = build_runtime(first.settings)
    server, thread = serve_in_thread(create_app(first.settings, runtime=runtime), sock)
    return LiveServer(url, runtime, server, thread)


def auth_settings(**overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {"server": {"trusted_proxies": [f"{GATEWAY_PEER}/32"]},
                                "cache": {"event_poll_interval": POLL}}
    settings.update(overrides)
    return settings


@dataclass
class Stack:
    """authserver instance(s), the example API, and one gateway per style per instance."""

    auths: list[LiveServer]
    upstream: Served
    gateways: list[dict[Style, Served]]
    _clients: dict[str, httpx.Client] = field(default_factory=dict)

    @property
    def auth(self) -> LiveServer:
        return self.auths[0]

    def client(self, source: str = ALLOWED) -> httpx.Client:
        """An HTTP client whose connections come from `source` (any 127/8 address is local)."""
        if source not in self._clients:
            self._clients[source] = httpx.Client(
                transport=httpx.HTTPTransport(local_address=source), timeout=TIMEOUT)
        return self._clients[source]

    def call(self, method: str, path: str, *, style: Style = "nginx", source: str = ALLOWED,
             instance: int = 0, **kwargs: Any) -> httpx.Response:
        """A request through the gateway of `style` in front of authserver `instance`."""
        url = self.gateways[instance][style].url + path
        return self.client(source).request(method, url, **kwargs)

    def admin(self, method: str, path: str, key: str, *, headers: dict[str, str] | None = None,
              **kwargs: Any) -> httpx.Response:
        """The admin API, straight to authserver."""
        return self.client(GATEWAY_PEER).request(
            method, self.auth.url + path, headers={"x-api-key": key, **(headers or {})},
            **kwargs)

    def org(self, name: str = "Acme") -> str:
        runtime = self.auth.runtime
        with runtime.db.session(write=True) as session:
            return organizations.create_org(session, name, runtime.clock.now(), ACTOR).id

    def key(self, org_id: str, *permissions: str, **spec: Any) -> tuple[ApiKeyRecord, str]:
        runtime = self.auth.runtime
        with runtime.db.session(write=True) as session:
            record, key = apikeys.create_key(
                session, runtime.catalog,
                apikeys.ApiKeySpec("integration", org_id, permissions, **spec),
                runtime.settings.api_keys.prefix, runtime.clock.now(), ACTOR)
        factories.remember(key)
        return record, key

    def operator_key(self) -> str:
        """An admin key of the operator organisation."""
        return self.key(DEFAULT_ORG_ID, "api-keys.*", "organizations.*", "invoices.*",
                        "customers.*")[1]

    def token(self, client_id: str, secret: str, scope: str | None = None) -> str:
        form = {"grant_type": "client_credentials"} | ({"scope": scope} if scope else {})
        response = self.client(GATEWAY_PEER).post(
            self.auth.url + "/token", data=form, headers=factories.basic_auth(client_id, secret))
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        factories.remember(token)
        return token

    def stop(self) -> None:
        for client in self._clients.values():
            client.close()
        servers = [s for gateways in self.gateways for s in gateways.values()]
        servers += [self.upstream, *self.auths]
        for served in servers:  # all at once: each takes a poll interval to notice
            served.server.should_exit = True
        for served in servers:
            served.thread.join(timeout=10)


def start_stack(auths: list[LiveServer]) -> Stack:
    upstream = serve(upstream_app())
    gateways = [{style: serve(Gateway(style, auth.url, upstream.url).app()) for style in STYLES}
                for auth in auths]
    return Stack(auths, upstream, gateways)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    auth = start_live_server(tmp_path, **auth_settings())
    running = start_stack([auth])
    try:
        yield running
    finally:
        running.stop()


# -- assertions and waiting -----------------------------------------------------------------------


def assert_envelope(response: httpx.Response, status: int, code: str,
                    reason: str | None = None) -> dict[str, Any]:
    """The platform error envelope (DESIGN.md), as the gateway handed it back."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) >= ENVELOPE, error
    assert error["status"] == status and error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    assert error["request_id"] and error["request_id"] == response.headers["x-request-id"]
    if reason is not None:
        assert error["details"]["reason"] == reason, error
    if status == 401:  # RFC 9110 §15.5.2
        assert response.headers["www-authenticate"].startswith(
            "Bearer " if code == "invalid_token" else "ApiKey "), response.headers
    return error


def assert_allowed(response: httpx.Response, route: str, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["route"] == route
    assert body["api_key_seen"] is False  # the gateway keeps the key from the API
    return body


def eventually(probe: Callable[[], httpx.Response], done: Callable[[httpx.Response], bool],
               within: float = STALENESS) -> httpx.Response:
    """Repeat `probe` until `done` or the staleness bound passes; the last response."""
    deadline = time.monotonic() + within
    while True:
        response = probe()
        if done(response) or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def refused(response: httpx.Response) -> bool:
    return response.status_code == 401


def raw_get(url: str, source: str, headers: dict[str, str] | None = None
            ) -> tuple[int, dict[str, str], bytes]:
    """GET with http.client, which logs nothing (httpx logs every URL at INFO, and a URL that
    carries an API key would put the key in this test run's own logs)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10,
                                      source_address=(source, 0))
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""),
                     headers=headers or {})
        answer = conn.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        conn.close()


# -- allowed --------------------------------------------------------------------------------------


def test_allowed_key_reaches_the_api_with_identity_headers(stack: Stack) -> None:
    org = stack.org()
    record, key = stack.key(org, "invoices.read", "invoices.create")

    # The client tries to smuggle its own identity in; the gateway replaces it.
    listed = stack.call("GET", "/api/v1/invoices?page=2",
                        headers={"x-api-key": key, "x-auth-org-id": "org_default"})
    body = assert_allowed(listed, "invoices.list")
    assert body["identity"] == {
        "x-auth-org-id": org, "x-auth-api-key-id": record.id, "x-auth-environment": "live",
        "x-auth-permissions": "invoices.read invoices.create",
        # always the full set, empty where it does not apply, so none from the caller survives
        "x-auth-client-id": "", "x-auth-subject": "", "x-auth-scopes": "",
    }
    assert body["query"] == {"page": "2"}
    assert int(listed.headers["ratelimit-limit"]) > 0
    assert int(listed.headers["ratelimit-remaining"]) >= 0

    created = stack.call("POST", "/api/v1/invoices", headers={"x-api-key": key},
                         json={"amount": 42})
    assert assert_allowed(created, "invoices.create", 201)["body"] == {"amount": 42}


def test_missing_malformed_and_unknown_keys_are_401(stack: Stack) -> None:
    assert_envelope(stack.call("GET", "/api/v1/invoices"), 401, "invalid_api_key", "missing")
    assert_envelope(stack.call("GET", "/api/v1/invoices", headers={"x-api-key": "nope"}),
                    401, "invalid_api_key")
    _, key = stack.key(stack.org(), "invoices.read")
    # Right shape and checksum, unknown id: made with another key's generator.
    _, stranger = apikeys.new_key(stack.auth.settings.api_keys.prefix, "live")
    factories.remember(stranger)
    assert_envelope(stack.call("GET", "/api/v1/invoices", headers={"x-api-key": stranger}),
                    401, "invalid_api_key")
    # One character off breaks the checksum.
    typo = key[:-1] + ("A" if key[-1] != "A" else "B")
    factories.remember(typo)
    assert_envelope(stack.call("GET", "/api/v1/invoices", headers={"x-api-key": typo}),
                    401, "invalid_api_key")


# -- permissions ----------------------------------------------------------------------------------


def test_wrong_permission_is_403(stack: Stack) -> None:
    _, key = stack.key(stack.org(), "invoices.read")
    headers = {"x-api-key": key}
    error = assert_envelope(stack.call("GET", "/api/v1/customers", headers=headers),
                            403, "insufficient_permissions")
    assert error["type"] == "permission_error"
    assert error["details"]["required"] == "customers.read"
    error = assert_envelope(stack.call("DELETE", "/api/v1/invoices/7", headers=headers),
                            403, "insufficient_permissions")
    assert error["details"]["required"] == "invoices.delete"
    error = assert_envelope(stack.call("POST", "/api/v1/invoices", headers=headers, json={}),
                            403, "insufficient_permissions")
    assert error["details"]["required"] == "invoices.create"
    assert_allowed(stack.call("GET", "/api/v1/invoices", headers=headers), "invoices.list")


# -- addresses ------------------------------------------------------------------------------------


def test_ip_allowlist_uses_the_address_the_trusted_gateway_claims(stack: Stack) -> None:
    _, key = stack.key(stack.org(), "invoices.read", ip_allow=(f"{ALLOWED}/32",))
    headers = {"x-api-key": key}
    assert_allowed(stack.call("GET", "/api/v1/invoices", headers=headers, source=ALLOWED),
                   "invoices.list")

    error = assert_envelope(
        stack.call("GET", "/api/v1/invoices", headers=headers, source=OTHER),
        401, "invalid_api_key", "ip_whitelist_mismatch")
    assert error["type"] == "authentication_error"

    # A client claiming an allowlisted address itself gets nowhere: the gateway appends the
    # real peer, and authserver takes the last address that is not a trusted proxy.
    assert_envelope(
        stack.call("GET", "/api/v1/invoices", source=OTHER,
                   headers={**headers, "x-forwarded-for": ALLOWED}),
        401, "invalid_api_key", "ip_whitelist_mismatch")


def test_forward_auth_answers_trusted_proxies_only(stack: Stack, tmp_path: Path) -> None:
    _, key = stack.key(stack.org(), "invoices.read")
    headers = {"x-api-key": key, "x-forwarded-method": "GET",
               "x-forwarded-uri": "/api/v1/invoices",
               "x-forwarded-for": ALLOWED}
    assert stack.client(GATEWAY_PEER).get(stack.auth.url + "/forward-auth",
                                          headers=headers).status_code == 200
    for path in ("/forward-auth", "/forward-auth/api/v1/invoices"):
        response = stack.client(UNTRUSTED).get(stack.auth.url + path, headers=headers)
        assert_envelope(response, 403, "untrusted_proxy")

    # With no trusted proxy configured, nobody may ask (not even loopback).
    lone = start_live_server(tmp_path / "lone")
    try:
        with httpx.Client(timeout=TIMEOUT) as http:
            assert_envelope(http.get(lone.url + "/forward-auth", headers=headers),
                            403, "untrusted_proxy")
    finally:
        lone.stop()


# -- key lifecycle --------------------------------------------------------------------------------


def test_expired_key_is_refused(stack: Stack) -> None:
    expires_at = time.time() + 1.5
    _, key = stack.key(stack.org(), "invoices.read", expires_at=expires_at)
    headers = {"x-api-key": key}
    assert_allowed(stack.call("GET", "/api/v1/invoices", headers=headers), "invoices.list")
    time.sleep(max(0.0, expires_at - time.time()) + 0.1)
    error = assert_envelope(stack.call("GET", "/api/v1/invoices", headers=headers),
                            401, "expired_api_key")
    assert error["type"] == "authentication_error"


def test_key_revoked_through_the_admin_api_is_refused(stack: Stack) -> None:
    admin = stack.operator_key()
    record, key = stack.key(stack.org(), "invoices.read")
    headers = {"x-api-key": key}
    assert_allowed(stack.call("GET", "/api/v1/invoices", headers=headers), "invoices.list")

    revoked = stack.admin("POST", f"/api/v1/api-keys/{record.id}/revoke", admin)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["status"] == "revoked"

    response = eventually(lambda: stack.call("GET", "/api/v1/invoices", headers=headers),
                          refused)
    assert_envelope(response, 401, "invalid_api_key")
    # The key cannot inspect itself any more either.
    assert_envelope(stack.admin("GET", "/api/v1/api-key", key), 401, "invalid_api_key")


def test_rotation_with_grace_keeps_the_old_key_until_the_grace_ends(stack: Stack) -> None:
    admin = stack.operator_key()
    record, old = stack.key(stack.org(), "invoices.read")
    grace = 2.0
    rotated = stack.admin("POST", f"/api/v1/api-keys/{record.id}/rotate", admin,
                          json={"grace_period": grace})
    ends = time.time() + grace
    assert rotated.status_code == 201, rotated.text
    new = factories.remember(rotated.json()["key"])
    assert new and new != old
    new_id = rotated.json()["api_key"]["id"]

    for key in (old, new):
        assert_allowed(stack.call("GET", "/api/v1/invoices", headers={"x-api-key": key}),
                       "invoices.list")
    # Past the event poll, while the grace runs, the old key still works.
    time.sleep(min(2 * POLL, max(0.0, ends - time.time() - 0.5)))
    assert_allowed(stack.call("GET", "/api/v1/invoices", headers={"x-api-key": old}),
                   "invoices.list")

    time.sleep(max(0.0, ends - time.time()) + 0.05)
    response = eventually(
        lambda: stack.call("GET", "/api/v1/invoices", headers={"x-api-key": old}), refused)
    assert_envelope(response, 401, "expired_api_key")
    listed = assert_allowed(
        stack.call("GET", "/api/v1/invoices", headers={"x-api-key": new}), "invoices.list")
    assert listed["identity"]["x-auth-api-key-id"] == new_id


def test_rotation_without_grace_retires_the_old_key(stack: Stack) -> None:
    admin = stack.operator_key()
    record, old = stack.key(stack.org(), "invoices.read")
    rotated = stack.admin("POST", f"/api/v1/api-keys/{record.id}/rotate", admin)
    assert rotated.status_code == 201, rotated.text
    new = factories.remember(rotated.json()["key"])
    assert new

    response = eventually(
        lambda: stack.call("GET", "/api/v1/invoices", headers={"x-api-key": old}), refused)
    assert_envelope(response, 401, "invalid_api_key")
    assert_allowed(stack.call("GET", "/api/v1/invoices", headers={"x-api-key": new}),
                   "invoices.list")


# -- how the key arrives --------------------------------------------------------------------------


def test_api_key_sent_as_bearer_is_refused_with_a_hint(stack: Stack) -> None:
    _, key = stack.key(stack.org(), "invoices.read")
    response = stack.call("GET", "/api/v1/invoices", headers={"authorization": f"Bearer {key}"})
    error = assert_envelope(response, 401, "invalid_api_key", "api_key_in_authorization_header")
    assert "x-api-key" in error["message"]
    assert key not in response.text


def test_query_parameter_key_works_with_a_warning_and_stays_out_of_logs(
    stack: Stack, debug_log_capture: io.StringIO
) -> None:
    start = len(debug_log_capture.getvalue())
    _, key = stack.key(stack.org(), "invoices.read")
    gateway = stack.gateways[0]["nginx"].url

    status, headers, body = raw_get(f"{gateway}/api/v1/invoices?x-api-key={key}&page=3",
                                    ALLOWED)
    assert status == 200, body
    assert headers["deprecation"] == "true"
    assert "x-api-key header" in headers["warning"]
    assert b"invoices.list" in body and key.encode() not in body

    # Envoy style puts the query on authserver's own request line (its access log).
    status, headers, _ = raw_get(
        f"{stack.auth.url}/forward-auth/api/v1/invoices?x-api-key={key}", GATEWAY_PEER,
        {"x-forwarded-for": ALLOWED})
    assert status == 200
    assert headers["deprecation"] == "true" and "warning" in headers

    def logged() -> str:
        return debug_log_capture.getvalue()[start:]

    deadline = time.monotonic() + 5
    while "/forward-auth/api/v1/invoices?x-api-key=[redacted]" not in logged():
        assert time.monotonic() < deadline, "authserver's access log line never appeared"
        time.sleep(0.05)
    assert key not in logged()
    assert "x-api-key=[redacted]&page=3" in logged()  # the gateway's own access log


# -- the other gateway dialects -------------------------------------------------------------------


@pytest.mark.parametrize("style", ["traefik", "envoy"])
def test_traefik_and_envoy_styles(stack: Stack, style: Style) -> None:
    org = stack.org()
    reader, read_key = stack.key(org, "invoices.read")
    _, full_key = stack.key(org, "invoices.*")

    listed = stack.call("GET", "/api/v1/invoices", style=style, headers={"x-api-key": read_key})
    assert assert_allowed(listed, "invoices.list")["identity"]["x-auth-api-key-id"] == reader.id

    error = assert_envelope(
        stack.call("DELETE", "/api/v1/invoices/7", style=style, headers={"x-api-key": read_key}),
        403, "insufficient_permissions")
    assert error["details"]["required"] == "invoices.delete"

    deleted = stack.call("DELETE", "/api/v1/invoices/7", style=style,
                         headers={"x-api-key": full_key})
    assert assert_allowed(deleted, "invoices.delete")["invoice"] == "7"
    created = stack.call("POST", "/api/v1/invoices", style=style,
                         headers={"x-api-key": full_key}, json={"amount": 1})
    assert assert_allowed(created, "invoices.create", 201)["body"] == {"amount": 1}

    _, allowlisted = stack.key(org, "invoices.read", ip_allow=(f"{ALLOWED}/32",))
    assert_envelope(stack.call("GET", "/api/v1/invoices", style=style, source=OTHER,
                               headers={"x-api-key": allowlisted}),
                    401, "invalid_api_key", "ip_whitelist_mismatch")


_SPOOFED_ORIGINAL = {"x-forwarded-method": "GET", "x-forwarded-uri": "/api/v1/invoices",
                     "x-original-method": "GET", "x-original-uri": "/api/v1/invoices"}


@pytest.mark.parametrize("style", STYLES)
def test_client_cannot_rewrite_the_checked_request(stack: Stack, style: Style) -> None:
    _, key = stack.key(stack.org(), "invoices.read")
    response = stack.call("DELETE", "/api/v1/invoices/7", style=style,
                          headers={"x-api-key": key, **_SPOOFED_ORIGINAL})
    assert_envelope(response, 403, "insufficient_permissions")


# -- access tokens --------------------------------------------------------------------------------


def test_access_tokens_scopes_and_revocation(stack: Stack) -> None:
    org = stack.org()
    client, secret = factories.create_client(
        stack.auth.runtime, scopes=["invoices.read", "customers.read"], org_id=org)
    assert secret is not None

    token = stack.token(client.client_id, secret)
    bearer = {"authorization": f"Bearer {token}"}
    listed = stack.call("GET", "/api/v1/invoices", headers=bearer)
    identity = assert_allowed(listed, "invoices.list")["identity"]
    assert identity["x-auth-client-id"] == identity["x-auth-subject"] == client.client_id
    assert identity["x-auth-org-id"] == org
    assert identity["x-auth-scopes"] == "customers.read invoices.read"
    error = assert_envelope(stack.call("DELETE", "/api/v1/invoices/1", headers=bearer),
                            403, "insufficient_permissions")
    assert error["details"]["required"] == "invoices.delete"

    narrow = stack.token(client.client_id, secret, scope="customers.read")
    narrow_bearer = {"authorization": f"Bearer {narrow}"}
    assert_allowed(stack.call("GET", "/api/v1/customers", headers=narrow_bearer),
                   "customers.list")
    assert_envelope(stack.call("GET", "/api/v1/invoices", headers=narrow_bearer),
                    403, "insufficient_permissions")

    revoked = stack.client(GATEWAY_PEER).post(
        stack.auth.url + "/revoke", data={"token": token},
        headers=factories.basic_auth(client.client_id, secret))
    assert revoked.status_code == 200
    assert_envelope(stack.call("GET", "/api/v1/invoices", headers=bearer), 401, "invalid_token")
    assert_allowed(stack.call("GET", "/api/v1/customers", headers=narrow_bearer),
                   "customers.list")

    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert_envelope(stack.call("GET", "/api/v1/invoices",
                               headers={"authorization": f"Bearer {forged}"}),
                    401, "invalid_token")


def test_forward_auth_refuses_what_it_cannot_check_exactly(stack: Stack, tmp_path: Path) -> None:
    """No original method/URI: 400, never a check of `GET /`. Dot segments and encoded
    slashes or dots: 400, never a check of a path the upstream may resolve differently. With
    `forward_auth.audiences`, a token issued for another API is refused."""
    _, key = stack.key(stack.org(), "customers.read", "*.read")
    http = stack.client(GATEWAY_PEER)
    url = stack.auth.url + "/forward-auth"
    base = {"x-api-key": key, "x-forwarded-for": ALLOWED}
    assert_envelope(http.get(url, headers=base), 400, "invalid_request")
    assert_envelope(http.get(url, headers={**base, "x-forwarded-uri": "/api/v1/invoices/7"}),
                    400, "invalid_request")
    for uri in ("/api/v1/customers/../invoices", "/api/v1/customers/%2e%2e/invoices",
                "/api/v1/customers/%252e%252e/invoices", "/api/v1/customers%2f..%2finvoices",
                "/api/v1/customers\\..\\invoices", "api/v1/customers", "//customers/export",
                "/api/v1/customers/..;/invoices/1", "/api/v1//invoices"):
        response = http.get(url, headers={**base, "x-forwarded-method": "GET",
                                          "x-forwarded-uri": uri})
        assert_envelope(response, 400, "invalid_request")
    fine = http.get(url, headers={**base, "x-forwarded-method": "GET",
                                  "x-forwarded-uri": "/api/v1/customers/a%20b"})
    assert fine.status_code == 200
    # the plain path is answered ahead of Starlette: still the request id, still the envelope
    check = {**base, "x-forwarded-method": "GET", "x-forwarded-uri": "/api/v1/customers"}
    echoed = http.get(url, headers={**check, "x-request-id": "gw-req-1"})
    assert echoed.status_code == 200 and echoed.headers["x-request-id"] == "gw-req-1"
    assert echoed.headers["content-length"] == "0" and echoed.content == b""
    assert_envelope(http.request("TRACE", url, headers=check), 405, "method_not_allowed")
    assert http.head(url, headers=check).status_code == 200

    scoped = start_live_server(tmp_path / "aud", **auth_settings(
        forward_auth={"audiences": ["https://invoices.example.test"]},
        resources=[{"identifier": "https://invoices.example.test"},
                   {"identifier": "https://payroll.example.test"}]))
    try:
        client, secret = factories.create_client(
            scoped.runtime, scopes=["invoices.read"],
            resources=["https://invoices.example.test", "https://payroll.example.test"])
        assert secret is not None

        def token_for(resource: str) -> str:
            answer = http.post(
                scoped.url + "/token", headers=factories.basic_auth(client.client_id, secret),
                data={"grant_type": "client_credentials", "resource": resource})
            assert answer.status_code == 200, answer.text
            return str(answer.json()["access_token"])

        check = {"x-forwarded-method": "GET", "x-forwarded-uri": "/api/v1/invoices"}
        mine = token_for("https://invoices.example.test")
        assert http.get(scoped.url + "/forward-auth", headers={
            **check, "authorization": f"Bearer {mine}"}).status_code == 200
        other = token_for("https://payroll.example.test")
        assert_envelope(http.get(scoped.url + "/forward-auth", headers={
            **check, "authorization": f"Bearer {other}"}), 401, "invalid_token")
    finally:
        scoped.stop()


# -- organisations --------------------------------------------------------------------------------


def test_disabled_organisation_cuts_off_its_keys_and_tokens(stack: Stack) -> None:
    admin = stack.operator_key()
    org = stack.org("Going away")
    bystander = stack.org("Staying")
    _, key = stack.key(org, "invoices.read")
    _, other_key = stack.key(bystander, "invoices.read")
    client, secret = factories.create_client(stack.auth.runtime, scopes=["invoices.read"],
                                             org_id=org)
    assert secret is not None
    token = stack.token(client.client_id, secret)
    key_headers = {"x-api-key": key}
    bearer = {"authorization": f"Bearer {token}"}
    assert_allowed(stack.call("GET", "/api/v1/invoices", headers=key_headers), "invoices.list")
    assert_allowed(stack.call("GET", "/api/v1/invoices", headers=bearer), "invoices.list")

    patched = stack.admin("PATCH", f"/api/v1/organizations/{org}", admin,
                          json={"disabled": True})
    assert patched.status_code == 200, patched.text
    assert patched.json()["status"] == "disabled"

    response = eventually(lambda: stack.call("GET", "/api/v1/invoices", headers=key_headers),
                          refused)
    assert_envelope(response, 401, "invalid_api_key", "organization_disabled")
    response = eventually(lambda: stack.call("GET", "/api/v1/invoices", headers=bearer),
                          refused)
    assert_envelope(response, 401, "invalid_token")
    # No new token either; the other organisation is untouched.
    again = stack.client(GATEWAY_PEER).post(
        stack.auth.url + "/token", data={"grant_type": "client_credentials"},
        headers=factories.basic_auth(client.client_id, secret))
    assert again.status_code in (400, 401), again.text
    assert "access_token" not in again.text
    assert_allowed(stack.call("GET", "/api/v1/invoices", headers={"x-api-key": other_key}),
                   "invoices.list")


# -- rate limits ----------------------------------------------------------------------------------


@dataclass
class Counters:
    """Where the counters live: "" (each instance's memory) or a Redis URL."""

    redis_url: str
    redis: redis.Redis | None = None
    ids: list[str] = field(default_factory=list)

    def stored(self, ident: str) -> list[str]:
        assert self.redis is not None
        return [k.decode() for k in self.redis.scan_iter(match=f"*{ident}*")]

    def forget(self) -> None:
        """Delete this test's counters only: the Redis may be shared."""
        if self.redis is None:
            return
        for ident in self.ids:
            for name in self.stored(ident):
                self.redis.delete(name)
        self.redis.close()


@pytest.fixture(params=["memory", "redis"])
def counters(request: pytest.FixtureRequest) -> Iterator[Counters]:
    if request.param == "memory":
        yield Counters("")
        return
    url = os.environ.get(REDIS_ENV)
    if not url:
        pytest.skip(f"{REDIS_ENV} is not set (e.g. redis://127.0.0.1:6379/5, a database "
                    "this test may write counters to)")
    store = Counters(url, redis.Redis.from_url(url, socket_timeout=5))
    store.redis.ping()
    try:
        yield store
    finally:
        store.forget()


def test_burst_limits_are_429_with_retry_after(tmp_path: Path, counters: Counters) -> None:
    auth = start_live_server(tmp_path, **auth_settings(
        rate_limits={"api_key_burst": "5/minute", "client_burst": "4/minute"},
        redis_url=counters.redis_url))
    # With Redis, two instances behind one balancer share the counters: alternate them.
    auths = [auth, start_authserver_beside(auth)] if counters.redis_url else [auth]
    stack = start_stack(auths)
    try:
        org = stack.org()
        record, key = stack.key(org, "invoices.read")
        tight, tight_key = stack.key(org, "invoices.read", rate_limits=(("burst", "2/minute"),))
        client, secret = factories.create_client(auth.runtime, scopes=["invoices.read"],
                                                 org_id=org)
        assert secret is not None
        counters.ids += [record.id, tight.id, client.client_id, org]

        def call(key: str, n: int) -> httpx.Response:
            return stack.call("GET", "/api/v1/invoices", headers={"x-api-key": key},
                              instance=n % len(auths))

        remaining = []
        for n in range(5):
            response = call(key, n)
            assert_allowed(response, "invoices.list")
            assert response.headers["ratelimit-limit"] == "5"
            remaining.append(int(response.headers["ratelimit-remaining"]))
        assert remaining == [4, 3, 2, 1, 0]
        assert_too_many(call(key, 5), "5")
        assert_too_many(call(key, 6), "5")  # a refused request does not reset anything
        if counters.redis_url:
            assert counters.stored(record.id), "the counters are not in Redis"

        for n in range(2):
            assert_allowed(call(tight_key, n), "invoices.list")
        assert_too_many(call(tight_key, 2), "2")

        # Access tokens count per client (the token request itself included).
        bearer = {"authorization": f"Bearer {stack.token(client.client_id, secret)}"}
        answers = [stack.call("GET", "/api/v1/invoices", headers=bearer, instance=n % len(auths))
                   for n in range(5)]
        statuses = [a.status_code for a in answers]
        assert 200 in statuses and 429 in statuses, statuses
        first_refusal = statuses.index(429)
        assert set(statuses[:first_refusal]) == {200}
        error = assert_too_many(answers[first_refusal], "4")
        assert error["details"]["limit"] == "client"
    finally:
        stack.stop()


def assert_too_many(response: httpx.Response, limit: str) -> dict[str, Any]:
    error = assert_envelope(response, 429, "rate_limit_exceeded")
    assert error["type"] == "rate_limit_error"
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert error["details"]["retry_after"] == retry_after
    assert response.headers["ratelimit-limit"] == limit
    assert response.headers["ratelimit-remaining"] == "0"
    return error


# -- admin changes at once, and odd requests ---------------------------------------------------


def test_admin_changes_are_seen_at_once_by_the_instance_that_made_them(tmp_path: Path) -> None:
    """With an event poll far away, the instance that made a change must not wait for it."""
    auth = start_live_server(tmp_path, **auth_settings(
        cache={"event_poll_interval": 30.0, "max_staleness": 120.0}))
    stack = start_stack([auth])
    try:
        admin = stack.operator_key()
        org = stack.org()
        revoked, revoked_key = stack.key(org, "invoices.read")
        rotated, rotated_key = stack.key(org, "invoices.read")
        _, org_key = stack.key(org, "invoices.read")
        client, secret = factories.create_client(auth.runtime, scopes=["invoices.read"],
                                                 org_id=org)
        assert secret is not None
        bearer = {"authorization": f"Bearer {stack.token(client.client_id, secret)}"}
        for headers in ({"x-api-key": revoked_key}, {"x-api-key": rotated_key},
                        {"x-api-key": org_key}, bearer):  # all four cached now
            assert_allowed(stack.call("GET", "/api/v1/invoices", headers=headers),
                           "invoices.list")

        assert stack.admin("POST", f"/api/v1/api-keys/{revoked.id}/revoke",
                           admin).status_code == 200
        assert_envelope(stack.call("GET", "/api/v1/invoices",
                                   headers={"x-api-key": revoked_key}),
                        401, "invalid_api_key")

        answer = stack.admin("POST", f"/api/v1/api-keys/{rotated.id}/rotate", admin)
        assert answer.status_code == 201
        new = factories.remember(answer.json()["key"])
        assert_envelope(stack.call("GET", "/api/v1/invoices",
                                   headers={"x-api-key": rotated_key}),
                        401, "invalid_api_key")
        assert_allowed(stack.call("GET", "/api/v1/invoices", headers={"x-api-key": new or ""}),
                       "invoices.list")

        assert stack.admin("PATCH", f"/api/v1/organizations/{org}", admin,
                           json={"disabled": True}).status_code == 200
        assert_envelope(stack.call("GET", "/api/v1/invoices", headers={"x-api-key": org_key}),
                        401, "invalid_api_key", "organization_disabled")
        assert_envelope(stack.call("GET", "/api/v1/invoices", headers=bearer),
                        401, "invalid_token")
    finally:
        stack.stop()


def test_rotation_grace_survives_a_chunked_body(stack: Stack) -> None:
    admin = stack.key(DEFAULT_ORG_ID, "*")[1]
    record, old = stack.key(stack.org(), "invoices.read")

    def chunked() -> Iterator[bytes]:
        yield b'{"grace_period": 3600}'

    rotated = stack.admin("POST", f"/api/v1/api-keys/{record.id}/rotate", admin,
                          content=chunked(), headers={"content-type": "application/json"})
    assert rotated.status_code == 201, rotated.text
    assert rotated.request.headers["transfer-encoding"] == "chunked"
    factories.remember(rotated.json()["key"])
    time.sleep(4 * POLL)
    assert_allowed(stack.call("GET", "/api/v1/invoices", headers={"x-api-key": old}),
                   "invoices.list")


def test_a_hung_redis_neither_freezes_the_server_nor_blocks_requests(tmp_path: Path) -> None:
    """Counters fail open, and a Redis that accepts connections but never answers delays only
    the requests that wait for it."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # the kernel completes connections; nothing ever reads or answers
    auth = start_live_server(tmp_path, **auth_settings(
        redis_url=f"redis://127.0.0.1:{silent.getsockname()[1]}/0"))
    try:
        runtime = auth.runtime
        with runtime.db.session(write=True) as session:
            _, key = apikeys.create_key(
                session, runtime.catalog,
                apikeys.ApiKeySpec("k", DEFAULT_ORG_ID, ("invoices.read",)),
                "as", runtime.clock.now(), ACTOR)
        factories.remember(key)
        headers = {"x-api-key": key, "x-forwarded-method": "GET",
                   "x-forwarded-uri": "/api/v1/invoices", "x-forwarded-for": ALLOWED}
        answers: dict[str, httpx.Response] = {}
        with httpx.Client(timeout=httpx.Timeout(5.0)) as http:
            waiting = threading.Thread(target=lambda: answers.update(
                check=http.get(auth.url + "/forward-auth", headers=headers)), daemon=True)
            waiting.start()
            time.sleep(0.05)
            with httpx.Client(timeout=httpx.Timeout(2.0)) as other:
                started = time.monotonic()
                assert other.get(auth.url + "/.well-known/jwks.json").status_code == 200
                assert time.monotonic() - started < 1.0
            waiting.join(timeout=6)
        assert answers["check"].status_code == 200  # let through, and no limit claimed
        assert "ratelimit-limit" not in answers["check"].headers
    finally:
        silent.close()
        auth.stop()
