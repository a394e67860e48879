"""Client ID Metadata Documents: real HTTP on 127.0.0.1 (no mocked fetch), an injected clock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import ECKey

from authserver.cimd import CimdRefused, MetadataDocuments, domain_permitted, is_document_url
from authserver.clock import FakeClock
from authserver.config import CimdSettings, Settings
from tests.conftest import make_settings
from tests.jwks_server import StaticServer

pytestmark = pytest.mark.anyio

PATH = "/oauth/client.json"


@pytest.fixture(scope="module")
def shared_web() -> Iterator[StaticServer]:
    with StaticServer() as server:  # one per module: its shutdown takes 0.5 s
        yield server


@pytest.fixture
def web(shared_web: StaticServer) -> StaticServer:
    shared_web.routes.clear()
    shared_web.hits.clear()
    return shared_web


def settings_for(tmp_path: Path, **cimd: Any) -> Settings:
    return make_settings(
        tmp_path, database_url=f"sqlite:///{tmp_path / 'unused.db'}",
        cimd={"allow_loopback": True, **cimd},
        scopes=[{"name": "openid"}, {"name": "profile"}, {"name": "email"},
                {"name": "portal-provision", "api_key_only": True}],
        resources=[{"identifier": "https://api.example.com/mcp"}],
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def documents(tmp_path: Path, clock: FakeClock) -> AsyncIterator[MetadataDocuments]:
    docs = MetadataDocuments(settings_for(tmp_path), clock)
    yield docs
    await docs.aclose()


def document(url: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"client_id": url, "client_name": "Example Agent",
                            "redirect_uris": ["http://127.0.0.1:33418/callback"]}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def serve(web: StaticServer, path: str = PATH, *, raw: bytes | None = None,
          status: int = 200, **fields: Any) -> str:
    """Put a document at `path` whose client_id is its own URL (unless `fields` say otherwise)."""
    url = web.url + path
    headers = {k.replace("_", "-"): v for k, v in fields.items() if k.startswith("cache")}
    body = raw if raw is not None else json.dumps(
        document(url, **{k: v for k, v in fields.items() if not k.startswith("cache")})).encode()
    web.put(path, body, status=status, **headers)
    return url


# -- a good document ---------------------------------------------------------------------------


async def test_a_good_document_becomes_a_client_record(
        web: StaticServer, documents: MetadataDocuments, clock: FakeClock) -> None:
    url = serve(web, redirect_uris=["https://agent.example/cb", "http://127.0.0.1:9/cb",
                                    "https://agent.example/cb"])
    assert documents.handles(url)
    record = await documents.client(url)
    assert record.client_id == url
    assert record.name == "Example Agent"
    assert record.redirect_uris == ("https://agent.example/cb", "http://127.0.0.1:9/cb")
    assert record.auth_method == "none" and record.public
    assert record.grant_types == ("authorization_code",)
    # [cimd] scopes (openid profile email offline_access) minus nothing api-key-only here
    assert record.scopes == frozenset({"openid", "profile", "email", "offline_access"})
    assert record.resources == frozenset({"https://api.example.com/mcp"})
    assert record.origin == "cimd" and record.org_id == "org_default"
    assert record.status == "active" and record.active
    assert record.jwks is None and record.jwks_uri is None and record.ip_allow == ()
    assert record.created_at == clock.now() and record.tokens_valid_after == 0.0
    # cached: no second fetch, and the checked record itself is reused
    assert await documents.client(url) is record
    assert web.hits[PATH] == 1


async def test_scope_narrows_and_api_key_only_scopes_are_never_granted(
        web: StaticServer, tmp_path: Path, clock: FakeClock) -> None:
    docs = MetadataDocuments(settings_for(
        tmp_path, scopes=["openid", "email", "portal-provision"]), clock)
    try:
        assert docs.scopes == frozenset({"openid", "email"})
        url = serve(web, scope="openid profile portal-provision")
        assert (await docs.client(url)).scopes == frozenset({"openid"})
        url = serve(web, "/wide.json", scope=None)
        assert (await docs.client(url)).scopes == frozenset({"openid", "email"})
    finally:
        await docs.aclose()


async def test_refresh_token_grant_and_private_key_jwt(
        web: StaticServer, documents: MetadataDocuments) -> None:
    jwk = ECKey.generate_key("P-256").as_dict(private=False)
    url = serve(web, grant_types=["authorization_code", "refresh_token"],
                response_types=["code"], token_endpoint_auth_method="private_key_jwt",
                jwks={"keys": [jwk]})
    record = await documents.client(url)
    assert record.grant_types == ("authorization_code", "refresh_token")
    assert record.auth_method == "private_key_jwt" and not record.public
    assert record.jwks == {"keys": [jwk]}
    url = serve(web, "/by-uri.json", token_endpoint_auth_method="private_key_jwt",
                jwks_uri="https://agent.example/jwks.json")
    assert (await documents.client(url)).jwks_uri == "https://agent.example/jwks.json"


# -- documents that are refused ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"client_id": "https://other.example/client.json"}, "client_id must equal the URL"),
        ({"client_name": None}, "client_name is required"),
        ({"client_name": "  "}, "client_name is required"),
        ({"client_name": "x" * 201}, "at most 200"),
        ({"redirect_uris": None}, "redirect_uris is required"),
        ({"redirect_uris": []}, "redirect_uris is required"),
        ({"redirect_uris": "https://agent.example/cb"}, "redirect_uris is required"),
        ({"redirect_uris": ["http://agent.example/cb"]}, "must use https"),
        ({"redirect_uris": ["https://agent.example/cb#x"]}, "fragment"),
        ({"redirect_uris": ["/relative"]}, "absolute"),
        ({"token_endpoint_auth_method": "client_secret_basic"}, "needs a shared secret"),
        ({"token_endpoint_auth_method": "client_secret_post"}, "needs a shared secret"),
        ({"token_endpoint_auth_method": "tls_client_auth"}, "must be none or private_key_jwt"),
        ({"client_secret": "s3cret"}, "must not carry a client secret"),
        ({"token_endpoint_auth_method": "private_key_jwt"}, "needs the client's public keys"),
        ({"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": []}}, "jwks"),
        ({"token_endpoint_auth_method": "private_key_jwt",
          "jwks_uri": "https://a.example/j", "jwks": {"keys": [{}]}}, "not both"),
        ({"grant_types": ["client_credentials"]}, "client_credentials is not available"),
        ({"grant_types": ["authorization_code", "client_credentials"]},
         "client_credentials is not available"),
        ({"grant_types": ["refresh_token"]}, "must include authorization_code"),
        ({"grant_types": "authorization_code"}, "list of strings"),
        ({"response_types": ["token"]}, 'response_types must be \\["code"\\]'),
        ({"scope": ["openid"]}, "space-separated string"),
    ],
)
async def test_invalid_documents_are_refused(
        web: StaticServer, documents: MetadataDocuments, fields: dict[str, Any],
        message: str) -> None:
    url = serve(web, **fields)
    with pytest.raises(CimdRefused, match=message) as refused:
        await documents.client(url)
    assert str(refused.value).startswith(f"The client metadata document at {url} is not valid")


async def test_client_id_must_match_exactly(
        web: StaticServer, documents: MetadataDocuments) -> None:
    url = web.url + PATH
    web.put(PATH, json.dumps(document(url + "?")).encode())
    with pytest.raises(CimdRefused, match="client_id must equal"):
        await documents.client(url)
    web.put("/case.json", json.dumps(document(web.url + "/CASE.json")).encode())
    with pytest.raises(CimdRefused, match="client_id must equal"):
        await documents.client(web.url + "/case.json")


@pytest.mark.parametrize(("body", "message"), [
    (b"<html>", "not JSON"), (b"[1, 2]", "not a JSON object"),
])
async def test_non_json_answers_are_refused(
        web: StaticServer, documents: MetadataDocuments, body: bytes, message: str) -> None:
    url = serve(web, raw=body)
    with pytest.raises(CimdRefused, match=f"could not be fetched: response is {message}"):
        await documents.client(url)


async def test_an_oversized_document_is_refused(
        web: StaticServer, tmp_path: Path, clock: FakeClock) -> None:
    docs = MetadataDocuments(settings_for(tmp_path, max_bytes=1024), clock)
    try:
        small = serve(web, "/small.json", client_name="x" * 100)
        assert (await docs.client(small)).name == "x" * 100
        big = serve(web, "/big.json", logo_uri="https://agent.example/" + "x" * 1100)
        with pytest.raises(CimdRefused, match="larger than 1024 bytes"):
            await docs.client(big)
    finally:
        await docs.aclose()


async def test_a_redirect_is_not_followed(
        web: StaticServer, documents: MetadataDocuments) -> None:
    target = serve(web, "/target.json")
    web.put(PATH, b"", status=302, location=target)
    with pytest.raises(CimdRefused, match="redirects are not followed"):
        await documents.client(web.url + PATH)
    assert web.hits[PATH] == 1
    assert "/target.json" not in web.hits


async def test_an_error_answer_is_refused_and_the_failure_cached(
        web: StaticServer, documents: MetadataDocuments, clock: FakeClock) -> None:
    url = web.url + PATH
    with pytest.raises(CimdRefused, match="answered HTTP 404"):
        await documents.client(url)
    serve(web)
    with pytest.raises(CimdRefused, match="answered HTTP 404"):
        await documents.client(url)  # a failure is remembered for 30 s
    assert web.hits[PATH] == 1
    clock.advance(31)
    assert (await documents.client(url)).client_id == url
    assert web.hits[PATH] == 2


# -- URL syntax, addresses and the domain policy (refused before any fetch) ---------------------


@pytest.mark.parametrize(("url", "loopback", "ok"), [
    ("https://agent.example/client.json", False, True),
    ("https://agent.example:8443/oauth/client?v=1", False, True),
    ("http://agent.example/client.json", False, False),
    ("http://127.0.0.1:8000/client.json", True, True),
    ("https://agent.example", False, False),
    ("https://agent.example/", False, False),
    ("https://agent.example/client.json#frag", False, False),
    ("https://user@agent.example/client.json", False, False),
    ("https://user:pw@agent.example/client.json", False, False),
    ("https://agent.example/a/../client.json", False, False),
    ("https://agent.example/a/./client.json", False, False),
    ("https://agent.example/a/%2E%2e/client.json", False, False),
    ("https://agent.example/client json", False, False),
    ("https://agent.example:99999/client.json", False, False),
    ("ftp://agent.example/client.json", True, False),
    ("my-registered-client", True, False),
    ("https:///client.json", False, False),
])
def test_document_url_syntax(url: str, loopback: bool, ok: bool) -> None:
    assert is_document_url(url, allow_loopback=loopback) is ok


async def test_handles_follows_the_settings(tmp_path: Path, clock: FakeClock) -> None:
    off = MetadataDocuments(settings_for(tmp_path, enabled=False), clock)
    assert not off.handles("https://agent.example/client.json")
    with pytest.raises(CimdRefused, match="does not accept URLs"):
        await off.client("https://agent.example/client.json")
    strict = MetadataDocuments(settings_for(tmp_path, allow_loopback=False), clock)
    assert strict.handles("https://agent.example/client.json")
    assert not strict.handles("http://127.0.0.1:8000/client.json")
    assert not strict.handles("client-123")


async def test_loopback_and_http_are_refused_without_the_development_setting(
        web: StaticServer, tmp_path: Path, clock: FakeClock) -> None:
    docs = MetadataDocuments(settings_for(tmp_path, allow_loopback=False), clock)
    try:
        http_url = serve(web)
        with pytest.raises(CimdRefused, match="not a valid client metadata document URL"):
            await docs.client(http_url)
        https_loopback = http_url.replace("http://", "https://")
        with pytest.raises(CimdRefused, match="may not be fetched"):
            await docs.client(https_loopback)
        with pytest.raises(CimdRefused, match="may not be fetched"):
            await docs.client("https://10.1.2.3/client.json")
        assert web.hits == {}  # nothing reached the server
    finally:
        await docs.aclose()


@pytest.mark.parametrize("url", [
    "http://10.0.0.1/client.json", "http://169.254.169.254/latest/client.json",
    "http://192.168.1.1:8080/client.json", "https://[fd00::1]/client.json",
])
async def test_private_addresses_are_refused_even_in_development(
        documents: MetadataDocuments, url: str) -> None:
    with pytest.raises(CimdRefused, match="may not be fetched"):
        await asyncio.wait_for(documents.client(url), 2)  # refused, not a connect timeout


@pytest.mark.parametrize(("host", "allow", "deny", "ok"), [
    ("agent.example", [], [], True),
    ("agent.example", [], ["agent.example"], False),
    ("AGENT.example.", [], ["agent.example"], False),
    ("a.b.agent.example", [], ["*.agent.example"], False),
    ("agent.example", [], ["*.agent.example"], True),  # "*." covers subdomains only
    ("evilagent.example", [], ["*.agent.example"], True),
    ("agent.example", ["agent.example"], [], True),
    ("other.example", ["agent.example"], [], False),
    ("x.agent.example", ["*.agent.example"], [], True),
    ("x.agent.example", ["*.agent.example"], ["x.agent.example"], False),  # deny wins
    ("::1", ["[::1]"], [], True),
])
def test_domain_policy(host: str, allow: list[str], deny: list[str], ok: bool) -> None:
    cimd = CimdSettings(allow_domains=allow, deny_domains=deny)
    assert domain_permitted(host, cimd) is ok


async def test_domain_policy_end_to_end(
        web: StaticServer, tmp_path: Path, clock: FakeClock) -> None:
    url = serve(web)
    for policy in ({"deny_domains": ["127.0.0.1"]}, {"allow_domains": ["localhost"]},
                   {"allow_domains": ["*.example.com"], "deny_domains": []}):
        docs = MetadataDocuments(settings_for(tmp_path, **policy), clock)
        with pytest.raises(CimdRefused, match=r"does not accept client metadata documents "
                                              r"from 127\.0\.0\.1"):
            await docs.client(url)
    assert web.hits == {}
    allowed = MetadataDocuments(settings_for(tmp_path, allow_domains=["127.0.0.1"]), clock)
    assert (await allowed.client(url)).client_id == url
    assert web.hits[PATH] == 1


# -- caching -----------------------------------------------------------------------------------


async def test_max_age_is_honoured_and_a_changed_document_is_seen_after_it(
        web: StaticServer, documents: MetadataDocuments, clock: FakeClock) -> None:
    url = serve(web, cache_control="max-age=120")
    assert (await documents.client(url)).name == "Example Agent"
    serve(web, client_name="Renamed Agent", cache_control="max-age=120")
    clock.advance(119)
    assert (await documents.client(url)).name == "Example Agent"
    assert web.hits[PATH] == 1
    clock.advance(2)
    assert (await documents.client(url)).name == "Renamed Agent"
    assert web.hits[PATH] == 2


async def test_cache_lifetime_is_bounded(
        web: StaticServer, tmp_path: Path, clock: FakeClock) -> None:
    docs = MetadataDocuments(settings_for(
        tmp_path, min_cache_seconds=60, max_cache_seconds=100), clock)
    try:
        short = serve(web, "/short.json", cache_control="max-age=5")
        long = serve(web, "/long.json", cache_control="public, max-age=999999")
        await docs.client(short)
        await docs.client(long)
        clock.advance(59)
        await docs.client(short)  # the floor: 60 s, not 5
        assert web.hits["/short.json"] == 1
        clock.advance(2)
        await docs.client(short)
        assert web.hits["/short.json"] == 2
        clock.advance(38)  # 99 s after the first fetch
        await docs.client(long)
        assert web.hits["/long.json"] == 1
        clock.advance(2)
        await docs.client(long)  # the ceiling: 100 s, not 999999
        assert web.hits["/long.json"] == 2
    finally:
        await docs.aclose()


async def test_no_store_is_fetched_again_once_the_floor_has_passed(
        web: StaticServer, tmp_path: Path, clock: FakeClock) -> None:
    strict = MetadataDocuments(settings_for(tmp_path, min_cache_seconds=0), clock)
    try:
        url = serve(web, cache_control="no-store")
        await strict.client(url)
        await strict.client(url)
        assert web.hits[PATH] == 2  # min_cache_seconds = 0: no-store is honoured exactly
    finally:
        await strict.aclose()
    floored = MetadataDocuments(settings_for(tmp_path, min_cache_seconds=60), clock)
    try:
        await floored.client(url)
        clock.advance(59)
        await floored.client(url)
        assert web.hits[PATH] == 3  # the floor applies to no-store too
        clock.advance(2)
        await floored.client(url)
        assert web.hits[PATH] == 4
    finally:
        await floored.aclose()


async def test_concurrent_lookups_fetch_once(
        web: StaticServer, documents: MetadataDocuments) -> None:
    url = serve(web)
    records = await asyncio.gather(*(documents.client(url) for _ in range(10)))
    assert all(r is records[0] for r in records)
    assert web.hits[PATH] == 1
