"""The token endpoint in-process: client_credentials, client auth and every RFC 6749 §5.2 case."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from tests import factories
from tests.conftest import AppHarness, make_settings, running_app

pytestmark = pytest.mark.anyio
FORM = {"content-type": "application/x-www-form-urlencoded"}


basic = factories.basic_auth


async def jwks(h: AppHarness) -> KeySet:
    response = await h.http.get("/.well-known/jwks.json")
    return KeySet.import_key_set(response.json())


async def token(h: AppHarness, data: Any, headers: dict[str, str] | None = None) -> Any:
    response = await h.http.post("/token", content=data if isinstance(data, bytes | str) else None,
                                 data=None if isinstance(data, bytes | str) else data,
                                 headers=headers or FORM)
    if response.status_code == 200:
        factories.remember(response.json()["access_token"])
    return response


async def test_basic_auth_issues_rfc9068_token(harness: AppHarness) -> None:
    client, secret = factories.create_client(harness.runtime, scopes=["read", "write"])
    assert secret is not None
    response = await token(harness, {"grant_type": "client_credentials"},
                           basic(client.client_id, secret))
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "read write"
    decoded = jwt.decode(body["access_token"], await jwks(harness), algorithms=["RS256"])
    assert decoded.header["typ"] == "at+jwt"
    assert decoded.header["kid"]
    claims = decoded.claims
    assert claims["iss"] == harness.settings.issuer
    assert claims["sub"] == claims["client_id"] == client.client_id
    assert claims["aud"] == harness.settings.issuer
    assert claims["exp"] == claims["iat"] + 3600
    assert claims["org_id"] == "org_default"
    assert claims["scope"] == "read write"
    assert len(claims["jti"]) >= 16


async def test_post_auth_and_body_client_id_under_basic(harness: AppHarness) -> None:
    client, secret = factories.create_client(harness.runtime, scopes=["read"],
                                             auth_method="client_secret_post")
    response = await token(harness, {"grant_type": "client_credentials",
                                     "client_id": client.client_id, "client_secret": secret})
    assert response.status_code == 200
    basic_client, basic_secret = factories.create_client(harness.runtime)
    assert basic_secret is not None
    same = await token(harness, {"grant_type": "client_credentials",
                                 "client_id": basic_client.client_id},
                       basic(basic_client.client_id, basic_secret))
    assert same.status_code == 200
    other = await token(harness, {"grant_type": "client_credentials", "client_id": "cli_other"},
                        basic(basic_client.client_id, basic_secret))
    assert other.status_code == 401
    assert other.json()["error"] == "invalid_client"


async def test_unknown_client_and_wrong_secret_read_the_same(harness: AppHarness) -> None:
    client, _ = factories.create_client(harness.runtime)
    wrong = await token(harness, {"grant_type": "client_credentials"},
                        basic(client.client_id, "ascs_wrong"))
    unknown = await token(harness, {"grant_type": "client_credentials"},
                          basic("cli_nobody", "ascs_wrong"))
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Basic ")
        assert response.headers["cache-control"] == "no-store"
    assert wrong.json() == unknown.json() == {
        "error": "invalid_client", "error_description": "Client authentication failed"}


async def test_wrong_method_for_registered_client_is_invalid_client(harness: AppHarness) -> None:
    client, secret = factories.create_client(harness.runtime)  # registered for basic
    response = await token(harness, {"grant_type": "client_credentials",
                                     "client_id": client.client_id, "client_secret": secret})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    ("data", "status", "error"),
    [
        ({}, 400, "invalid_request"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        # Supported, but not registered for this (client_credentials) client.
        ({"grant_type": "authorization_code"}, 400, "unauthorized_client"),
        ("grant_type=client_credentials&grant_type=client_credentials", 400, "invalid_request"),
        ("grant_type=client_credentials&scope=a&scope=b", 400, "invalid_request"),
        ({"grant_type": "client_credentials", "scope": "nope"}, 400, "invalid_scope"),
        ({"grant_type": "client_credentials", "scope": "bad\"scope"}, 400, "invalid_scope"),
        ({"grant_type": "client_credentials", "resource": "https://elsewhere.example"}, 400,
         "invalid_target"),
        ({"grant_type": "client_credentials", "resource": "not-a-uri"}, 400, "invalid_target"),
        (b"grant_type=client_credentials&scope=%ff", 400, "invalid_request"),
        (b"grant_type=client_credentials&scope=\xff", 400, "invalid_request"),
    ],
)
async def test_rfc6749_errors(harness: AppHarness, data: Any, status: int, error: str) -> None:
    client, secret = factories.create_client(harness.runtime, scopes=["read"])
    assert secret is not None
    response = await token(harness, data, basic(client.client_id, secret))
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert response.headers["cache-control"] == "no-store"


async def test_no_credentials_is_invalid_client(harness: AppHarness) -> None:
    response = await token(harness, {"grant_type": "client_credentials"})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert "www-authenticate" in response.headers


async def test_two_auth_methods_at_once_is_invalid_request(harness: AppHarness) -> None:
    client, secret = factories.create_client(harness.runtime)
    assert secret is not None
    response = await token(harness, {"grant_type": "client_credentials",
                                     "client_secret": secret}, basic(client.client_id, secret))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({"content-type": "application/json"}, b'{"grant_type":"client_credentials"}', 400),
        ({}, b"grant_type=client_credentials", 400),
        ({"content-type": "application/x-www-form-urlencoded; charset=latin-1"},
         b"grant_type=client_credentials", 400),
        (FORM, b"grant_type=client_credentials&pad=" + b"x" * 70000, 413),
    ],
)
async def test_bad_bodies_get_4xx(
    harness: AppHarness, headers: dict[str, str], body: bytes, status: int
) -> None:
    response = await harness.http.post("/token", content=body, headers=headers)
    assert response.status_code == status
    assert response.json()["error"] == "invalid_request"


async def test_malformed_basic_header(harness: AppHarness) -> None:
    for header in ("Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode(), "Bearer x"):
        response = await harness.http.post(
            "/token", data={"grant_type": "client_credentials"},
            headers={"authorization": header})
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"


async def test_disabled_client_is_refused(harness: AppHarness) -> None:
    from authserver.clients import set_disabled

    client, secret = factories.create_client(harness.runtime)
    assert secret is not None
    with harness.runtime.db.session() as session:
        set_disabled(session, client.client_id, True, harness.runtime.clock.now())
    harness.runtime.poll_events()
    response = await token(harness, {"grant_type": "client_credentials"},
                           basic(client.client_id, secret))
    assert response.status_code == 401


async def test_unauthorized_client_for_grant_it_may_not_use(harness: AppHarness) -> None:
    from authserver.storage.models import Client

    client, secret = factories.create_client(harness.runtime)
    assert secret is not None
    with harness.runtime.db.session() as session:
        row = session.get(Client, client.client_id)
        assert row is not None
        row.grant_types = ["authorization_code"]
    harness.runtime.cache.invalidate([client.client_id])
    response = await token(harness, {"grant_type": "client_credentials"},
                           basic(client.client_id, secret))
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"


@pytest.mark.parametrize(
    ("policy", "requested", "expected"),
    [
        ("intersect", None, "read write"),
        ("intersect", "read admin", "read"),
        ("strict", "read", "read"),
        ("client", "admin", "read write"),
    ],
)
async def test_scope_policies(tmp_path: Any, policy: str, requested: str | None,
                              expected: str) -> None:
    settings = make_settings(tmp_path, tokens={"scope_policy": policy})
    async with running_app(settings) as h:
        client, secret = factories.create_client(h.runtime, scopes=["read", "write"])
        assert secret is not None
        data = {"grant_type": "client_credentials"}
        if requested:
            data["scope"] = requested
        response = await token(h, data, basic(client.client_id, secret))
        assert response.status_code == 200, response.text
        assert response.json()["scope"] == expected


async def test_strict_policy_refuses_any_unallowed_scope(tmp_path: Any) -> None:
    settings = make_settings(tmp_path, tokens={"scope_policy": "strict"})
    async with running_app(settings) as h:
        client, secret = factories.create_client(h.runtime, scopes=["read"])
        assert secret is not None
        response = await token(h, {"grant_type": "client_credentials", "scope": "read admin"},
                               basic(client.client_id, secret))
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_scope"


async def test_resource_sets_audience_and_narrows_scopes(tmp_path: Any) -> None:
    api = "https://api.example.com"
    settings = make_settings(tmp_path, resources=[{"identifier": api, "scopes": ["read"]}])
    async with running_app(settings) as h:
        client, secret = factories.create_client(h.runtime, scopes=["read", "write"],
                                                 resources=[api])
        assert secret is not None
        response = await token(h, {"grant_type": "client_credentials", "resource": api},
                               basic(client.client_id, secret))
        assert response.status_code == 200
        claims = jwt.decode(response.json()["access_token"], await jwks(h)).claims
        assert claims["aud"] == api
        assert claims["scope"] == "read"


async def test_ip_allowlist_and_trusted_proxies(tmp_path: Any) -> None:
    settings = make_settings(tmp_path, server={"trusted_proxies": ["127.0.0.0/8"]})
    async with running_app(settings) as h:
        client, secret = factories.create_client(h.runtime, ip_allow=["203.0.113.0/24"])
        assert secret is not None
        headers = basic(client.client_id, secret)
        denied = await token(h, {"grant_type": "client_credentials"}, headers)
        assert denied.status_code == 401
        allowed = await token(h, {"grant_type": "client_credentials"},
                              {**headers, "x-forwarded-for": "203.0.113.9"})
        assert allowed.status_code == 200
        spoofed = await token(h, {"grant_type": "client_credentials"},
                              {**headers, "x-forwarded-for": "203.0.113.9, 198.51.100.1"})
        assert spoofed.status_code == 401


async def test_forwarded_for_ignored_from_untrusted_peer(harness: AppHarness) -> None:
    client, secret = factories.create_client(harness.runtime, ip_allow=["203.0.113.0/24"])
    assert secret is not None
    response = await token(harness, {"grant_type": "client_credentials"},
                           {**basic(client.client_id, secret),
                            "x-forwarded-for": "203.0.113.9"})
    assert response.status_code == 401


async def test_api_key_only_scope_never_granted(tmp_path: Any) -> None:
    from authserver.errors import Invalid

    settings = make_settings(tmp_path, scopes=[
        {"name": "portal-provision", "api_key_only": True}])
    async with running_app(settings) as h:
        with pytest.raises(Invalid, match="API-key only"):
            factories.create_client(h.runtime, scopes=["portal-provision"])


async def test_token_after_a_change_is_never_older_than_the_cutoff(harness: AppHarness) -> None:
    from authserver import clients
    from authserver.clock import FakeClock

    clock = harness.runtime.clock
    assert isinstance(clock, FakeClock)
    client, secret = factories.create_client(harness.runtime, scopes=["read", "write"])
    assert secret is not None
    before = await token(harness, {"grant_type": "client_credentials"},
                         basic(client.client_id, secret))
    with harness.runtime.db.session() as session:
        changed = clients.update_client(session, harness.runtime.catalog, client.client_id,
                                        clients.ClientUpdate(scopes=("read",)), clock.now())
    harness.runtime.poll_events()
    after = await token(harness, {"grant_type": "client_credentials"},
                        basic(client.client_id, secret))
    keys = await jwks(harness)
    old_iat = jwt.decode(before.json()["access_token"], keys).claims["iat"]
    new = jwt.decode(after.json()["access_token"], keys).claims
    cut = changed.tokens_valid_after
    assert old_iat < cut <= new["iat"]  # the old token is dead, the new one lives
    assert new["exp"] == new["iat"] + 3600
    assert new["iat"] - clock.now() <= 1.0


async def test_store_down_is_503_temporarily_unavailable(harness: AppHarness) -> None:
    from authserver.storage.db import Database

    client, secret = factories.create_client(harness.runtime)
    assert secret is not None
    directory = harness.runtime.tokens.clients
    healthy = directory.db
    directory.db = Database("postgresql://postgres@127.0.0.1:1/nothing")  # nothing listens
    try:
        response = await token(harness, {"grant_type": "client_credentials"},
                               basic(client.client_id, secret))
    finally:
        directory.db.dispose()
        directory.db = healthy
    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"
    assert response.headers["cache-control"] == "no-store"
    # nothing was cached from the failure: the next request works
    ok = await token(harness, {"grant_type": "client_credentials"},
                     basic(client.client_id, secret))
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("data", "headers", "status", "error"),
    [
        ({"grant_type": "client_credentials"}, {"authorization": b"Basic \xe9t\xe9"}, 401,
         "invalid_client"),
        ({"grant_type": "client_credentials", "client_id": "cli_\x00x", "client_secret": "x"},
         {}, 401, "invalid_client"),
        ({"grant_type": "client_credentials", "client_id": "c" * 5000, "client_secret": "x"},
         {}, 401, "invalid_client"),
        ({"grant_type": "client_credentials", "client_id": "cli_\u202ex", "client_secret": "x"},
         {}, 401, "invalid_client"),
    ],
)
async def test_hostile_input_gets_4xx(harness: AppHarness, data: Any, headers: dict[str, Any],
                                      status: int, error: str) -> None:
    response = await harness.http.post("/token", data=data, headers=headers)
    assert response.status_code == status
    assert response.json()["error"] == error


@pytest.mark.parametrize("resource", ["http://[::1", "https://a%EF%BC%83b/", "https://x:99999/",
                                      "https://x.example/#f", "urn:x:y", " https://x.example"])
async def test_malformed_resources_are_invalid_target(harness: AppHarness, resource: str) -> None:
    client, secret = factories.create_client(harness.runtime)
    assert secret is not None
    response = await token(harness, {"grant_type": "client_credentials", "resource": resource},
                           basic(client.client_id, secret))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_target"


async def test_error_descriptions_keep_to_the_rfc_charset(harness: AppHarness) -> None:
    client, secret = factories.create_client(harness.runtime)
    assert secret is not None
    response = await token(harness, {"grant_type": "client_credentials", "scope": "a\"b\\c"},
                           basic(client.client_id, secret))
    description = response.json()["error_description"]
    assert all(0x20 <= ord(c) <= 0x7E and c not in "\"\\" for c in description)


async def test_url_encoded_basic_credentials(harness: AppHarness) -> None:
    from urllib.parse import quote

    client, secret = factories.create_client(harness.runtime)
    assert secret is not None
    encoded_id = "".join(f"%{b:02X}" for b in client.client_id.encode())
    response = await token(harness, {"grant_type": "client_credentials"},
                           basic(encoded_id, quote(secret, safe="")))
    assert response.status_code == 200


async def test_several_resources_give_an_audience_list(tmp_path: Any) -> None:
    one, two = "https://a.example", "https://b.example"
    settings = make_settings(tmp_path, resources=[{"identifier": one, "scopes": ["read", "x"]},
                                                  {"identifier": two, "scopes": ["read"]}])
    async with running_app(settings) as h:
        client, secret = factories.create_client(h.runtime, scopes=["read", "x"],
                                                 resources=[one, two])
        assert secret is not None
        body = f"grant_type=client_credentials&resource={one}&resource={two}&resource={one}"
        response = await token(h, body, basic(client.client_id, secret))
        assert response.status_code == 200
        claims = jwt.decode(response.json()["access_token"], await jwks(h)).claims
        assert claims["aud"] == [one, two]
        assert claims["scope"] == "read"  # what every named resource accepts


async def test_scope_flagged_api_key_only_later_is_not_granted(tmp_path: Any) -> None:
    async with running_app(make_settings(tmp_path)) as h:
        client, secret = factories.create_client(h.runtime, scopes=["portal-provision", "read"])
    flagged = make_settings(tmp_path, scopes=[{"name": "portal-provision", "api_key_only": True}])
    async with running_app(flagged) as h:
        assert secret is not None
        response = await token(h, {"grant_type": "client_credentials"},
                               basic(client.client_id, secret))
        assert response.status_code == 200
        assert response.json()["scope"] == "read"


@pytest.mark.anyio
@pytest.mark.parametrize(("limits", "scope"), [
    ({"client_burst": "2/minute"}, "client"),
    ({"address": "2/minute"}, "address"),
    ({"organization_hourly": "2/hour"}, "organization"),
])
async def test_token_rate_limits(tmp_path: Path, limits: dict[str, str], scope: str) -> None:
    """Per client (burst), per source address and per organisation: 429 in the OAuth format
    with Retry-After and retry_after; a refused request is not counted."""
    settings = make_settings(tmp_path, rate_limits=limits)
    async with running_app(settings) as h:
        record, secret = factories.create_client(h.runtime, scopes=["read"])
        assert secret
        auth = factories.basic_auth(record.client_id, secret)
        data = {"grant_type": "client_credentials"}
        for _ in range(2):
            assert (await h.http.post("/token", data=data, headers=auth)).status_code == 200
        refused = await h.http.post("/token", data=data, headers=auth)
        assert refused.status_code == 429
        body = refused.json()
        assert body["error"] == "too_many_requests" and scope in body["error_description"]
        assert int(refused.headers["retry-after"]) == body["retry_after"] >= 1


@pytest.mark.anyio
async def test_a_clients_own_rate_limit_overrides_the_default(tmp_path: Path) -> None:
    from authserver import clients

    settings = make_settings(tmp_path, rate_limits={"client_burst": "100/minute"})
    async with running_app(settings) as h:
        record, secret = factories.create_client(h.runtime, scopes=["read"],
                                                 rate_limits=(("burst", "1/minute"),))
        assert secret and record.rate_limits == {"burst": "1/minute"}
        auth = factories.basic_auth(record.client_id, secret)
        data = {"grant_type": "client_credentials"}
        assert (await h.http.post("/token", data=data, headers=auth)).status_code == 200
        assert (await h.http.post("/token", data=data, headers=auth)).status_code == 429
        with h.runtime.db.session(write=True) as session:
            updated = clients.update_client(
                session, h.runtime.catalog, record.client_id,
                clients.ClientUpdate(rate_limits=(("burst", "50/minute"),)), h.runtime.clock.now())
        assert updated.tokens_valid_after == record.tokens_valid_after  # no cutoff for this
        h.runtime.poll_events()
        assert (await h.http.post("/token", data=data, headers=auth)).status_code == 200
        with pytest.raises(Exception, match="rate_limits"), \
                h.runtime.db.session(write=True) as session:
            clients.update_client(session, h.runtime.catalog, record.client_id,
                                  clients.ClientUpdate(rate_limits=(("daily", "5/day"),)),
                                  h.runtime.clock.now())
