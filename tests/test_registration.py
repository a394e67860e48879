"""RFC 7591 registration and RFC 7592 management, in process: metadata checks, policies,
initial access tokens, idempotency, scope ceilings, and the token path staying read-free."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select

from authserver import registration
from authserver.clock import FakeClock
from authserver.storage.db import Database
from authserver.storage.models import Client, Event, InitialAccessToken
from tests import factories
from tests.conftest import AppHarness, make_settings, running_app

pytestmark = pytest.mark.anyio
SCOPES = [{"name": "read"}, {"name": "write"}, {"name": "admin"},
          {"name": "portal-provision", "api_key_only": True}]
MACHINE = {"client_name": "agent", "grant_types": ["client_credentials"],
           "software_id": "agent-sdk", "software_version": "1.0"}


def reg_settings(tmp_path: Path, **registration_: Any) -> Any:
    registration_.setdefault("open_scopes", ["read", "write", "portal-provision"])
    return make_settings(tmp_path, scopes=SCOPES, registration=registration_)


def remember_all(body: dict[str, Any]) -> dict[str, Any]:
    for member in ("client_secret", "registration_access_token", "access_token"):
        factories.remember(body.get(member))
    return body


async def register(http: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> httpx.Response:
    response = await http.post("/register", json=body, headers=headers)
    if response.status_code == 201:
        remember_all(response.json())
    return response


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def config_path(body: dict[str, Any]) -> str:
    return "/register/" + body["client_id"]


async def token(http: httpx.AsyncClient, client_id: str, secret: str) -> httpx.Response:
    response = await http.post("/token", data={"grant_type": "client_credentials"},
                               auth=(client_id, secret))
    if response.status_code == 200:
        remember_all(response.json())
    return response


def new_access_token(h: AppHarness, **kwargs: Any) -> str:
    with h.runtime.db.session(write=True) as session:
        new = registration.create_access_token(session, h.runtime.catalog,
                                               h.runtime.clock.now(), **kwargs)
    factories.remember(new.token)
    return new.token


@pytest.fixture
async def reg(tmp_path: Path, clock: FakeClock) -> Any:
    async with running_app(reg_settings(tmp_path), clock) as h:
        yield h


# -- registration answers ----------------------------------------------------------------------


async def test_register_answers_201_with_every_rfc7591_member(reg: AppHarness) -> None:
    response = await register(reg.http, {**MACHINE, "scope": "read", "x-unknown": {"a": 1},
                                         "contacts": ["ops@example.com"], "logo_uri": None})
    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["client_id"].startswith("cli_")
    assert body["client_secret"].startswith("ascs_")
    assert body["client_secret_expires_at"] == 0
    assert body["client_id_issued_at"] == int(reg.runtime.clock.now())
    assert body["registration_access_token"].startswith("asrat_")
    assert body["registration_client_uri"] == reg.settings.issuer + config_path(body)
    assert body["token_endpoint_auth_method"] == "client_secret_basic"
    assert body["grant_types"] == ["client_credentials"]
    assert body["response_types"] == []
    assert body["scope"] == "read"
    assert body["contacts"] == ["ops@example.com"]
    assert "x-unknown" not in body
    assert "logo_uri" not in body
    issued = await token(reg.http, body["client_id"], body["client_secret"])
    assert issued.status_code == 200
    assert issued.json()["scope"] == "read"


async def test_private_key_jwt_and_public_clients_get_no_secret(reg: AppHarness) -> None:
    jwks = {"keys": [{"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9u"
                      "PHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}
    pkjwt = await register(reg.http, {**MACHINE, "token_endpoint_auth_method": "private_key_jwt",
                                      "jwks": jwks})
    assert pkjwt.status_code == 201
    assert "client_secret" not in pkjwt.json()
    assert pkjwt.json()["jwks"] == jwks
    public = await register(reg.http, {"redirect_uris": ["http://127.0.0.1:7777/cb"],
                                       "token_endpoint_auth_method": "none"})
    assert public.status_code == 201
    body = public.json()
    assert "client_secret" not in body
    assert body["grant_types"] == ["authorization_code"]  # RFC 7591 §2 default
    assert body["response_types"] == ["code"]
    assert body["application_type"] == "web"


BAD_METADATA = [
    ({"grant_types": "client_credentials"}, "invalid_client_metadata", "grant_types"),
    ({"grant_types": ["password"]}, "invalid_client_metadata", "grant_types"),
    ({"grant_types": ["client_credentials"], "response_types": ["token"]},
     "invalid_client_metadata", "response_types"),
    ({"grant_types": ["client_credentials"], "response_types": ["code"]},
     "invalid_client_metadata", "response_types"),
    ({"grant_types": ["authorization_code"]}, "invalid_redirect_uri", "redirect_uris"),
    ({"redirect_uris": ["http://example.com/cb"]}, "invalid_redirect_uri", "redirect_uris"),
    ({"redirect_uris": ["https://example.com/cb#frag"]}, "invalid_redirect_uri", "fragment"),
    ({"redirect_uris": ["/relative"]}, "invalid_redirect_uri", "redirect_uris"),
    ({"redirect_uris": "https://example.com/cb"}, "invalid_client_metadata", "redirect_uris"),
    ({"redirect_uris": ["https://example.com:99999/cb"]}, "invalid_redirect_uri", "redirect_uris"),
    ({**MACHINE, "token_endpoint_auth_method": "client_secret_jwt"},
     "invalid_client_metadata", "token_endpoint_auth_method"),
    ({**MACHINE, "token_endpoint_auth_method": "none"},
     "invalid_client_metadata", "token_endpoint_auth_method"),
    ({**MACHINE, "token_endpoint_auth_method": "private_key_jwt"},
     "invalid_client_metadata", "jwks"),
    ({**MACHINE, "jwks": {"keys": []}}, "invalid_client_metadata", "jwks"),
    ({**MACHINE, "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}},
     "invalid_client_metadata", "jwks"),
    ({**MACHINE, "jwks": {"keys": [{"kty": "RSA"}]}, "jwks_uri": "https://a.example/j"},
     "invalid_client_metadata", "jwks"),
    ({**MACHINE, "jwks_uri": "ftp://a.example/j"}, "invalid_client_metadata", "jwks_uri"),
    ({**MACHINE, "scope": 5}, "invalid_client_metadata", "scope"),
    ({**MACHINE, "scope": "read \"quoted\""}, "invalid_client_metadata", "scope"),
    ({**MACHINE, "client_name": ["x"]}, "invalid_client_metadata", "client_name"),
    ({**MACHINE, "client_name": "x" * 201}, "invalid_client_metadata", "client_name"),
    ({**MACHINE, "client_name": "bad\nname"}, "invalid_client_metadata", "client_name"),
    ({**MACHINE, "contacts": "ops@example.com"}, "invalid_client_metadata", "contacts"),
    ({**MACHINE, "contacts": [1]}, "invalid_client_metadata", "contacts"),
    ({**MACHINE, "application_type": "desktop"}, "invalid_client_metadata", "application_type"),
    ({**MACHINE, "software_id": {"id": 1}}, "invalid_client_metadata", "software_id"),
    ({**MACHINE, "client_uri": "javascript:alert(1)"}, "invalid_client_metadata", "client_uri"),
    ({**MACHINE, "logo_uri": 12}, "invalid_client_metadata", "logo_uri"),
    ({**MACHINE, "tos_uri": "not a url"}, "invalid_client_metadata", "tos_uri"),
    ({**MACHINE, "policy_uri": ""}, "invalid_client_metadata", "policy_uri"),
    ({**MACHINE, "client_uri": "http://["}, "invalid_client_metadata", "client_uri"),
    ({**MACHINE, "logo_uri": "https://a.example:port/x"}, "invalid_client_metadata", "logo_uri"),
    ({"redirect_uris": ["http://evil.example\\@127.0.0.1/cb"]}, "invalid_redirect_uri",
     "redirect_uris"),
    ({"redirect_uris": ["https://user:pw@app.example/cb"]}, "invalid_redirect_uri", "user info"),
    ({**MACHINE, "jwks": {"keys": [{"kty": "OKP", "crv": "X25519",
                                    "x": "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"}]}},
     "invalid_client_metadata", "jwks"),
    ({**MACHINE, "jwks": {"keys": [{"kty": "EC", "crv": "P-256", "use": "enc",
                                    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                                    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}},
     "invalid_client_metadata", "jwks"),
    ({**MACHINE, "jwks": {"keys": [{"kty": "EC", "crv": "P-256", "key_ops": 7,
                                    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                                    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}},
     "invalid_client_metadata", "jwks"),
]


@pytest.mark.parametrize(("body", "error", "member"), BAD_METADATA)
async def test_bad_metadata_is_refused_naming_the_member(
    reg: AppHarness, body: dict[str, Any], error: str, member: str
) -> None:
    response = await register(reg.http, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == error
    assert member in response.json()["error_description"]
    with reg.runtime.db.session() as session:
        assert session.scalars(select(Client)).first() is None  # nothing half-written


@pytest.mark.parametrize(("content", "content_type", "status"), [
    (b"{", "application/json", 400),
    (b"[1, 2]", "application/json", 400),
    (b'"text"', "application/json", 400),
    (b"\xff\xfe{}", "application/json", 400),
    (b"{}", "text/plain", 400),
    (b"client_name=x", "application/x-www-form-urlencoded", 400),
    (b'{"a": ' * 2000 + b"1" + b"}" * 2000, "application/json", 400),
    (b'{"client_name": "' + b"x" * 70000 + b'"}', "application/json", 413),
    (b'{"scope": "read", "scope": "write"}', "application/json", 400),
    (b'{"client_name": "\\ud800"}', "application/json", 400),
    (b'{"client_name": NaN}', "application/json", 400),
])
async def test_malformed_bodies_are_4xx(
    reg: AppHarness, content: bytes, content_type: str, status: int
) -> None:
    response = await reg.http.post("/register", content=content,
                                   headers={"content-type": content_type})
    assert response.status_code == status
    assert response.json()["error"] in ("invalid_client_metadata", "invalid_request")


# -- scopes and policies -----------------------------------------------------------------------


async def test_open_registration_gets_at_most_the_open_scopes(reg: AppHarness) -> None:
    asked = await register(reg.http, {**MACHINE, "scope": "read admin portal-provision"})
    assert asked.json()["scope"] == "read"  # admin is not open; portal-provision is API-key only
    unasked = await register(reg.http, {**MACHINE, "client_name": "other"})
    assert unasked.json()["scope"] == "read write"


async def test_initial_access_token_policy(tmp_path: Path, clock: FakeClock) -> None:
    settings = reg_settings(tmp_path, policy="initial_access_token")
    async with running_app(settings, clock) as h:
        missing = await register(h.http, MACHINE)
        assert missing.status_code == 401
        assert missing.json()["error"] == "invalid_token"
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = await register(h.http, MACHINE, **bearer("asiat_not-a-token"))
        assert wrong.status_code == 401
        malformed = await register(h.http, MACHINE, authorization="Basic eDp5")
        assert malformed.status_code == 401

        iat = new_access_token(h, scopes=["admin", "read"], max_uses=2, expires_in=600)
        first = await register(h.http, {**MACHINE, "scope": "admin write"}, **bearer(iat))
        assert first.status_code == 201
        assert first.json()["scope"] == "admin"  # the token's scopes are the ceiling
        second = await register(h.http, {**MACHINE, "client_name": "b"}, **bearer(iat))
        assert second.json()["scope"] == "admin read"
        used_up = await register(h.http, {**MACHINE, "client_name": "c"}, **bearer(iat))
        assert used_up.status_code == 401
        assert "no uses left" in used_up.json()["error_description"]

        expiring = new_access_token(h, expires_in=60)
        clock.advance(61)
        expired = await register(h.http, MACHINE, **bearer(expiring))
        assert expired.status_code == 401
        revoked_token = new_access_token(h)
        with h.runtime.db.session(write=True) as session:
            view = next(v for v in registration.list_access_tokens(session)
                        if v.uses == 0 and v.expires_at is None)
            registration.revoke_access_token(session, view.id, clock.now())
        revoked = await register(h.http, MACHINE, **bearer(revoked_token))
        assert revoked.status_code == 401
        with h.runtime.db.session() as session:
            assert len(session.scalars(select(Client)).all()) == 2


async def test_open_policy_honours_an_initial_access_token(reg: AppHarness) -> None:
    iat = new_access_token(reg, scopes=["admin"])
    response = await register(reg.http, {**MACHINE, "scope": "admin"}, **bearer(iat))
    assert response.json()["scope"] == "admin"
    bad = await register(reg.http, MACHINE, **bearer("asiat_wrong"))
    assert bad.status_code == 401  # a bad token is refused, not quietly treated as open


async def test_closed_registration_is_not_mounted_or_advertised(tmp_path: Path) -> None:
    async with running_app(reg_settings(tmp_path, policy="closed")) as h:
        assert (await h.http.post("/register", json=MACHINE)).status_code == 404
        assert (await h.http.get("/register/cli_x")).status_code == 404
        for path in ("/.well-known/oauth-authorization-server",
                     "/.well-known/openid-configuration"):
            assert "registration_endpoint" not in (await h.http.get(path)).json()


async def test_open_registration_is_rate_limited_per_address(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, registration={"rate_limit": "2/minute"},
                             server={"trusted_proxies": ["127.0.0.0/8"]})
    async with running_app(settings) as h:
        for n in range(2):
            assert (await register(h.http, {**MACHINE, "client_name": f"a{n}"})).status_code == 201
        limited = await register(h.http, MACHINE)
        assert limited.status_code == 429
        assert limited.json()["error"] == "too_many_requests"
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert limited.json()["retry_after"] == int(limited.headers["retry-after"])
        other = await register(h.http, MACHINE, **{"x-forwarded-for": "203.0.113.9"})
        assert other.status_code == 201


# -- idempotent re-registration ----------------------------------------------------------------


async def test_identical_reregistration_returns_the_same_client(reg: AppHarness) -> None:
    first = (await register(reg.http, MACHINE)).json()
    again = await register(reg.http, dict(reversed(list(MACHINE.items()))))
    assert again.status_code == 201
    assert again.json() == first
    different = (await register(reg.http, {**MACHINE, "software_version": "1.1"})).json()
    assert different["client_id"] != first["client_id"]
    with reg.runtime.db.session() as session:
        assert len(session.scalars(select(Client)).all()) == 2


async def test_reregistration_from_another_address_is_a_new_client(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, scopes=SCOPES,
                             server={"trusted_proxies": ["127.0.0.0/8"]})
    async with running_app(settings) as h:
        a = (await register(h.http, MACHINE, **{"x-forwarded-for": "198.51.100.1"})).json()
        b = (await register(h.http, MACHINE, **{"x-forwarded-for": "198.51.100.2"})).json()
        assert a["client_id"] != b["client_id"]


async def test_reregistration_after_the_window_or_a_change_is_a_new_client(
    reg: AppHarness, clock: FakeClock
) -> None:
    first = (await register(reg.http, MACHINE)).json()
    clock.advance(reg.settings.registration.idempotency_window + 1)
    later = (await register(reg.http, MACHINE)).json()
    assert later["client_id"] != first["client_id"]
    # the first one still works: a new registration never takes an old client's credentials
    assert (await token(reg.http, first["client_id"], first["client_secret"])).status_code == 200

    renamed = await reg.http.put(config_path(later), headers=bearer(
        later["registration_access_token"]), json={**MACHINE, "client_name": "agent"})
    assert renamed.status_code == 200
    after_change = (await register(reg.http, MACHINE)).json()
    assert after_change["client_id"] not in (first["client_id"], later["client_id"])


async def test_idempotency_can_be_switched_off(tmp_path: Path) -> None:
    async with running_app(reg_settings(tmp_path, idempotency_window=0)) as h:
        a = (await register(h.http, MACHINE)).json()
        b = (await register(h.http, MACHINE)).json()
        assert a["client_id"] != b["client_id"]


# -- RFC 7592 management -----------------------------------------------------------------------


async def test_read_shows_metadata_but_never_the_secret(reg: AppHarness) -> None:
    body = (await register(reg.http, {**MACHINE, "scope": "read"})).json()
    read = await reg.http.get(config_path(body), headers=bearer(body["registration_access_token"]))
    assert read.status_code == 200
    assert read.headers["cache-control"] == "no-store"
    shown = read.json()
    assert "client_secret" not in shown
    assert {k: v for k, v in body.items() if k != "client_secret"} == shown


async def test_a_registration_token_only_opens_its_own_client(reg: AppHarness) -> None:
    a = (await register(reg.http, {**MACHINE, "client_name": "a"})).json()
    b = (await register(reg.http, {**MACHINE, "client_name": "b"})).json()
    token_a = bearer(a["registration_access_token"])
    for method in ("GET", "PUT", "DELETE"):
        response = await reg.http.request(method, config_path(b), headers=token_a, json=MACHINE)
        assert response.status_code == 401, method
        assert response.json()["error"] == "invalid_token"
    assert (await reg.http.get(config_path(b))).status_code == 401  # no token at all
    unknown = await reg.http.get("/register/cli_000000000000000000000000", headers=token_a)
    assert unknown.status_code == 401  # the same answer: no hint that an id exists
    # a secret is not a registration token, and a CLI-made client has no registration
    assert (await reg.http.get(config_path(b), headers=bearer(b["client_secret"]))
            ).status_code == 401
    cli_client, _ = factories.create_client(reg.runtime)
    assert (await reg.http.get(f"/register/{cli_client.client_id}", headers=token_a)
            ).status_code == 401


async def test_update_replaces_metadata_and_cuts_off_tokens_on_scope_change(
    reg: AppHarness, clock: FakeClock
) -> None:
    body = (await register(reg.http, {**MACHINE, "scope": "read write"})).json()
    headers = bearer(body["registration_access_token"])
    renamed = await reg.http.put(config_path(body), headers=headers, json={
        **body, "client_name": "renamed", "client_secret": body["client_secret"]})
    assert renamed.status_code == 200
    assert renamed.json()["client_name"] == "renamed"
    assert "client_secret" not in renamed.json()
    with reg.runtime.db.session() as session:
        assert session.get(Client, body["client_id"]).tokens_valid_after == 0.0  # type: ignore[union-attr]

    clock.advance(5)
    narrowed = await reg.http.put(config_path(body), headers=headers,
                                  json={**MACHINE, "scope": "read admin"})
    assert narrowed.json()["scope"] == "read"  # admin stays outside the ceiling
    assert "contacts" not in narrowed.json()
    with reg.runtime.db.session() as session:
        row = session.get(Client, body["client_id"])
        assert row is not None
        assert row.tokens_valid_after == int(clock.now()) + 1
        assert row.scopes == ["read"]
        kinds = session.scalars(select(Event.type).where(Event.subject == body["client_id"]))
        assert list(kinds) == ["client.created", "client.updated", "client.updated"]


async def test_update_rotates_the_secret_on_request(reg: AppHarness) -> None:
    body = (await register(reg.http, MACHINE)).json()
    headers = bearer(body["registration_access_token"])
    rotated = remember_all((await reg.http.put(config_path(body), headers=headers, json={
        **MACHINE, "rotate_client_secret": True})).json())
    assert rotated["client_secret"] != body["client_secret"]
    assert (await token(reg.http, body["client_id"], body["client_secret"])).status_code == 401
    assert (await token(reg.http, body["client_id"], rotated["client_secret"])).status_code == 200


@pytest.mark.parametrize(("change", "member"), [
    ({"client_id": "cli_someone_else"}, "client_id"),
    ({"client_secret": "ascs_wrong"}, "client_secret"),
    ({"rotate_client_secret": "yes"}, "rotate_client_secret"),
    ({"grant_types": ["implicit"]}, "grant_types"),
])
async def test_bad_updates_change_nothing(
    reg: AppHarness, change: dict[str, Any], member: str
) -> None:
    body = (await register(reg.http, MACHINE)).json()
    response = await reg.http.put(config_path(body), json={**MACHINE, **change},
                                  headers=bearer(body["registration_access_token"]))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client_metadata"
    assert member in response.json()["error_description"]
    read = await reg.http.get(config_path(body), headers=bearer(body["registration_access_token"]))
    assert read.json()["client_name"] == MACHINE["client_name"]


async def test_delete_stops_tokens_at_once(reg: AppHarness) -> None:
    body = (await register(reg.http, MACHINE)).json()
    assert (await token(reg.http, body["client_id"], body["client_secret"])).status_code == 200
    headers = bearer(body["registration_access_token"])
    deleted = await reg.http.delete(config_path(body), headers=headers)
    assert deleted.status_code == 204
    # no event poll in between: this instance dropped its cached copy itself
    refused = await token(reg.http, body["client_id"], body["client_secret"])
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"
    assert (await reg.http.delete(config_path(body), headers=headers)).status_code == 401
    with reg.runtime.db.session() as session:
        last = session.scalars(select(Event).order_by(Event.id.desc())).first()
        assert last is not None
        assert (last.type, last.subject) == ("client.deleted", body["client_id"])
        assert last.data["tokens_valid_after"] > 0


async def test_storage_failure_is_503_not_a_fake_success(reg: AppHarness) -> None:
    working = reg.runtime.registrar.db
    reg.runtime.registrar.db = Database("postgresql://postgres@127.0.0.1:1/nowhere")
    try:
        response = await register(reg.http, MACHINE)
        assert response.status_code == 503
        assert response.json()["error"] == "temporarily_unavailable"
    finally:
        reg.runtime.registrar.db.dispose()
        reg.runtime.registrar.db = working


# -- the token path stays free of database work ------------------------------------------------


async def test_tokens_for_a_registered_client_run_no_sql(reg: AppHarness) -> None:
    body = (await register(reg.http, MACHINE)).json()
    assert (await token(reg.http, body["client_id"], body["client_secret"])).status_code == 200
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(reg.runtime.db.engine, "before_cursor_execute", count)
    try:
        for _ in range(5):
            issued = await token(reg.http, body["client_id"], body["client_secret"])
            assert issued.status_code == 200
    finally:
        event.remove(reg.runtime.db.engine, "before_cursor_execute", count)
    assert statements == []
    # the last use waits in memory until the flush writes it
    with reg.runtime.db.session() as session:
        assert session.get(Client, body["client_id"]).last_used_at is None  # type: ignore[union-attr]
    reg.runtime.flush_usage()
    with reg.runtime.db.session() as session:
        row = session.get(Client, body["client_id"])
        assert row is not None
        assert row.last_used_at == reg.runtime.clock.now()


async def test_initial_access_tokens_are_stored_as_digests(reg: AppHarness) -> None:
    iat = new_access_token(reg, scopes=["read"])
    with reg.runtime.db.session() as session:
        row = session.scalars(select(InitialAccessToken)).one()
        assert iat not in (row.digest, row.id)
        assert len(row.digest) == 64


# -- found in review ---------------------------------------------------------------------------


async def test_head_reads_and_never_deletes(reg: AppHarness) -> None:
    body = (await register(reg.http, MACHINE)).json()
    headers = bearer(body["registration_access_token"])
    assert (await reg.http.head(config_path(body), headers=headers)).status_code == 200
    assert (await reg.http.get(config_path(body), headers=headers)).status_code == 200
    assert (await token(reg.http, body["client_id"], body["client_secret"])).status_code == 200


@pytest.mark.parametrize("client_id", ["cli_%00", "%00", "x" * 300, "cli_%0a"])
async def test_odd_client_ids_in_the_path_are_401(reg: AppHarness, client_id: str) -> None:
    response = await reg.http.get("/register/" + client_id, headers=bearer("asrat_x"))
    assert response.status_code == 401


async def test_bearer_challenges_follow_rfc6750(tmp_path: Path) -> None:
    async with running_app(reg_settings(tmp_path, policy="initial_access_token")) as h:
        missing = await register(h.http, MACHINE)
        assert missing.headers["www-authenticate"] == 'Bearer realm="authserver"'
        wrong = await register(h.http, MACHINE, **bearer("asiat_nope"))
        assert wrong.headers["www-authenticate"].endswith('error="invalid_token"')
        malformed = await register(h.http, MACHINE, authorization="Bearer a b")
        assert malformed.status_code == 400
        assert malformed.json()["error"] == "invalid_request"


async def test_an_unknown_address_never_replays(reg: AppHarness) -> None:
    registrar = reg.runtime.registrar
    first = remember_all(registrar.register(dict(MACHINE), registration.Origin(None)).body)
    second = remember_all(registrar.register(dict(MACHINE), registration.Origin(None)).body)
    assert first["client_id"] != second["client_id"]


async def test_array_order_does_not_make_a_new_client(reg: AppHarness) -> None:
    body = {**MACHINE, "grant_types": ["client_credentials", "refresh_token"],
            "contacts": ["a@example.com", "b@example.com"]}
    first = (await register(reg.http, body)).json()
    again = (await register(reg.http, {
        **body, "grant_types": ["refresh_token", "client_credentials"],
        "contacts": ["b@example.com", "a@example.com"]})).json()
    assert again["client_id"] == first["client_id"]


async def test_an_operators_scope_change_is_the_new_ceiling(reg: AppHarness) -> None:
    from authserver import clients

    body = (await register(reg.http, {**MACHINE, "scope": "read write"})).json()
    with reg.runtime.db.session(write=True) as session:
        clients.update_client(session, reg.runtime.catalog, body["client_id"],
                              clients.ClientUpdate(scopes=("read",)), reg.runtime.clock.now())
    headers = bearer(body["registration_access_token"])
    renamed = await reg.http.put(config_path(body), headers=headers,
                                 json={**MACHINE, "client_name": "renamed"})
    assert renamed.json()["scope"] == "read"  # the agent cannot undo the narrowing
    with reg.runtime.db.session(write=True) as session:
        clients.update_client(session, reg.runtime.catalog, body["client_id"],
                              clients.ClientUpdate(scopes=("read", "admin")),
                              reg.runtime.clock.now())
    widened = await reg.http.put(config_path(body), headers=headers, json=MACHINE)
    assert widened.json()["scope"] == "admin read"


async def test_a_revocation_after_lookup_still_stops_the_use(reg: AppHarness) -> None:
    from authserver.errors import InvalidToken
    from authserver.registration.access_tokens import consume_access_token, find_access_token

    iat = new_access_token(reg)
    now = reg.runtime.clock.now()
    with reg.runtime.db.session(write=True) as session:
        row = find_access_token(session, iat, now)
        token_id = row.id
        registration.revoke_access_token(session, token_id, now)
        session.flush()
        with pytest.raises(InvalidToken):
            consume_access_token(session, token_id, now)


def test_rate_limit_keys_group_ipv6_by_64_and_unmap_ipv4() -> None:
    from authserver.web.registration import rate_key

    assert rate_key("2001:db8:1:2:aaaa::1") == rate_key("2001:db8:1:2:bbbb::9")
    assert rate_key("2001:db8:1:3::1") != rate_key("2001:db8:1:2::1")
    assert rate_key("::ffff:198.51.100.7") == rate_key("198.51.100.7") == "198.51.100.7"
    assert rate_key(None) == "-"


@pytest.mark.parametrize(("hop", "seen"), [
    ("198.51.100.7:5678", "198.51.100.7"),
    ("[2001:db8::1]:443", "2001:db8::1"),
    ("2001:db8::1", "2001:db8::1"),
    ("unknown", None),
])
def test_forwarded_hops_with_ports(hop: str, seen: str | None) -> None:
    import ipaddress

    from authserver.web.middleware import client_address

    scope = {"type": "http", "client": ("127.0.0.1", 1),
             "headers": [(b"x-forwarded-for", hop.encode())]}
    assert client_address(scope, [ipaddress.ip_network("127.0.0.0/8")]) == seen


# -- concurrency on both stores ----------------------------------------------------------------


async def test_identical_registrations_racing_for_a_tokens_last_use_share_one_client(
    tmp_path: Path, database_url: str
) -> None:
    """All 20 get the one client: the idempotency key, not the token's use count, decides."""
    import concurrent.futures

    migrator = Database(database_url)
    migrator.migrate()
    migrator.dispose()
    settings = make_settings(tmp_path, database_url=database_url, scopes=SCOPES)
    async with running_app(settings) as h:
        iat = new_access_token(h, scopes=["read"], max_uses=1)
        origin = registration.Origin("198.51.100.7", iat)

        def attempt(_: int) -> dict[str, Any]:
            return remember_all(h.runtime.registrar.register(dict(MACHINE), origin).body)

        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            bodies = list(pool.map(attempt, range(20)))
        assert len({b["client_id"] for b in bodies}) == 1
        assert len({b["client_secret"] for b in bodies}) == 1
        with h.runtime.db.session() as session:
            assert len(session.scalars(select(Client)).all()) == 1
            assert session.scalars(select(InitialAccessToken)).one().uses == 1
