"""`authserver.resource` against a live authorization server: a resource server accepts a token,
then rejects it within the bound after revocation, a client change or deletion."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from joserfc import jws
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from authserver import clients
from authserver.resource import BearerAuthMiddleware, Settings, TokenError, Verifier
from tests import factories
from tests.conftest import LiveServer, start_live_server

pytestmark = pytest.mark.anyio
API = "https://api.example.com"
FAST = {"event_poll_interval": 0.1, "max_staleness": 30.0}


async def whoami(request: Request) -> JSONResponse:
    token = request.scope["state"]["access_token"]
    return JSONResponse({"client_id": token.client_id, "scope": sorted(token.scopes)})


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[LiveServer, Verifier, httpx.AsyncClient,
                                                        tuple[str, str]]]:
    live = start_live_server(tmp_path, cache=FAST, scopes=[{"name": "read"}, {"name": "write"}],
                             resources=[{"identifier": API, "scopes": ["read", "write"]}])
    owner, secret = factories.create_client(live.runtime, scopes=["read", "write"],
                                            resources=[API])
    feed_client, feed_secret = factories.create_client(live.runtime, name="api",
                                                       scopes=["revocation-feed"])
    assert secret and feed_secret
    verifier = Verifier(Settings(
        issuer=live.url, audience=API, feed_client_id=feed_client.client_id,
        feed_client_secret=feed_secret, poll_interval=0.1,
        resource_metadata=API + "/.well-known/oauth-protected-resource"))
    await verifier.start()
    app = BearerAuthMiddleware(Starlette(routes=[Route("/me", whoami)]), verifier, ["read"])
    api = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API)
    try:
        yield live, verifier, api, (owner.client_id, secret)
    finally:
        await api.aclose()
        await verifier.aclose()
        live.stop()


async def get_token(live: LiveServer, owner: tuple[str, str], **form: str) -> str:
    async with httpx.AsyncClient() as http:
        response = await http.post(live.url + "/token", auth=owner, data={
            "grant_type": "client_credentials", "resource": API, **form})
    assert response.status_code == 200, response.text
    token = factories.remember(response.json()["access_token"])
    assert token
    return token


async def call(api: httpx.AsyncClient, token: str) -> httpx.Response:
    return await api.get("/me", headers={"authorization": f"Bearer {token}"})


async def rejected_within(api: httpx.AsyncClient, token: str, seconds: float = 5.0) -> float:
    """How long until the resource server refuses the token (fails after `seconds`)."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if (await call(api, token)).status_code == 401:
            return time.monotonic() - start
        await anyio.sleep(0.05)
    raise AssertionError(f"the token was still accepted after {seconds} s")


