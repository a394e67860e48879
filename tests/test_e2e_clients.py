"""End to end over a real socket: Authlib's httpx client obtains tokens, PyJWT verifies them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import OAuth2Client

from tests import factories
from tests.conftest import LiveServer, start_live_server

API = "https://api.example.test/v1"


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    server = start_live_server(
        tmp_path, resources=[{"identifier": API, "scopes": ["read", "write"]}]
    )
    try:
        yield server
    finally:
        server.stop()


def fetch(live: LiveServer, method: str, client_id: str, secret: str, **params: Any) -> Any:
    with OAuth2Client(client_id, secret, token_endpoint_auth_method=method,
                      timeout=10) as client:
        token = client.fetch_token(live.url + "/token", grant_type="client_credentials",
                                   **params)
    factories.remember(token["access_token"])
    return token


def verify(live: LiveServer, access_token: str, audience: str) -> dict[str, Any]:
    """What an RFC 9068 resource server does: key from the JWKS by kid, then every claim."""
    header = jwt.get_unverified_header(access_token)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "RS256"
    jwks = jwt.PyJWKClient(live.url + "/.well-known/jwks.json", cache_keys=True, timeout=10)
    key = jwks.get_signing_key_from_jwt(access_token)
    assert key.key_id == header["kid"]
    claims: dict[str, Any] = jwt.decode(
        access_token, key, algorithms=["RS256"], audience=audience, issuer=live.url,
        options={"require": ["iss", "sub", "aud", "exp", "iat", "jti", "client_id"]},
    )
    return claims


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_authlib_client_gets_tokens_pyjwt_validates(live: LiveServer, method: str) -> None:
    client, secret = factories.create_client(
        live.runtime, scopes=["read", "write", "admin"], resources=[API], auth_method=method
    )
    assert secret is not None

    token = fetch(live, method, client.client_id, secret)
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == live.settings.tokens.access_token_lifetime
    assert token["scope"] == "admin read write"
    claims = verify(live, token["access_token"], audience=live.url)
    assert claims["iss"] == live.url
    assert claims["sub"] == claims["client_id"] == client.client_id
    assert claims["aud"] == live.url
    assert claims["exp"] == claims["iat"] + live.settings.tokens.access_token_lifetime
    assert isinstance(claims["jti"], str)
    assert len(claims["jti"]) >= 16
    assert claims["scope"] == "admin read write"
    assert claims["org_id"] == "org_default"

    # RFC 8707 resource + a scope request: aud is the resource, scope the allowed subset.
    narrowed = fetch(live, method, client.client_id, secret, scope="read admin", resource=API)
    assert narrowed["scope"] == "read"
    claims = verify(live, narrowed["access_token"], audience=API)
    assert claims["aud"] == API
    assert claims["scope"] == "read"
    with pytest.raises(jwt.InvalidAudienceError):
        verify(live, narrowed["access_token"], audience=live.url)


def test_authlib_wrong_secret_is_refused(live: LiveServer) -> None:
    client, _ = factories.create_client(live.runtime, scopes=["read"])
    with pytest.raises(OAuthError) as caught:
        fetch(live, "client_secret_basic", client.client_id, "ascs_not_the_secret")
    assert caught.value.error == "invalid_client"
