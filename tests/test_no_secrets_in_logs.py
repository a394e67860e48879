"""At DEBUG, a whole token flow (success and failure) logs none of the secrets or tokens."""

from __future__ import annotations

import base64
import logging

import pytest

from tests import factories
from tests.conftest import AppHarness

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
