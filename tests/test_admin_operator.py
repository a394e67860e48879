"""Registration tokens, signing keys and the audit log through the admin API."""

from __future__ import annotations

import pytest

from tests import factories
from tests.conftest import AppHarness
from tests.test_api_keys import assert_envelope, new_key, new_org

pytestmark = pytest.mark.anyio
API = "/api/v1"


async def test_registration_tokens(harness: AppHarness) -> None:
    h = harness
    _, admin = new_key(h, "org_default", "*")
    auth = {"x-api-key": admin}
    created = await h.http.post(f"{API}/registration-tokens", headers=auth,
                                json={"scopes": ["read"], "max_uses": 2, "expires_in": 3600,
                                      "description": "agents"})
    assert created.status_code == 201, created.text
    token = factories.remember(created.json()["token"])
    token_id = created.json()["registration_token"]["id"]
    assert token and token.startswith("asiat_")
    listed = await h.http.get(f"{API}/registration-tokens", headers=auth)
    assert [t["id"] for t in listed.json()["data"]] == [token_id] and token not in listed.text
    revoked = await h.http.post(f"{API}/registration-tokens/{token_id}/revoke", headers=auth)
    assert revoked.json()["state"] == "revoked"
    assert_envelope(await h.http.post(f"{API}/registration-tokens", headers=auth,
                                      json={"max_uses": 0}), 400, "invalid_request")
    assert_envelope(await h.http.post(f"{API}/registration-tokens/iat_nope/revoke",
                                      headers=auth), 404, "not_found")
    # another organisation's admin may not mint registration tokens
    _, tenant = new_key(h, new_org(h), "*")
    assert_envelope(await h.http.post(f"{API}/registration-tokens", json={},
                                      headers={"x-api-key": tenant}),
                    403, "insufficient_permissions")


async def test_signing_keys(harness: AppHarness) -> None:
    h = harness
    _, admin = new_key(h, "org_default", "*")
    auth = {"x-api-key": admin}
    (first,) = (await h.http.get(f"{API}/signing-keys", headers=auth)).json()["data"]
    assert first["state"] == "active"
    rotated = await h.http.post(f"{API}/signing-keys/rotate", headers=auth, json={"alg": "ES256"})
    assert rotated.status_code == 201, rotated.text
    kid = rotated.json()["kid"]
    states = {k["kid"]: k["state"] for k in
              (await h.http.get(f"{API}/signing-keys", headers=auth)).json()["data"]}
    assert states == {first["kid"]: "active", kid: "published"}
    assert_envelope(await h.http.post(f"{API}/signing-keys/{first['kid']}/retire", headers=auth),
                    409, "conflict")  # the active signer: rotate first
    assert_envelope(await h.http.post(f"{API}/signing-keys/rotate", headers=auth,
                                      json={"alg": "HS256"}), 400, "invalid_request")
    retired = await h.http.post(f"{API}/signing-keys/{kid}/retire", headers=auth)
    assert retired.status_code == 200 and retired.json()["retired_at"] is not None


async def test_audit_events(harness: AppHarness) -> None:
    h = harness
    key_id, admin = new_key(h, "org_default", "*")
    auth = {"x-api-key": admin}
    org = new_org(h)
    _, tenant = new_key(h, org, "audit-events.read", "api-keys.*")
    for i in range(3):
        made = await h.http.post(f"{API}/api-keys", headers={"x-api-key": tenant},
                                 json={"name": f"k{i}", "permissions": ["api-keys.read"]})
        assert made.status_code == 201
        factories.remember(made.json()["key"])
    await h.http.post(f"{API}/signing-keys/rotate", headers=auth)
    everything = (await h.http.get(f"{API}/audit-events", headers=auth)).json()["data"]
    assert everything[0]["action"] == "signing_key.rotate"
    assert everything[0]["actor"] == f"api_key:{key_id}"
    assert everything[0]["source"] == "127.0.0.1" and everything[0]["request_id"]
    own = await h.http.get(f"{API}/audit-events", headers={"x-api-key": tenant},
                           params={"limit": 2})
    body = own.json()
    assert [e["action"] for e in body["data"]] == ["api_key.create"] * 2
    rest = await h.http.get(f"{API}/audit-events", headers={"x-api-key": tenant},
                            params={"cursor": body["next_cursor"]})
    seen = body["data"] + rest.json()["data"]
    assert {e["org_id"] for e in seen} == {org}  # nothing of the operator's
    assert len(seen) == 5  # the organisation, the tenant key, three keys it made
    assert_envelope(await h.http.get(f"{API}/audit-events", headers={"x-api-key": tenant},
                                     params={"org_id": "org_default"}),
                    404, "organization_not_found")
    filtered = await h.http.get(f"{API}/audit-events", headers=auth,
                                params={"action": "api_key.", "org_id": org})
    assert len(filtered.json()["data"]) == 4  # 3 via the API + the tenant key itself


