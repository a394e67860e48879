"""RFC 7523 private_key_jwt client authentication, with registered jwks and with jwks_uri."""

from __future__ import annotations

import json
import secrets
import warnings
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

from authserver.clients import ClientRecord
from tests import factories
from tests.conftest import AppHarness, make_settings, running_app
from tests.jwks_server import StaticServer

pytestmark = pytest.mark.anyio
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def new_key() -> ECKey:
    key = ECKey.generate_key("P-256", private=True)
    key.ensure_kid()
    return key


def public_jwks(*keys: Any) -> dict[str, Any]:
    return {"keys": [k.as_dict(private=False) for k in keys]}


def jwt_client(h: AppHarness, *keys: Any, **spec: Any) -> ClientRecord:
    """A private_key_jwt client whose registered jwks holds the public halves of `keys`."""
    client, secret = factories.create_client(h.runtime, auth_method="private_key_jwt",
                                             jwks=public_jwks(*keys), **spec)
    assert secret is None
    return client


def assertion(client: ClientRecord, key: Any, aud: Any, now: float, alg: str = "ES256",
              **claims: Any) -> str:
    body = {"iss": client.client_id, "sub": client.client_id, "aud": aud,
            "exp": int(now) + 60, "iat": int(now), "jti": secrets.token_urlsafe(12)}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode({"alg": alg, "kid": key.kid}, body, key, algorithms=[alg])


async def post(h: AppHarness, client_assertion: str, **extra: str) -> Any:
    response = await h.http.post("/token", data={
        "grant_type": "client_credentials", "client_assertion_type": JWT_BEARER,
        "client_assertion": client_assertion, **extra})
    if response.status_code == 200:
        factories.remember(response.json()["access_token"])
    return response


