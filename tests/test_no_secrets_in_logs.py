"""At DEBUG, a whole token flow (success and failure) logs none of the secrets or tokens."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest

from tests import factories
from tests.conftest import AppHarness, make_settings, running_app

pytestmark = pytest.mark.anyio


async def test_debug_logs_hold_no_secret_or_token(
    harness: AppHarness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client, secret = factories.create_client(harness.runtime, scopes=["read"],
                                             auth_method="client_secret_post")
    assert secret is not None
    ok = await harness.http.post("/token", data={
        "grant_type": "client_credentials", "client_id": client.client_id,
        "client_secret": secret})
    token = factories.remember(ok.json()["access_token"])
    wrong = secret[:-4] + "AAAA"
    await harness.http.post("/token", data={
        "grant_type": "client_credentials", "client_id": client.client_id,
        "client_secret": wrong})
    basic = base64.b64encode(f"{client.client_id}:{wrong}".encode()).decode()
    await harness.http.post("/token", data={"grant_type": "client_credentials"},
                            headers={"authorization": f"Basic {basic}"})
    text = "\n".join(f"{r.name} {r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "oauth error invalid_client" in text  # the failure was logged ...
    for value in (secret, wrong, basic, token):
        assert value and value not in text  # ... without the secret
    assert client.secret_digest and client.secret_digest not in repr(client)


def test_the_session_capture_is_watching() -> None:
    # The session fixture checks every remembered secret against all logs of the run.
    assert logging.getLogger().level == logging.DEBUG


async def test_registration_flow_logs_no_credential(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Initial access token, client secret, registration access token and rotated secret:
    none of them in any log record, including failures and the store error path."""
    from authserver import registration

    caplog.set_level(logging.DEBUG)
    settings = make_settings(tmp_path, registration={"policy": "initial_access_token"})
    async with running_app(settings) as h:
        with h.runtime.db.session(write=True) as session:
            iat = registration.create_access_token(session, h.runtime.catalog,
                                                   h.runtime.clock.now()).token
        factories.remember(iat)
        body = {"client_name": "agent", "grant_types": ["client_credentials"]}
        made = (await h.http.post("/register", json=body,
                                  headers={"authorization": f"Bearer {iat}"})).json()
        secret = factories.remember(made["client_secret"])
        rat = factories.remember(made["registration_access_token"])
        path = f"/register/{made['client_id']}"
        rotated = (await h.http.put(path, json={**body, "rotate_client_secret": True},
                                    headers={"authorization": f"Bearer {rat}"})).json()
        new_secret = factories.remember(rotated["client_secret"])
        await h.http.get(path, headers={"authorization": f"Bearer {rat}x"})
        await h.http.post("/register", json=body, headers={"authorization": f"Bearer {iat}x"})
        await h.http.put(path, json={**body, "client_secret": secret},
                         headers={"authorization": f"Bearer {rat}"})
    text = "\n".join(f"{r.name} {r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "POST http://127.0.0.1:8000/register" in text  # the requests were logged ...
    for value in (iat, secret, rat, new_secret):
        assert value and value not in text  # ... without the credentials
