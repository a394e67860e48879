"""Discovery documents: issuer exactness, only working endpoints advertised, JWKS caching."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import AppHarness, make_settings, running_app

pytestmark = pytest.mark.anyio
DOCS = ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]
# How each advertised endpoint is meant to be called, and what a bare call must answer.
EXPECTED = {
    "token_endpoint": ("POST", {400, 401}),
    "authorization_endpoint": ("GET", {400}),
    "jwks_uri": ("GET", {200}),
    "registration_endpoint": ("POST", {400}),
    "revocation_endpoint": ("POST", {400}),
    "introspection_endpoint": ("POST", {400}),
    "security_event_poll_endpoint": ("POST", {401}),
    "userinfo_endpoint": ("GET", {401}),
}


async def test_issuer_is_exactly_the_configured_url(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, issuer="https://auth.example.com:8443")
    async with running_app(settings) as h:
        for path in DOCS:
            doc = (await h.http.get(path)).json()
            assert doc["issuer"] == "https://auth.example.com:8443"
            assert doc["token_endpoint"] == "https://auth.example.com:8443/token"


async def test_every_advertised_url_answers(harness: AppHarness) -> None:
    issuer = harness.settings.issuer
    for path in DOCS:
        response = await harness.http.get(path)
        assert response.status_code == 200
        doc = response.json()
        urls = {k: v for k, v in doc.items() if isinstance(v, str) and v.startswith("http")
                and k != "issuer"}
        assert set(urls) == set(EXPECTED), urls
        for member, url in urls.items():
            method, statuses = EXPECTED[member]
            assert url.startswith(issuer)
            answer = await harness.http.request(method, url.removeprefix(issuer))
            assert answer.status_code in statuses, (member, answer.status_code)
        assert doc["grant_types_supported"] == ["authorization_code", "client_credentials",
                                                "refresh_token"]
        assert doc["response_types_supported"] == ["code"]
        assert doc["code_challenge_methods_supported"] == ["S256"]
        assert doc["authorization_response_iss_parameter_supported"] is True
        assert doc["client_id_metadata_document_supported"] is True
        assert "private_key_jwt" in doc["token_endpoint_auth_methods_supported"]
        assert "none" in doc["token_endpoint_auth_methods_supported"]


async def test_people_flows_switched_off_are_not_advertised(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, authorization={"enabled": False})
    async with running_app(settings) as h:
        doc = (await h.http.get(DOCS[0])).json()
        assert doc["grant_types_supported"] == ["client_credentials"]
        assert doc["response_types_supported"] == []
        assert "userinfo_endpoint" not in doc and "none" not in \
            doc["token_endpoint_auth_methods_supported"]
        for path in ("/userinfo", "/login", "/account"):
            assert (await h.http.get(path)).status_code == 404
        response = await h.http.get("/authorize?response_type=code&client_id=x")
        assert response.json()["error"] == "unsupported_response_type"


async def test_protected_resource_metadata(harness: AppHarness) -> None:
    doc = (await harness.http.get("/.well-known/oauth-protected-resource")).json()
    assert doc["resource"] == harness.settings.issuer
    assert doc["authorization_servers"] == [harness.settings.issuer]
    # every URL it names answers, and each authorization server publishes its metadata
    for server in doc["authorization_servers"]:
        path = server.removeprefix(harness.settings.issuer)
        metadata = await harness.http.get(path + "/.well-known/oauth-authorization-server")
        assert metadata.status_code == 200
        assert metadata.json()["issuer"] == server
    assert not [v for v in doc.values() if isinstance(v, str) and v.startswith("http")
                and v != doc["resource"]]


async def test_scopes_supported_hides_api_key_only_scopes(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, scopes=[
        {"name": "read", "description": "Read"},
        {"name": "portal-provision", "api_key_only": True}])
    async with running_app(settings) as h:
        doc = (await h.http.get(DOCS[0])).json()
        # The catalog's OAuth scopes, and the identity scopes people grant (OpenID Connect).
        assert doc["scopes_supported"] == ["email", "offline_access", "openid", "profile",
                                           "read"]


async def test_jwks_has_etag_and_cache_control(harness: AppHarness) -> None:
    first = await harness.http.get("/.well-known/jwks.json")
    assert first.headers["cache-control"] == "public, max-age=300"
    etag = first.headers["etag"]
    again = await harness.http.get("/.well-known/jwks.json", headers={"if-none-match": etag})
    assert again.status_code == 304
    assert again.content == b""
    for key in first.json()["keys"]:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)


async def test_unknown_paths_and_methods_use_the_error_envelope(harness: AppHarness) -> None:
    missing = await harness.http.get("/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert missing.json()["error"]["request_id"] == missing.headers["x-request-id"]
    wrong = await harness.http.get("/token")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


def test_request_ids_restart_in_a_forked_child() -> None:
    from authserver.web import middleware

    before = middleware._ID_PREFIX
    middleware._new_id_sequence()  # what os.register_at_fork runs in the child
    assert before != middleware._ID_PREFIX
    assert next(middleware._ID_COUNTER) == 1
