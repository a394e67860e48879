"""Property: whatever arrives at the token endpoint, the answer is a 4xx in the RFC 6749 format
(or a 200 for a valid request) — never a 500, never a body that is not the documented JSON."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from authserver.wiring import build_runtime, create_app
from tests import factories
from tests.conftest import make_settings

PARAMS = ["grant_type", "client_id", "client_secret", "scope", "resource", "client_assertion",
          "client_assertion_type", "audience", "x"]
VALUES = st.one_of(
    st.sampled_from(["client_credentials", "password", "", "read", "https://x.example",
                     "urn:ietf:params:oauth:client-assertion-type:jwt-bearer", "a.b.c",
                     "eyJhbGciOiJub25lIn0.e30.", "%00", "%ff", "\u00e9"]),
    st.text(max_size=40),
)
CONTENT_TYPES = st.sampled_from([
    "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=utf-8",
    "application/json", "text/plain", "multipart/form-data; boundary=x", "", "x/y; charset=",
])


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str, str]]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    runtime = build_runtime(make_settings(tmp))
    with TestClient(create_app(runtime.settings, runtime=runtime),
                    base_url=runtime.settings.issuer, raise_server_exceptions=False) as http:
        record, secret = factories.create_client(runtime, scopes=["read"])
        assert secret is not None
        yield http, record.client_id, secret


def check(response_status: int, body: bytes) -> None:
    assert response_status < 500, body
    data = json.loads(body)
    if response_status != 200:
        assert set(data) <= {"error", "error_description"} and isinstance(data["error"], str)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs=st.lists(st.tuples(st.sampled_from(PARAMS), VALUES), max_size=6),
       content_type=CONTENT_TYPES, auth=st.sampled_from(["none", "valid", "junk", "bearer"]))
def test_form_requests_never_500(client: tuple[TestClient, str, str],
                                 pairs: list[tuple[str, str]], content_type: str,
                                 auth: str) -> None:
    http, client_id, secret = client
    headers = {"content-type": content_type} if content_type else {}
    if auth == "valid":
        headers["authorization"] = "Basic " + base64.b64encode(
            f"{client_id}:{secret}".encode()).decode()
    elif auth == "junk":
        headers["authorization"] = "Basic " + base64.b64encode(b"\xff:\x00").decode()
    elif auth == "bearer":
        headers["authorization"] = "Bearer abc"
    from urllib.parse import urlencode

    response = http.post("/token", content=urlencode(pairs).encode(), headers=headers)
    if response.status_code == 200:
        factories.remember(response.json()["access_token"])
    check(response.status_code, response.content)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=300), content_type=CONTENT_TYPES)
def test_raw_bodies_never_500(client: tuple[TestClient, str, str], body: bytes,
                              content_type: str) -> None:
    http, _, _ = client
    headers = {"content-type": content_type} if content_type else {}
    response = http.post("/token", content=body, headers=headers)
    check(response.status_code, response.content)