async def introspect(live: LiveServer, owner: tuple[str, str], token: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        response = await http.post(live.url + "/introspect", auth=owner, data={"token": token})
    body: dict[str, Any] = response.json()
    return body


async def test_accepts_then_rejects_a_revoked_token(stack: Any) -> None:
    live, _, api, owner = stack
    token = await get_token(live, owner)
    ok = await call(api, token)
    assert ok.status_code == 200
    assert ok.json() == {"client_id": owner[0], "scope": ["read", "write"]}
    async with httpx.AsyncClient() as http:
        assert (await http.post(live.url + "/revoke", auth=owner,
                                data={"token": token})).status_code == 200
    assert await rejected_within(api, token) < 2.0
    assert await introspect(live, owner, token) == {"active": False}
    assert (await call(api, await get_token(live, owner))).status_code == 200


ClientChange = Callable[[Any, str, float], Awaitable[None] | None]


def narrow_scopes(session: Any, catalog: Any, client_id: str, now: float) -> None:
    clients.update_client(session, catalog, client_id, clients.ClientUpdate(scopes=("read",)),
                          now)


def change_allowlist(session: Any, catalog: Any, client_id: str, now: float) -> None:
    clients.update_client(session, catalog, client_id,
                          clients.ClientUpdate(ip_allow=("127.0.0.0/8",)), now)


def delete(session: Any, catalog: Any, client_id: str, now: float) -> None:
    clients.delete_client(session, client_id, now)


@pytest.mark.parametrize("change", [narrow_scopes, change_allowlist, delete])
async def test_client_changes_reach_the_resource_server(stack: Any, change: Any) -> None:
    live, _, api, owner = stack
    token = await get_token(live, owner)
    assert (await call(api, token)).status_code == 200
    await anyio.sleep(1.01)  # the change's cutoff is the next whole second after it
    with live.runtime.db.session(write=True) as session:  # as the CLI would, from outside
        change(session, live.runtime.catalog, owner[0], time.time())
    assert await rejected_within(api, token) < 2.0
    if change is not delete:
        # the server's own cache follows the log within cache.event_poll_interval
        for _ in range(40):
            if await introspect(live, owner, token) == {"active": False}:
                break
            await anyio.sleep(0.05)
        else:
            raise AssertionError("introspection still says active")
        fresh = await get_token(live, owner)
        assert (await call(api, fresh)).status_code == 200


async def test_challenges(stack: Any) -> None:
    live, verifier, api, owner = stack
    missing = await api.get("/me")
    assert missing.status_code == 401
    challenge = missing.headers["www-authenticate"]
    assert challenge.startswith('Bearer error="invalid_token"')
    assert f'resource_metadata="{API}/.well-known/oauth-protected-resource"' in challenge
    narrow = await get_token(live, owner, scope="write")
    forbidden = await call(api, narrow)
    assert forbidden.status_code == 403
    assert 'error="insufficient_scope"' in forbidden.headers["www-authenticate"]
    assert 'scope="read"' in forbidden.headers["www-authenticate"]
    with pytest.raises(TokenError, match="not meant for this resource"):
        await verifier.verify(await get_token_without_resource(live, owner))


async def get_token_without_resource(live: LiveServer, owner: tuple[str, str]) -> str:
    async with httpx.AsyncClient() as http:
        response = await http.post(live.url + "/token", auth=owner,
                                   data={"grant_type": "client_credentials"})
    token = factories.remember(response.json()["access_token"])
    assert token
    return token


async def test_fails_closed_when_the_feed_is_stale(stack: Any) -> None:
    live, verifier, _, owner = stack
    token = await get_token(live, owner)
    await verifier.verify(token)
    verifier.last_feed_ok = time.time() - verifier.settings.max_staleness - 1
    await verifier.aclose()  # no background poll to refresh it
    with pytest.raises(TokenError, match="Revocation status is unknown"):
        await verifier.verify(token)
    lenient = Verifier(Settings(issuer=live.url, audience=API, feed_client_id="x",
                                feed_client_secret="y", fail_closed=False))
    lenient.metadata, lenient._keys = verifier.metadata, verifier._keys
    lenient._keys_expire = time.time() + 60
    assert (await lenient.verify(token)).client_id == owner[0]
    await lenient.aclose()


async def test_malformed_and_tampered_tokens(stack: Any) -> None:
    """Each refusal has its own reason; nothing that is not our signed JSON object passes."""
    live, verifier, _, owner = stack
    token = await get_token(live, owner)
    header, payload, signature = token.split(".")
    signer = live.runtime.keyring.snapshot(live.runtime.clock.now()).signer
    assert signer is not None
    array = jws.serialize_compact({"alg": signer.alg, "typ": "at+jwt", "kid": signer.kid},
                                  b"[1, 2]", signer.key)
    cases = {
        "not a JWS": "not-a-token",
        "signature does not verify": f"{header}.{payload[:-2]}AA.{signature}",
        "typ is not at\\+jwt": signer.sign({"iss": live.url}, "JWT"),
        "payload is not a JSON object": array,
    }
    for reason, bad in cases.items():
        with pytest.raises(TokenError, match=reason):
            await verifier.verify(bad)
