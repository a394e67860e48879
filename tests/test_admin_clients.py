"""OAuth clients through the admin API: lifecycle, organisation scoping, scope escalation,
paging, and a scope change that kills the client's earlier tokens."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from authserver.storage.models import AuditEntry
from tests import factories
from tests.conftest import AppHarness
from tests.test_api_keys import assert_envelope, new_key, new_org

pytestmark = pytest.mark.anyio
CLIENTS = "/api/v1/clients"


async def token_for(h: AppHarness, client_id: str, secret: str) -> str:
    answer = await h.http.post("/token", data={"grant_type": "client_credentials"},
                               headers=factories.basic_auth(client_id, secret))
    assert answer.status_code == 200, answer.text
    return str(factories.remember(answer.json()["access_token"]))


async def active(h: AppHarness, token: str, who: tuple[str, str]) -> bool:
    answer = await h.http.post("/introspect", data={"token": token},
                               headers=factories.basic_auth(*who))
    return bool(answer.json()["active"])


async def test_client_lifecycle(harness: AppHarness) -> None:
    h = harness
    _, admin = new_key(h, "org_default", "*")
    auth = {"x-api-key": admin}
    created = await h.http.post(CLIENTS, json={"name": "billing", "scope": "read write",
                                               "ip_allow": ["127.0.0.0/8"]}, headers=auth)
    assert created.status_code == 201, created.text
    client, secret = created.json()["client"], created.json()["client_secret"]
    factories.remember(secret)
    client_id = client["client_id"]
    assert client["scope"] == "read write" and secret not in str(client)
    token = await token_for(h, client_id, secret)
    rs, rs_secret = factories.create_client(h.runtime, name="rs")
    assert rs_secret
    who = (rs.client_id, rs_secret)
    assert await active(h, token, who)

    shown = await h.http.get(f"{CLIENTS}/{client_id}", headers=auth)
    assert shown.json()["name"] == "billing" and secret not in shown.text
    narrowed = await h.http.patch(f"{CLIENTS}/{client_id}", json={"scopes": ["read"]},
                                  headers=auth)
    assert narrowed.status_code == 200 and narrowed.json()["scope"] == "read"
    assert not await active(h, token, who)  # at once on this instance
    fresh = await token_for(h, client_id, secret)
    assert await active(h, fresh, who)

    rotated = await h.http.post(f"{CLIENTS}/{client_id}/rotate-secret", headers=auth)
    new_secret = factories.remember(rotated.json()["client_secret"])
    assert new_secret and new_secret != secret
    refused = await h.http.post("/token", data={"grant_type": "client_credentials"},
                                headers=factories.basic_auth(client_id, secret))
    assert refused.status_code == 401
    disabled = await h.http.post(f"{CLIENTS}/{client_id}/disable", headers=auth)
    assert disabled.json()["status"] == "disabled"
    assert not await active(h, fresh, who)
    enabled = await h.http.post(f"{CLIENTS}/{client_id}/enable", headers=auth)
    assert enabled.json()["status"] == "active"
    deleted = await h.http.delete(f"{CLIENTS}/{client_id}", headers=auth)
    assert deleted.status_code == 204
    assert_envelope(await h.http.get(f"{CLIENTS}/{client_id}", headers=auth), 404, "not_found")
    with h.runtime.db.session() as session:
        actions = [e.action for e in session.scalars(
            select(AuditEntry).where(AuditEntry.target == client_id).order_by(AuditEntry.id))]
    assert actions == ["client.create", "client.update", "client.rotate_secret",
                       "client.disable", "client.enable", "client.delete"]


async def test_scoping_escalation_and_paging(harness: AppHarness) -> None:
    h = harness
    org, other = new_org(h, "A"), new_org(h, "B")
    _, manager = new_key(h, org, "clients.*", "invoices.read")
    theirs, _ = factories.create_client(h.runtime, name="theirs", org_id=other)
    auth = {"x-api-key": manager}
    # a client may get only scopes the caller holds (its tokens could call this API)
    assert_envelope(await h.http.post(CLIENTS, json={"name": "x", "scope": "api-keys.create"},
                                      headers=auth), 403, "insufficient_permissions")
    assert_envelope(await h.http.post(CLIENTS, json={"name": "x", "org_id": other},
                                      headers=auth), 404, "organization_not_found")
    for i in range(5):
        made = await h.http.post(CLIENTS, json={"name": f"c{i}", "scope": "invoices.read"},
                                 headers=auth)
        assert made.status_code == 201 and made.json()["client"]["org_id"] == org
        factories.remember(made.json()["client_secret"])
        h.runtime.clock.advance(1)  # type: ignore[attr-defined]  # the harness's FakeClock
    assert_envelope(await h.http.get(f"{CLIENTS}/{theirs.client_id}", headers=auth),
                    404, "not_found")
    assert_envelope(await h.http.delete(f"{CLIENTS}/{theirs.client_id}", headers=auth),
                    404, "not_found")
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        listed = (await h.http.get(CLIENTS, params=params, headers=auth)).json()
        seen += [c["name"] for c in listed["data"]]
        cursor = listed["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"c{i}" for i in range(5)]
    searched = await h.http.get(CLIENTS, params={"q": "c3"}, headers=auth)
    assert [c["name"] for c in searched.json()["data"]] == ["c3"]
    for bad in ({"cursor": "nope"}, {"limit": "0"}, {"status": "sleeping"}):
        assert_envelope(await h.http.get(CLIENTS, params=bad, headers=auth),
                        400, "invalid_request")


async def test_bad_client_bodies_are_400(harness: AppHarness) -> None:
    _, admin = new_key(harness, "org_default", "*")
    auth = {"x-api-key": admin}
    for body in ({"name": ""}, {"name": "x", "scope": 5}, {"name": "x", "ip_allow": ["x"]},
                 {"name": "x", "scope": "a", "scopes": ["a"]}, {"name": "x", "jwks": "k"},
                 {"name": "x", "token_endpoint_auth_method": "magic"},
                 {"name": "x", "rate_limits": {"daily": "1/day"}}):
        response = await harness.http.post(CLIENTS, json=body, headers=auth)
        assert_envelope(response, 400, "invalid_request")


async def test_changing_a_client_needs_its_scopes(harness: AppHarness) -> None:
    """A key with only clients.update cannot rotate (and so take over) a stronger client."""
    h = harness
    strong, _ = factories.create_client(h.runtime, name="strong", scopes=["api-keys.create"])
    _, weak = new_key(h, "org_default", "clients.*")
    auth = {"x-api-key": weak}
    for method, path in (("POST", "rotate-secret"), ("POST", "disable"), ("DELETE", ""),
                         ("PATCH", "")):
        url = f"{CLIENTS}/{strong.client_id}" + (f"/{path}" if path else "")
        response = await h.http.request(method, url, json={"name": "x"} if method == "PATCH"
                                        else None, headers=auth)
        assert_envelope(response, 403, "insufficient_permissions")
    assert (await h.http.get(f"{CLIENTS}/{strong.client_id}", headers=auth)).status_code == 200


async def test_bad_query_values_are_400_not_500(harness: AppHarness) -> None:
    _, admin = new_key(harness, "org_default", "*")
    auth = {"x-api-key": admin}
    for url in ("/api/v1/clients?limit=%C2%B2", "/api/v1/audit-events?limit=%C2%B2"):
        assert_envelope(await harness.http.get(url, headers=auth), 400, "invalid_request")
    for max_uses in (1e300, 10**20, 0, 2.5):
        response = await harness.http.post("/api/v1/registration-tokens", headers=auth,
                                           json={"max_uses": max_uses})
        assert_envelope(response, 400, "invalid_request")
    assert_envelope(await harness.http.post(CLIENTS, json={"name": "a\u0000b"}, headers=auth),
                    400, "invalid_request")
