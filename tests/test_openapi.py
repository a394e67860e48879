"""The admin API's OpenAPI document: a valid OpenAPI 3.1 document, the same paths and methods as
the router, and every answer of every route (successes and the main errors) valid against it,
status and body, checked with openapi-core."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc.jwk import ECKey
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_spec_validator import validate
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette
from starlette.routing import Route

from authserver import audit, organizations
from authserver.clock import FakeClock
from authserver.config import Settings
from authserver.keyring import KeyFileError
from authserver.people import consents
from authserver.web.admin_api import API_PREFIX
from authserver.web.openapi import document
from tests import factories
from tests.conftest import AppHarness, make_settings, running_app
from tests.test_api_keys import new_key, new_org

pytestmark = pytest.mark.anyio
DOC = document()
SPEC = OpenAPI.from_dict(DOC)
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
OPERATIONS = {(path, method): op for path, item in DOC["paths"].items()
              for method, op in item.items() if method in METHODS}
# Exercised in tests of their own on a few routes, not on each one.
RARE = {"429", "503", "500"}
APPROVALS = API_PREFIX + "/approvals"


def approvals_only(path: str, status: str) -> bool:
    """Answered only with quorum approval on: test_approvals_answer_as_documented."""
    return path.startswith(APPROVALS) or status == "202"


def template_of(path: str) -> str:
    """The documented path a concrete one falls under (exactly one)."""
    found = [t for t in DOC["paths"] if re.fullmatch(re.sub(r"\{[^}/]+\}", "[^/]+", t), path)]
    assert len(found) == 1, (path, found)
    return found[0]


def fill(template: str, value: str) -> str:
    return re.sub(r"\{[^}/]+\}", value, template)


def check(response: httpx.Response, *, valid_request: bool) -> None:
    """The response (and, when it is meant to be valid, the request) against the document."""
    sent = response.request
    url = sent.url
    request = MockRequest(f"{url.scheme}://{url.netloc.decode()}", sent.method, url.path,
                          args=dict(url.params.multi_items()), headers=dict(sent.headers),
                          data=sent.content or None,
                          content_type=sent.headers.get("content-type", ""))
    if valid_request:
        SPEC.validate_request(request)
    SPEC.validate_response(request, MockResponse(
        response.content, response.status_code, headers=dict(response.headers),
        content_type=response.headers.get("content-type", "")))


@dataclass
class Api:
    """The app's client: each answer is checked against the document and counted per
    operation and status."""

    h: AppHarness
    app: Starlette
    http: httpx.AsyncClient
    seen: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))

    async def __call__(self, method: str, path: str, status: int, *, key: str | None = None,
                       valid: bool | None = None, **kwargs: Any) -> httpx.Response:
        headers = {**kwargs.pop("headers", {}), **({"x-api-key": key} if key else {})}
        response = await self.http.request(method, API_PREFIX + path, headers=headers,
                                             **kwargs)
        assert response.status_code == status, response.text
        # a request is valid as sent when it succeeds, unless told otherwise
        check(response, valid_request=status < 400 if valid is None else valid)
        self.seen[(template_of(API_PREFIX + path), method.lower())].add(str(status))
        return response


@pytest.fixture
async def api(settings: Settings, clock: FakeClock) -> AsyncIterator[Api]:
    running = running_app(settings, clock)
    async with running as h:
        yield Api(h, running.app, h.http)


def test_the_document_is_valid_openapi_3_1() -> None:
    assert DOC["openapi"].startswith("3.1")
    validate(DOC)


async def test_the_document_matches_the_routes(api: Api) -> None:
    routed: dict[str, set[str]] = defaultdict(set)
    for route in api.app.routes:
        if isinstance(route, Route) and route.path.startswith(API_PREFIX + "/"):
            routed[route.path] |= {m.lower() for m in route.methods or ()} - {"head"}
    documented: dict[str, set[str]] = defaultdict(set)
    for path, method in OPERATIONS:
        documented[path].add(method)
    assert routed == documented  # Starlette answers HEAD wherever it answers GET


async def test_the_document_is_served_publicly(api: Api) -> None:
    response = await api("GET", "/openapi.json", 200)
    assert response.json() == DOC
    assert response.headers["cache-control"].startswith("public")
    assert response.headers["content-type"] == "application/json"


async def test_every_route_answers_as_documented(api: Api) -> None:
    h = api.h
    _, admin = new_key(h, "org_default", "*")
    _, weak = new_key(h, "org_default", "invoices.read")
    org = new_org(h, "Tenant")
    _, tenant = new_key(h, org, "api-keys.*", "clients.*", "usage.read", "audit-events.read",
                        "organizations.*", "registration-tokens.*", "invoices.read")
    too_big = b"{" + b" " * h.settings.server.max_body_bytes + b"}"
    await api("GET", "/openapi.json", 200)

    # -- API keys
    made = (await api("POST", "/api-keys", 201, key=admin, json={
        "name": "billing", "org_id": org, "permissions": ["invoices.read"],
        "ip_allowlist": ["127.0.0.0/8"], "expires_in": 3600,
        "rate_limits": {"burst": "60/minute"}})).json()
    key_id, key = made["api_key"]["id"], factories.remember(made["key"])
    await api("POST", "/api-keys", 404, key=admin, json={"name": "x", "org_id": "org_nope",
                                                          "permissions": ["invoices.read"]})
    await api("POST", "/api-keys", 404, key=tenant, json={"name": "x", "org_id": "org_default",
                                                           "permissions": ["invoices.read"]})
    await api("GET", "/api-key", 200, key=key)
    # deprecated but documented; this key is not remembered: the test client logs its URL
    await api("GET", "/api-key", 200, params={"x-api-key": admin})
    await api("GET", "/api-keys", 200, key=admin, params={"org_id": org,
                                                          "include_revoked": "true"})
    await api("GET", "/api-keys", 404, key=tenant, params={"org_id": "org_default"})
    await api("GET", "/api-keys", 400, key=admin, params={"cursor": "nope"}, valid=False)
    await api("GET", f"/api-keys/{key_id}", 200, key=admin)
    await api("PATCH", f"/api-keys/{key_id}", 200, key=admin,
              json={"name": "billing 2", "expires_at": None})
    await api("PATCH", f"/api-keys/{key_id}", 400, key=admin, json={})
    rotated = (await api("POST", f"/api-keys/{key_id}/rotate", 201, key=admin,
                         json={"grace_period": 60})).json()
    factories.remember(rotated["key"])
    await api("POST", f"/api-keys/{key_id}/rotate", 409, key=admin)
    await api("PATCH", f"/api-keys/{key_id}", 409, key=admin, json={"name": "again"})
    await api("POST", f"/api-keys/{rotated['api_key']['id']}/rotate", 400, key=admin,
              json={"grace_period": -1})
    await api("POST", f"/api-keys/{key_id}/revoke", 200, key=admin)

    # -- organisations and usage
    other = (await api("POST", "/organizations", 201, key=admin, json={"name": "B"})).json()
    await api("POST", "/organizations", 400, key=admin, json={"name": ""})
    await api("POST", "/organizations", 403, key=tenant, json={"name": "C"})
    await api("GET", "/organizations", 200, key=tenant)
    first = (await api("GET", "/organizations", 200, key=admin, params={"limit": 1})).json()
    assert len(first["data"]) == 1 and first["next_cursor"]
    rest = (await api("GET", "/organizations", 200, key=admin,
                      params={"cursor": first["next_cursor"]})).json()
    assert first["data"][0] not in rest["data"] and rest["data"]
    await api("GET", "/organizations", 400, key=admin, params={"limit": "0"}, valid=False)
    await api("GET", f"/organizations/{org}", 200, key=tenant)
    await api("GET", f"/organizations/{other['id']}", 404, key=tenant)
    await api("PATCH", f"/organizations/{other['id']}", 200, key=admin,
              json={"name": "B2", "disabled": True})
    await api("PATCH", f"/organizations/{org}", 400, key=admin, json={"disabled": "yes"},
              valid=False)
    h.runtime.counters.count(key_id, org, "read", h.runtime.clock.now(), api_key=True)
    h.runtime.flush_usage()
    usage = await api("GET", "/usage", 200, key=admin, params={"since": "2020-01-01"})
    assert usage.json()["data"] and usage.json()["totals"][org]
    assert usage.json()["next_cursor"] is None
    await api("GET", "/usage", 400, key=admin, params={"cursor": "e30"}, valid=False)
    await api("GET", "/usage", 400, key=admin, params={"since": "yesterday"}, valid=False)
    await api("GET", "/usage", 404, key=tenant, params={"org_id": "org_default"})

    # -- clients
    created = []
    for i in range(3):
        body = (await api("POST", "/clients", 201, key=tenant,
                          json={"name": f"c{i}", "scope": "invoices.read"})).json()
        factories.remember(body["client_secret"])
        created.append(body["client"]["client_id"])
        h.runtime.clock.advance(1)  # type: ignore[attr-defined]  # the harness's FakeClock
    public = ECKey.generate_key("P-256").as_dict(private=False)
    jwt_client = (await api("POST", "/clients", 201, key=admin, json={
        "name": "signed", "jwks": {"keys": [public]}, "scopes": ["read"]})).json()
    await api("POST", "/clients", 404, key=tenant, json={"name": "x", "org_id": other["id"]})
    page = (await api("GET", "/clients", 200, key=tenant, params={"limit": 2})).json()
    assert page["next_cursor"]
    await api("GET", "/clients", 200, key=tenant, params={"cursor": page["next_cursor"],
                                                          "status": "active", "q": "c"})
    await api("GET", "/clients", 400, key=tenant, params={"limit": 0}, valid=False)
    await api("GET", "/clients", 404, key=tenant, params={"org_id": "org_default"})
    client_id = created[0]
    await api("GET", f"/clients/{client_id}", 200, key=tenant)
    await api("PATCH", f"/clients/{client_id}", 200, key=tenant,
              json={"ip_allow": ["127.0.0.1"], "rate_limits": {"hourly": "100/hour"}})
    await api("PATCH", f"/clients/{client_id}", 400, key=tenant, json={"scope": 5},
              valid=False)
    await api("POST", f"/clients/{client_id}/disable", 200, key=tenant)
    await api("POST", f"/clients/{client_id}/enable", 200, key=tenant)
    factories.remember((await api("POST", f"/clients/{client_id}/rotate-secret", 200,
                                  key=tenant)).json()["client_secret"])
    await api("POST", f"/clients/{jwt_client['client']['client_id']}/rotate-secret", 400,
              key=admin)
    await api("DELETE", f"/clients/{created[1]}", 204, key=tenant)
    refused_delete = await api("DELETE", f"/organizations/{org}", 409, key=admin)
    assert "client" in refused_delete.json()["error"]["message"]
    await api("DELETE", "/organizations/org_default", 409, key=admin)
    await api("DELETE", f"/organizations/{other['id']}", 204, key=admin)
    await api("GET", f"/organizations/{other['id']}", 404, key=admin)

    # -- people
    _, people_tenant = new_key(h, org, "users.*")
    person = (await api("POST", "/users", 201, key=admin, json={
        "username": "pat", "password": "correct horse battery", "email": "pat@example.com",
        "email_verified": True, "name": "Pat", "role": "user",
        "org_id": "org_default"})).json()
    doomed = (await api("POST", "/users", 201, key=admin, json={
        "username": "dan", "password": "correct horse battery"})).json()
    await api("POST", "/users", 409, key=admin, json={"username": "PAT",
                                                      "password": "correct horse battery"})
    await api("POST", "/users", 404, key=admin, json={
        "username": "x", "password": "correct horse battery", "org_id": "org_nope"})
    await api("GET", "/users", 200, key=admin, params={"role": "user", "status": "active",
                                                       "limit": 1})
    await api("GET", "/users", 400, key=admin, params={"role": "root"}, valid=False)
    await api("GET", "/users", 404, key=people_tenant, params={"org_id": "org_default"})
    user_id = person["id"]
    await api("GET", f"/users/{user_id}", 200, key=admin)
    await api("PATCH", f"/users/{user_id}", 200, key=admin, json={"name": "Pat P",
                                                                  "email_verified": False})
    await api("POST", f"/users/{user_id}/disable", 200, key=admin)
    await api("POST", f"/users/{user_id}/enable", 200, key=admin)
    with h.runtime.db.session(write=True) as session:
        consents.grant(session, user_id, client_id, ("invoices.read",), h.runtime.clock.now(),
                       0, audit.Actor("test"))
    await api("GET", f"/users/{user_id}/consents", 200, key=admin)
    await api("DELETE", f"/users/{user_id}/consents", 204, key=admin,
              params={"client_id": client_id})
    await api("DELETE", f"/users/{user_id}/consents", 400, key=admin, valid=False)
    await api("DELETE", f"/users/{doomed['id']}", 204, key=admin)

    # -- initial access tokens, signing keys
    new = (await api("POST", "/registration-tokens", 201, key=admin, json={
        "scopes": ["read"], "max_uses": 2, "expires_in": 3600, "description": "agents"})).json()
    factories.remember(new["token"])
    await api("POST", "/registration-tokens", 400, key=admin, json={"max_uses": 0},
              valid=False)
    await api("POST", "/registration-tokens", 403, key=tenant, json={})
    tokens = (await api("GET", "/registration-tokens", 200, key=admin,
                        params={"limit": 1})).json()
    assert tokens["next_cursor"]
    await api("GET", "/registration-tokens", 200, key=admin,
              params={"cursor": tokens["next_cursor"]})
    await api("GET", "/registration-tokens", 400, key=admin, params={"cursor": "nope"},
              valid=False)
    await api("POST", f"/registration-tokens/{new['registration_token']['id']}/revoke", 200,
              key=admin)
    (signer,) = (await api("GET", "/signing-keys", 200, key=admin)).json()["data"]
    standby = (await api("POST", "/signing-keys/rotate", 201, key=admin,
                         json={"alg": "ES256"})).json()
    await api("POST", "/signing-keys/rotate", 409, key=admin, json={"kid": standby["kid"]})
    await api("POST", "/signing-keys/rotate", 404, key=admin, json={"kid": "nope"})
    await api("POST", "/signing-keys/rotate", 400, key=admin, json={"alg": "HS256"},
              valid=False)
    await api("POST", f"/signing-keys/{signer['kid']}/retire", 409, key=admin)
    await api("POST", f"/signing-keys/{standby['kid']}/retire", 200, key=admin)

    # -- the audit log
    events = (await api("GET", "/audit-events", 200, key=tenant, params={"limit": 2})).json()
    await api("GET", "/audit-events", 200, key=admin, params={
        "cursor": events["next_cursor"], "action": "client.", "since": 0})
    await api("GET", "/audit-events", 400, key=admin, params={"since": "today"}, valid=False)
    await api("GET", "/audit-events", 404, key=tenant, params={"org_id": "org_default"})

    # -- an access token as the caller
    admin_api = h.settings.issuer + API_PREFIX  # the token's audience: this API
    reader, reader_secret = factories.create_client(h.runtime, scopes=["clients.read"],
                                                    resources=[admin_api])
    assert reader_secret
    answer = await h.http.post("/token", data={"grant_type": "client_credentials",
                                               "resource": admin_api},
                               headers=factories.basic_auth(reader.client_id, reader_secret))
    bearer = factories.remember(answer.json()["access_token"])
    await api("GET", "/clients", 200, headers={"authorization": f"Bearer {bearer}"})
    refused = await api("GET", "/clients", 401, headers={"authorization": "Bearer e.e.e"})
    assert refused.json()["error"]["code"] == "invalid_token"

    ids = {"key_id": rotated["api_key"]["id"], "org_id": org, "client_id": client_id,
           "token_id": new["registration_token"]["id"], "kid": signer["kid"],
           "request_id": "apr_0000000000000000", "user_id": user_id}
    # -- every operation: no credential, too weak a one, bodies malformed or too large
    # (on objects that exist: some look the object up first), unknown ids
    for (path, method), op in OPERATIONS.items():
        path = path.removeprefix(API_PREFIX)
        if not op["security"]:
            continue
        target = fill(path, "x")
        existing = re.sub(r"\{([^}/]+)\}", lambda m: ids[m.group(1)], path)
        await api(method, target, 401, json={})
        if "403" in op["responses"]:
            await api(method, target, 403, key=weak, json={})
        if "requestBody" in op:
            await api(method, existing, 400, key=admin, content=b"{",
                      headers={"content-type": "application/json"})
            await api(method, existing, 413, key=admin, content=too_big,
                      headers={"content-type": "application/json"})
        if "404" in op["responses"] and "{" in path:
            await api(method, fill(path, "nope"), 404, key=admin, json={"name": "n"},
                      valid=False)

    # every documented answer of every operation came up, except the rare ones
    missing = {(path, method, status) for (path, method), op in OPERATIONS.items()
               for status in op["responses"] if status not in RARE
               and not approvals_only(path, status) and status not in api.seen[(path, method)]}
    assert not missing, sorted(missing)


async def test_approvals_answer_as_documented(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, approvals={
        "required": 1, "actions": ["api_key.create.privileged", "organization.delete",
                                   "client.delete"]})
    running = running_app(settings)
    async with running as h:
        api = Api(h, running.app, h.http)
        _, first = new_key(h, "org_default", "*")
        _, second = new_key(h, "org_default", "*")
        _, weak = new_key(h, "org_default", "invoices.read")
        _, tenant = new_key(h, new_org(h, "Tenant"), "*")
        await api("POST", "/api-keys", 201, key=first, json={"name": "plain",
                                                             "permissions": ["x.read"]})
        pending = (await api("POST", "/api-keys", 202, key=first, json={
            "name": "root", "permissions": ["*"], "expires_in": 600})).json()
        assert pending["state"] == "pending" and pending["approvals_needed"] == 1
        key_request = pending["id"]
        await api("GET", "/approvals", 200, key=second, params={"state": "pending",
                                                                "limit": 1})
        await api("GET", "/approvals", 400, key=second, params={"state": "nope"},
                  valid=False)
        await api("GET", "/approvals", 404, key=tenant, params={"org_id": "org_default"})
        await api("GET", f"/approvals/{key_request}", 200, key=second)
        await api("GET", f"/approvals/{key_request}", 404, key=tenant)
        await api("POST", f"/approvals/{key_request}/reveal", 409, key=first)
        await api("POST", f"/approvals/{key_request}/approve", 403, key=first)
        await api("POST", f"/approvals/{key_request}/approve", 200, key=second)
        await api("POST", f"/approvals/{key_request}/approve", 409, key=second)
        await api("POST", f"/approvals/{key_request}/reveal", 403, key=second)
        made = (await api("POST", f"/approvals/{key_request}/reveal", 201, key=first)).json()
        factories.remember(made["key"])
        await api("POST", f"/approvals/{key_request}/reveal", 409, key=first)

        client, secret = factories.create_client(h.runtime, scopes=["read"])
        assert secret
        doomed = (await api("DELETE", f"/clients/{client.client_id}", 202,
                            key=first)).json()["id"]
        await api("POST", f"/approvals/{doomed}/reject", 200, key=second,
                  json={"reason": "still in use"})
        await api("POST", f"/approvals/{doomed}/reject", 409, key=second)
        await api("POST", f"/approvals/{doomed}/reject", 400, key=second,
                  json={"reason": 5}, valid=False)
        await api("POST", f"/approvals/{doomed}/reveal", 400, key=first)
        empty = new_org(h, "Empty")
        org_request = (await api("DELETE", f"/organizations/{empty}", 202, key=first)).json()
        done = (await api("POST", f"/approvals/{org_request['id']}/approve", 200,
                          key=second)).json()
        assert done["state"] == "executed"
        plain_id, _ = new_key(h, "org_default", "x.read")
        raise_request = (await api("PATCH", f"/api-keys/{plain_id}", 202, key=first,
                                   json={"permissions": ["*"]})).json()
        assert raise_request["action"] == "api_key.update.privileged"
        raised = (await api("POST", f"/approvals/{raise_request['id']}/approve", 200,
                            key=second)).json()
        assert raised["state"] == "executed" and raised["result"] == plain_id

        for (path, method), op in OPERATIONS.items():
            if not path.startswith(APPROVALS):
                continue
            path = path.removeprefix(API_PREFIX)
            await api(method, fill(path, "x"), 401)
            await api(method, fill(path, "x"), 403, key=weak)
            if "{" in path:
                await api(method, fill(path, "apr_0000000000000000"), 404, key=first)
            if "requestBody" in op:
                await api(method, fill(path, "x"), 413, key=first,
                          content=b"{" + b" " * settings.server.max_body_bytes + b"}",
                          headers={"content-type": "application/json"})
        missing = {(path, method, status) for (path, method), op in OPERATIONS.items()
                   for status in op["responses"] if status not in RARE
                   and approvals_only(path, status) and status not in api.seen[(path, method)]}
        assert not missing, sorted(missing)


async def test_rate_limited_answers_as_documented(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, rate_limits={"api_key_burst": "2/minute"})
    running = running_app(settings)
    async with running as h:
        api = Api(h, running.app, h.http)
        _, admin = new_key(h, "org_default", "*")
        for _ in range(2):
            await api("GET", "/organizations", 200, key=admin)
        refused = await api("GET", "/organizations", 429, key=admin)
        assert refused.json()["error"]["details"]["retry_after"] >= 1


async def test_unavailable_and_unexpected_answers_as_documented(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    _, admin = new_key(api.h, "org_default", "*")

    def store_down(*args: object, **kwargs: object) -> None:
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    def unreadable(*args: object) -> None:
        raise KeyFileError("unreadable")

    monkeypatch.setattr(organizations, "list_orgs", store_down)
    await api("GET", "/organizations", 503, key=admin)
    monkeypatch.setattr(api.h.runtime.keyring, "load", unreadable)
    await api("GET", "/signing-keys", 503, key=admin)

    def bug(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(organizations, "list_orgs", bug)
    transport = httpx.ASGITransport(app=api.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=api.h.settings.issuer) as http:
        failed = await Api(api.h, api.app, http)("GET", "/organizations", 500, key=admin)
    error = failed.json()["error"]
    assert error["code"] == "server_error" and error["request_id"] in error["message"]