async def test_every_admin_route_needs_admin_rights(harness: AppHarness) -> None:
    """No credential: 401; a key without the permission: 403 — on every route."""
    h = harness
    _, nobody = new_key(h, "org_default", "invoices.read")
    routes = [("GET", "/clients"), ("POST", "/clients"), ("GET", "/clients/x"),
              ("PATCH", "/clients/x"), ("DELETE", "/clients/x"), ("POST", "/clients/x/disable"),
              ("POST", "/clients/x/enable"), ("POST", "/clients/x/rotate-secret"),
              ("GET", "/api-keys"), ("POST", "/api-keys"), ("GET", "/api-keys/x"),
              ("PATCH", "/api-keys/x"), ("POST", "/api-keys/x/rotate"),
              ("POST", "/api-keys/x/revoke"), ("GET", "/organizations"),
              ("POST", "/organizations"), ("GET", "/organizations/x"),
              ("PATCH", "/organizations/x"), ("GET", "/usage"),
              ("GET", "/registration-tokens"), ("POST", "/registration-tokens"),
              ("POST", "/registration-tokens/x/revoke"), ("GET", "/signing-keys"),
              ("POST", "/signing-keys/rotate"), ("POST", "/signing-keys/x/retire"),
              ("GET", "/audit-events")]
    for method, path in routes:
        bare = await h.http.request(method, API + path, json={})
        assert_envelope(bare, 401, "invalid_api_key")
        weak = await h.http.request(method, API + path, json={}, headers={"x-api-key": nobody})
        assert_envelope(weak, 403, "insufficient_permissions")


async def walk(h: AppHarness, path: str, key: str, **params: object) -> list[dict[str, object]]:
    """Every entry of a paged list, one `limit`-sized page at a time."""
    seen: list[dict[str, object]] = []
    query: dict[str, object] = {**params}
    while True:
        response = await h.http.get(f"{API}{path}", headers={"x-api-key": key}, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        seen += body["data"]
        if body["next_cursor"] is None:
            return seen
        query["cursor"] = body["next_cursor"]


async def test_organisations_registration_tokens_and_usage_are_paged(
        harness: AppHarness) -> None:
    h = harness
    _, admin = new_key(h, "org_default", "*")
    orgs = [new_org(h, f"Org {i}") for i in range(4)]
    listed = await walk(h, "/organizations", admin, limit=2)
    assert sorted(o["id"] for o in listed) == sorted(["org_default", *orgs])
    assert listed == sorted(listed, key=lambda o: (o["created_at"], o["id"]))  # type: ignore[arg-type, return-value]
    tenant_org = orgs[0]
    _, tenant = new_key(h, tenant_org, "organizations.read", "usage.read")
    assert [o["id"] for o in await walk(h, "/organizations", tenant, limit=1)] == [tenant_org]

    for i in range(3):
        created = await h.http.post(f"{API}/registration-tokens", headers={"x-api-key": admin},
                                    json={"description": f"t{i}"})
        factories.remember(created.json()["token"])
        h.runtime.clock.advance(1)  # type: ignore[attr-defined]  # the harness's FakeClock
    tokens = await walk(h, "/registration-tokens", admin, limit=2)
    assert [t["description"] for t in tokens] == ["t0", "t1", "t2"]

    now = h.runtime.clock.now()
    for subject, org in (("key_a", tenant_org), ("key_b", tenant_org), ("key_c", orgs[1])):
        for days in (0, 1):
            h.runtime.counters.count(subject, org, "read", now - days * 86400, api_key=True)
    h.runtime.flush_usage()
    rows = await walk(h, "/usage", admin, limit=4)
    assert len(rows) == 6 and len({(r["subject"], r["day"]) for r in rows}) == 6
    assert [r["day"] for r in rows] == sorted((r["day"] for r in rows), reverse=True)
    first = await h.http.get(f"{API}/usage", headers={"x-api-key": tenant},
                             params={"limit": 1})
    assert first.json()["totals"] == {tenant_org: {"reads": 4, "writes": 0, "credits": 4}}
    assert len(await walk(h, "/usage", tenant, limit=1)) == 4
    assert_envelope(await h.http.get(f"{API}/usage", headers={"x-api-key": admin},
                                     params={"cursor": "WzFd"}), 400, "invalid_request")
