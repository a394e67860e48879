"""RFC 7591 registration and RFC 7592 management over a real socket: an openid-client-style
flow with authlib, the MCP SDK's registration helpers, concurrent registrations on SQLite and
PostgreSQL, the per-address rate limit and hostile input."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import jwt
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client
from mcp.client.auth.oauth2 import check_registration_usable
from mcp.client.auth.utils import create_client_registration_request, handle_registration_response
from mcp.shared.auth import OAuthClientMetadata, OAuthMetadata
from pydantic import AnyUrl
from sqlalchemy import func, select, text

from authserver import registration
from authserver.storage.db import Database
from authserver.storage.models import Client, ClientRegistration, InitialAccessToken
from tests import factories
from tests.conftest import LiveServer, start_live_server

pytestmark = pytest.mark.anyio
SCOPES = [{"name": "read"}, {"name": "write"}]
OPEN = {"open_scopes": ["read", "write"], "rate_limit": "1000/minute"}
MACHINE = {"client_name": "agent", "grant_types": ["client_credentials"], "scope": "read",
           "token_endpoint_auth_method": "client_secret_basic"}
SECRETS = ("client_secret", "registration_access_token", "access_token")
N = 20


# -- helpers -----------------------------------------------------------------------------------


@contextmanager
def serving(tmp_path: Path, database_url: str | None = None,
            **overrides: Any) -> Iterator[LiveServer]:
    """A live server with the registration scopes; PostgreSQL is migrated first, as an
    operator would (`serve` refuses pending migrations there)."""
    if database_url and not database_url.startswith("sqlite"):
        db = Database(database_url)
        db.migrate()
        db.dispose()
    overrides.setdefault("registration", OPEN)
    live = start_live_server(tmp_path, database_url=database_url, scopes=SCOPES, **overrides)
    try:
        yield live
    finally:
        live.stop()


def remember_all(body: dict[str, Any]) -> dict[str, Any]:
    for member in SECRETS:
        factories.remember(body.get(member))
    return body


def failure(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def forwarded(addresses: str) -> dict[str, str]:
    return {"x-forwarded-for": addresses}


async def register(http: httpx.AsyncClient, live: LiveServer, body: dict[str, Any],
                   headers: dict[str, str] | None = None) -> httpx.Response:
    response = await http.post(live.url + "/register", json=body, headers=headers)
    if response.status_code == 201:
        remember_all(response.json())
    return response


async def token(http: httpx.AsyncClient, live: LiveServer, client_id: str,
                secret: str) -> httpx.Response:
    response = await http.post(live.url + "/token", data={"grant_type": "client_credentials"},
                               auth=(client_id, secret))
    if response.status_code == 200:
        remember_all(response.json())
    return response


async def authlib_token(live: LiveServer, client_id: str, secret: str) -> dict[str, Any]:
    async with AsyncOAuth2Client(client_id, secret, timeout=10,
                                 token_endpoint_auth_method="client_secret_basic") as client:
        issued = await client.fetch_token(live.url + "/token", grant_type="client_credentials")
    return remember_all(dict(issued))


def rows(live: LiveServer) -> tuple[int, int]:
    """How many clients and registrations the store holds."""
    with live.runtime.db.session() as session:
        clients = session.scalar(select(func.count()).select_from(Client))
        registrations = session.scalar(select(func.count()).select_from(ClientRegistration))
    return clients or 0, registrations or 0


def initial_access_token(live: LiveServer, max_uses: int) -> tuple[str, str]:
    """A new initial access token for scope read: its id and the token."""
    with live.runtime.db.session(write=True) as session:
        new = registration.create_access_token(session, live.runtime.catalog, time.time(),
                                               scopes=["read"], max_uses=max_uses)
    return new.view.id, str(factories.remember(new.token))


async def lock_waiters(live: LiveServer, count: int) -> None:
    """Until `count` transactions wait for a row lock (PostgreSQL; SQLite queues anyway)."""
    if live.runtime.db.url.get_backend_name() == "sqlite":
        await asyncio.sleep(0.5)
        return
    query = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                 "AND datname = current_database()")
    deadline = time.monotonic() + 10
    while True:
        with live.runtime.db.session() as session:  # a new snapshot of the activity view
            if (session.scalar(query) or 0) >= count:
                return
        assert time.monotonic() < deadline, "the registrations never queued"
        await asyncio.sleep(0.02)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


# -- an openid-client-style client, and authlib ------------------------------------------------


async def test_discover_register_use_update_rotate_delete(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    with serving(tmp_path) as live:
        docs = [(await http.get(live.url + path)).json() for path in
                ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")]
        assert [d["issuer"] for d in docs] == [live.url] * 2
        endpoint = docs[0]["registration_endpoint"]
        assert [d["registration_endpoint"] for d in docs] == [live.url + "/register"] * 2

        created = await http.post(endpoint, json=MACHINE)
        assert created.status_code == 201, created.text
        assert created.headers["cache-control"] == "no-store"
        body = remember_all(created.json())
        client_id, secret, rat = (body["client_id"], body["client_secret"],
                                  body["registration_access_token"])
        assert abs(body["client_id_issued_at"] - time.time()) < 60
        assert body["client_secret_expires_at"] == 0
        assert body["registration_client_uri"] == f"{endpoint}/{client_id}"
        assert body["scope"] == "read"
        uri = body["registration_client_uri"]

        issued = await authlib_token(live, client_id, secret)
        assert issued["token_type"].lower() == "bearer"
        assert issued["scope"] == "read"

        read = await http.get(uri, headers=bearer(rat))
        assert read.status_code == 200
        assert read.headers["cache-control"] == "no-store"
        current = read.json()
        assert "client_secret" not in current
        assert current["client_id"] == client_id
        assert current["registration_access_token"] == rat

        # RFC 7592 §2.2: the client sends back what it read, changed, plus the extension.
        updated = await http.put(uri, headers=bearer(rat), json={
            **current, "client_name": "renamed agent", "rotate_client_secret": True})
        assert updated.status_code == 200, updated.text
        new = remember_all(updated.json())
        assert new["client_name"] == "renamed agent"
        assert new["client_secret"].startswith("ascs_")
        assert new["client_secret"] != secret
        assert (await authlib_token(live, client_id, new["client_secret"]))["scope"] == "read"
        old = await token(http, live, client_id, secret)
        assert failure(old) == (401, "invalid_client")
        assert (await http.get(uri, headers=bearer(rat))).json()["client_name"] == "renamed agent"

        deleted = await http.delete(uri, headers=bearer(rat))
        assert deleted.status_code == 204
        refused = await token(http, live, client_id, new["client_secret"])
        assert failure(refused) == (401, "invalid_client")
        gone = await http.get(uri, headers=bearer(rat))
        assert failure(gone) == (401, "invalid_token")
        assert gone.headers["www-authenticate"].startswith("Bearer ")
        assert rows(live) == (0, 0)


# -- the MCP SDK's registration helpers --------------------------------------------------------


async def mcp_register(live: LiveServer, metadata: OAuthClientMetadata) -> Any:
    """What the SDK's auth flow does: discovery, the helper's request, its parser, its check."""
    async with httpx2.AsyncClient(timeout=10) as client:
        discovered = await client.get(live.url + "/.well-known/oauth-authorization-server")
        server = OAuthMetadata.model_validate(discovered.json())
        request = create_client_registration_request(server, metadata, live.url)
        assert str(request.url) == live.url + "/register"
        response = await client.send(request)
        info = await handle_registration_response(response)
    assert response.status_code == 201
    remember_all(response.json())
    check_registration_usable(info)
    return info


@pytest.mark.parametrize("method", ["none", "client_secret_post"])
async def test_mcp_desktop_agent_registers(
    tmp_path: Path, http: httpx.AsyncClient, method: str
) -> None:
    metadata = OAuthClientMetadata(
        client_name="MCP desktop agent", redirect_uris=[AnyUrl("http://localhost:3030/callback")],
        grant_types=["authorization_code", "refresh_token"], token_endpoint_auth_method=method,
        application_type="native",
    )
    with serving(tmp_path) as live:
        info = await mcp_register(live, metadata)
        assert info.token_endpoint_auth_method == method
        assert info.redirect_uris == [AnyUrl("http://localhost:3030/callback")]
        assert info.grant_types == ["authorization_code", "refresh_token"]
        assert info.response_types == ["code"]
        assert info.application_type == "native"
        assert info.scope == "read write"  # the open ceiling
        if method == "none":
            assert info.client_secret is None
            assert info.client_secret_expires_at is None
            return
        assert info.client_secret is not None
        # The secret authenticates (unauthorized_client, not invalid_client: no such grant).
        used = await http.post(live.url + "/token", data={
            "grant_type": "client_credentials", "client_id": info.client_id,
            "client_secret": info.client_secret})
        assert failure(used) == (400, "unauthorized_client")


async def test_mcp_machine_agent_registers_and_gets_token(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    metadata = OAuthClientMetadata(
        client_name="MCP machine agent", redirect_uris=None, grant_types=["client_credentials"],
        response_types=[], token_endpoint_auth_method="client_secret_basic", scope="write",
    )
    mcp_server = "https://mcp.example.com/mcp"
    with serving(tmp_path, resources=[{"identifier": mcp_server, "scopes": ["write"]}]) as live:
        info = await mcp_register(live, metadata)
        assert info.client_secret is not None
        assert info.scope == "write"
        issued = await token(http, live, info.client_id, info.client_secret)
        assert issued.status_code == 200, issued.text
        assert issued.json()["scope"] == "write"
        # what the MCP SDK's client-credentials provider sends: RFC 8707 resource → aud
        for_server = await http.post(live.url + "/token", auth=(info.client_id,
                                     info.client_secret), data={
            "grant_type": "client_credentials", "resource": mcp_server})
        assert for_server.status_code == 200, for_server.text
        access = factories.remember(for_server.json()["access_token"])
        assert access is not None
        claims = jwt.decode(access, options={"verify_signature": False})
        assert claims["aud"] == mcp_server


# -- concurrency, on SQLite and PostgreSQL -----------------------------------------------------


async def test_concurrent_distinct_registrations(
    tmp_path: Path, database_url: str, http: httpx.AsyncClient
) -> None:
    with serving(tmp_path, database_url) as live:
        answers = await asyncio.gather(*(
            register(http, live, {**MACHINE, "client_name": f"agent {i}"}) for i in range(N)))
        assert [a.status_code for a in answers] == [201] * N
        bodies = [a.json() for a in answers]
        assert len({b["client_id"] for b in bodies}) == N
        for i, body in enumerate(bodies):
            issued = await token(http, live, body["client_id"], body["client_secret"])
            assert issued.status_code == 200, issued.text
            read = await http.get(body["registration_client_uri"],
                                  headers=bearer(body["registration_access_token"]))
            assert read.status_code == 200
            assert read.json()["client_name"] == f"agent {i}"
        assert rows(live) == (N, N)


async def test_concurrent_identical_registrations_make_one_client(
    tmp_path: Path, database_url: str, http: httpx.AsyncClient
) -> None:
    with serving(tmp_path, database_url) as live:
        answers = await asyncio.gather(*(register(http, live, MACHINE) for _ in range(N)))
        assert [a.status_code for a in answers] == [201] * N, answers[-1].text
        bodies = [a.json() for a in answers]
        assert len({b["client_id"] for b in bodies}) == 1
        assert len({b["client_secret"] for b in bodies}) == 1
        assert len({b["registration_access_token"] for b in bodies}) == 1
        issued = await token(http, live, bodies[0]["client_id"], bodies[0]["client_secret"])
        assert issued.status_code == 200, issued.text
        assert rows(live) == (1, 1)


async def test_concurrent_registrations_share_initial_token_uses(
    tmp_path: Path, database_url: str, http: httpx.AsyncClient
) -> None:
    with serving(tmp_path, database_url, registration={"policy": "initial_access_token"}) as live:
        token_id, iat = initial_access_token(live, max_uses=5)
        answers = await asyncio.gather(*(
            register(http, live, {**MACHINE, "client_name": f"agent {i}"}, headers=bearer(iat))
            for i in range(N)))
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [201] * 5 + [401] * (N - 5)
        assert {a.json()["error"] for a in answers if a.status_code == 401} == {"invalid_token"}
        assert all(a.headers["www-authenticate"].startswith("Bearer ")
                   for a in answers if a.status_code == 401)
        assert rows(live) == (5, 5)
        with live.runtime.db.session() as session:
            assert session.scalar(select(InitialAccessToken.uses).filter_by(id=token_id)) == 5


async def test_concurrent_identical_registrations_on_last_initial_token_use(
    tmp_path: Path, database_url: str, http: httpx.AsyncClient
) -> None:
    """The losers of the race replay the winner's client instead of racing it for the last
    use (they used to get 401 on PostgreSQL)."""
    with serving(tmp_path, database_url, registration={"policy": "initial_access_token"}) as live:
        token_id, iat = initial_access_token(live, max_uses=1)
        # Hold the token's row until all ten queue behind it, so they really overlap.
        with live.runtime.db.session(write=True) as session:
            session.execute(select(InitialAccessToken).filter_by(id=token_id).with_for_update())
            racing = asyncio.gather(*(
                register(http, live, MACHINE, headers=bearer(iat)) for _ in range(10)))
            await lock_waiters(live, 10)
        answers = await racing
        assert [a.status_code for a in answers] == [201] * 10
        assert len({a.json()["client_id"] for a in answers}) == 1
        assert rows(live) == (1, 1)


# -- the open registration rate limit ----------------------------------------------------------


async def test_rate_limit_answers_429_and_ignores_untrusted_forwarded_for(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    with serving(tmp_path,
                 registration={**OPEN, "rate_limit": "3/minute"}) as live:
        for i in range(3):
            ok = await register(http, live, {**MACHINE, "client_name": f"a{i}"},
                                headers=forwarded(f"203.0.113.{i}"))
            assert ok.status_code == 201, ok.text
        limited = await register(http, live, MACHINE, headers=forwarded("198.51.100.9"))
        retry_after = limited.headers["retry-after"]
        assert retry_after.isdigit()
        assert 1 <= int(retry_after) <= 60
        assert failure(limited) == (429, "too_many_requests")
        assert limited.json()["retry_after"] == int(retry_after)
        with live.runtime.db.session() as session:
            sources = set(session.scalars(select(ClientRegistration.source_address)))
        assert sources == {"127.0.0.1"}


async def test_rate_limit_per_forwarded_address_behind_trusted_proxy(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    with serving(tmp_path, registration={**OPEN, "rate_limit": "3/minute"},
                 server={"trusted_proxies": ["127.0.0.0/8"]}) as live:
        for i in range(3):
            ok = await register(http, live, {**MACHINE, "client_name": f"a{i}"},
                                headers=forwarded("203.0.113.1"))
            assert ok.status_code == 201, ok.text
        limited = await register(http, live, MACHINE, headers=forwarded("203.0.113.1"))
        assert limited.status_code == 429
        other = await register(http, live, MACHINE, headers=forwarded("10.9.8.7, 203.0.113.2"))
        assert other.status_code == 201, other.text
        with live.runtime.db.session() as session:
            source = session.get(ClientRegistration, other.json()["client_id"])
            assert source is not None
            assert source.source_address == "203.0.113.2"


# -- hostile input -----------------------------------------------------------------------------


async def test_oversized_and_malformed_bodies_are_4xx(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    with serving(tmp_path) as live:
        limit = live.settings.server.max_body_bytes
        big = b'{"client_name": "' + b"x" * limit + b'"}'

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: read until too much
            for start in range(0, len(big), 8192):
                yield big[start:start + 8192]

        json_type = {"content-type": "application/json"}
        for content in (big, chunks()):
            too_big = await http.post(live.url + "/register", content=content,
                                      headers=json_type)
            assert failure(too_big) == (413, "invalid_request")
        for raw in (b'{"client_name": ', b'{"client_name": "\xff\xfe"}', b"\xff" * 10):
            bad = await http.post(live.url + "/register", content=raw, headers=json_type)
            assert failure(bad) == (400, "invalid_client_metadata"), raw
            assert bad.headers["cache-control"] == "no-store"
        assert rows(live) == (0, 0)
        assert (await register(http, live, MACHINE)).status_code == 201  # still serving


async def test_json_nested_within_orjson_limit_is_not_500(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    """orjson accepts nesting up to 1024 deep: refuse it (400) or ignore the member (201)."""
    depth = 1020
    raw = b'{"grant_types": ["client_credentials"], "x": ' + b"[" * depth + b"]" * depth + b"}"
    with serving(tmp_path) as live:
        answer = await http.post(live.url + "/register", content=raw,
                                 headers={"content-type": "application/json"})
        if answer.status_code == 201:
            remember_all(answer.json())
        assert answer.status_code in (201, 400), answer.text


async def test_nul_in_client_id_is_invalid_token_not_503(
    tmp_path: Path, database_url: str, http: httpx.AsyncClient
) -> None:
    """psycopg refuses NUL in a text parameter; that used to be a 503 on PostgreSQL."""
    with serving(tmp_path, database_url) as live:
        rat = (await register(http, live, MACHINE)).json()["registration_access_token"]
        for method in ("GET", "PUT", "DELETE"):
            answer = await http.request(method, live.url + "/register/cli_%00",
                                        headers=bearer(rat), json=MACHINE)
            assert failure(answer) == (401, "invalid_token"), (method, answer.text)