async def test_registered_jwks_with_issuer_or_token_endpoint_audience(harness: AppHarness) -> None:
    key = new_key()
    client = jwt_client(harness, key, scopes=["read"])
    now = harness.runtime.clock.now()
    issuer = harness.settings.issuer
    for aud in (issuer, issuer + "/token", [issuer, "https://other"]):
        response = await post(harness, assertion(client, key, aud, now),
                              client_id=client.client_id)
        assert response.status_code == 200, response.text
        assert response.json()["scope"] == "read"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": "https://someone-else.example"}, "aud must be"),
        ({"exp": None}, "exp is required"),
        ({"exp": 1}, "expired"),
        ({"exp": "later"}, "exp is required"),
        ({"exp": float("nan")}, "exp is required"),
        ({"exp": 10**400}, "exp is required"),
        ({"nbf": 10**400, "exp": None}, "exp is required"),
        ({"lifetime": 3600}, "lifetime exceeds"),
        ({"jti": None}, "jti is required"),
        ({"iss": "cli_someone_else"}, "iss and sub"),
        ({"nbf": "future"}, "not yet valid"),
    ],
)
async def test_bad_assertions_are_invalid_client(
    harness: AppHarness, claims: dict[str, Any], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    key = new_key()
    client = jwt_client(harness, key)
    now = harness.runtime.clock.now()
    if claims.pop("lifetime", None):
        claims["exp"] = int(now) + 3600
    if claims.get("nbf") == "future":
        claims["nbf"] = int(now) + 600
    aud = claims.pop("aud", harness.settings.issuer)
    response = await post(harness, assertion(client, key, aud, now, **claims))
    assert response.status_code == 401, reason
    assert response.json() == {"error": "invalid_client",
                               "error_description": "Client authentication failed"}
    assert f"assertion: {reason}" in caplog.text  # the private detail names the real cause
    # a NaN exp must not make the assertion reusable forever either
    assert (await post(harness, assertion(client, key, aud, now, **claims))).status_code == 401


async def test_assertion_jti_is_single_use(harness: AppHarness) -> None:
    key = new_key()
    client = jwt_client(harness, key)
    signed = assertion(client, key, harness.settings.issuer, harness.runtime.clock.now())
    assert (await post(harness, signed)).status_code == 200
    replay = await post(harness, signed)
    assert replay.status_code == 401


async def test_foreign_key_symmetric_and_unsigned_assertions_fail(harness: AppHarness) -> None:
    key = new_key()
    client = jwt_client(harness, key)
    now = harness.runtime.clock.now()
    other = new_key()
    other_with_same_kid = ECKey.import_key(other.as_dict(private=True) | {"kid": key.kid})
    forged = assertion(client, other_with_same_kid, harness.settings.issuer, now)
    assert (await post(harness, forged)).status_code == 401
    secret = OctKey.generate_key(256)
    hs = jwt.encode({"alg": "HS256", "kid": key.kid},
                    {"iss": client.client_id, "sub": client.client_id,
                     "aud": harness.settings.issuer, "exp": int(now) + 60, "jti": "x"},
                    secret, algorithms=["HS256"])
    assert (await post(harness, hs)).status_code == 401
    header = "eyJhbGciOiJub25lIn0"
    for junk in (f"{header}.e30.", "not-a-jwt", "a.b.c"):
        response = await post(harness, junk)
        assert response.status_code == 401


async def test_assertion_client_id_mismatch_and_wrong_type(harness: AppHarness) -> None:
    key = new_key()
    client = jwt_client(harness, key)
    signed = assertion(client, key, harness.settings.issuer, harness.runtime.clock.now())
    mismatch = await post(harness, signed, client_id="cli_other")
    assert mismatch.status_code == 401
    wrong_type = await harness.http.post("/token", data={
        "grant_type": "client_credentials", "client_assertion_type": "urn:other",
        "client_assertion": signed})
    assert wrong_type.status_code == 401


async def test_secret_client_cannot_use_an_assertion(harness: AppHarness) -> None:
    key = new_key()
    client, _ = factories.create_client(harness.runtime)  # client_secret_basic
    signed = assertion(client, key, harness.settings.issuer, harness.runtime.clock.now())
    assert (await post(harness, signed)).status_code == 401


async def test_jwks_uri_is_fetched_cached_and_refetched_for_a_new_kid(tmp_path: Path) -> None:
    from authserver.clock import FakeClock

    clock = FakeClock()
    settings = make_settings(tmp_path, outbound={"allow_loopback_http": True})
    with StaticServer() as web:
        first, second = new_key(), RSAKey.generate_key(2048, private=True)
        second.ensure_kid()
        url = web.put("/jwks.json", json.dumps(public_jwks(first)).encode(),
                      **{"cache-control": "max-age=3600"})
        async with running_app(settings, clock) as h:
            client, _ = factories.create_client(h.runtime, auth_method="private_key_jwt",
                                                jwks_uri=url)
            for _ in range(2):
                ok = await post(h, assertion(client, first, settings.issuer, clock.now()))
                assert ok.status_code == 200
            assert web.hits["/jwks.json"] == 1  # cached
            # the client rotates its key; we refetch only after the refetch interval
            web.put("/jwks.json", json.dumps(public_jwks(second)).encode())
            signed = assertion(client, second, settings.issuer, clock.now(), alg="RS256")
            assert (await post(h, signed)).status_code == 401
            clock.advance(61)
            signed = assertion(client, second, settings.issuer, clock.now(), alg="RS256")
            assert (await post(h, signed)).status_code == 200
            assert web.hits["/jwks.json"] == 2


async def test_jwks_uri_on_loopback_is_refused_without_the_development_setting(
    harness: AppHarness,
) -> None:
    with StaticServer() as web:
        key = new_key()
        url = web.put("/jwks.json", json.dumps(public_jwks(key)).encode())
        client, _ = factories.create_client(harness.runtime, auth_method="private_key_jwt",
                                            jwks_uri=url)
        signed = assertion(client, key, harness.settings.issuer, harness.runtime.clock.now())
        response = await post(harness, signed)
        assert response.status_code == 401
        assert web.hits == {}  # refused before connecting


async def test_no_kid_tries_every_registered_key_and_eddsa_works(harness: AppHarness) -> None:
    from joserfc.jwk import OKPKey

    first, second = new_key(), OKPKey.generate_key("Ed25519", private=True)
    second.ensure_kid()
    client = jwt_client(harness, first, second)
    now = harness.runtime.clock.now()
    claims = {"iss": client.client_id, "sub": client.client_id, "aud": harness.settings.issuer,
              "exp": int(now) + 60, "jti": secrets.token_urlsafe(8)}
    with warnings.catch_warnings():  # only our test client's signing; the server must not warn
        warnings.simplefilter("ignore")
        no_kid = jwt.encode({"alg": "EdDSA"}, claims, second, algorithms=["EdDSA"])
    assert (await post(harness, no_kid)).status_code == 200
    with_kid = assertion(client, first, harness.settings.issuer, now)
    assert (await post(harness, with_kid)).status_code == 200


async def test_deeply_nested_or_huge_assertions_are_401(harness: AppHarness) -> None:
    import base64

    key = new_key()
    client = jwt_client(harness, key)
    nested = base64.urlsafe_b64encode(b"[" * 5000).rstrip(b"=").decode()
    for junk in (f"eyJhbGciOiJFUzI1NiJ9.{nested}.sig", "a" * 9000):
        response = await post(harness, junk, client_id=client.client_id)
        assert response.status_code == 401
