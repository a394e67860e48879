"""API keys over the admin API: lifecycle, self-inspection, organisation scoping, escalation,
the error envelope on bad input; the key format and permission rules."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from authserver import apikeys, audit, organizations
from authserver.apikeys.format import parse_key
from authserver.clock import FakeClock
from authserver.storage.models import AuditEntry, Event
from tests import factories
from tests.conftest import AppHarness, make_settings, running_app

pytestmark = pytest.mark.anyio
KEYS = "/api/v1/api-keys"


def new_key(h: AppHarness, org_id: str, *permissions: str, **extra: Any) -> tuple[str, str]:
    with h.runtime.db.session(write=True) as session:
        record, key = apikeys.create_key(
            session, h.runtime.catalog, apikeys.ApiKeySpec("k", org_id, permissions, **extra),
            "as", h.runtime.clock.now(), audit.Actor("test"))
    return record.id, key


def new_org(h: AppHarness, name: str = "Acme") -> str:
    with h.runtime.db.session(write=True) as session:
        return organizations.create_org(session, name, h.runtime.clock.now(),
                                        audit.Actor("test")).id


def assert_envelope(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code and error["status"] == status
    assert error["request_id"] == response.headers["x-request-id"]
    assert {"type", "message"} <= set(error)
    return error


def test_key_format_and_checksum() -> None:
    key_id, key = apikeys.new_key("as", "test")
    assert key.startswith("as_test_") and len(key) == 69
    parsed = parse_key(key, "as")
    assert parsed is not None and parsed.key_id == key_id and parsed.environment == "test"
    flipped = key[:-1] + ("0" if key[-1] != "0" else "1")
    assert parse_key(flipped, "as") is None  # checksum
    assert parse_key(key, "other") is None
    assert parse_key(key[:20], "as") is None
    assert parse_key(key.replace("_test_", "_prod_"), "as") is None


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("GET", "/api/v1/invoices/42", ("invoices", "read")),
    ("HEAD", "/invoices", ("invoices", "read")),
    ("POST", "/api/v2/invoices", ("invoices", "create")),
    ("PATCH", "/v1/Customers/7?x=1", ("customers", "update")),
    ("DELETE", "/api/invoices/1", ("invoices", "delete")),
    ("GET", "/", ("", "read")),
    ("TRACE", "/invoices", None),
])
def test_required_permission(method: str, path: str, expected: Any) -> None:
    assert apikeys.required(method, path) == expected


def test_grants_and_wildcards() -> None:
    assert apikeys.grants(("*",), "x", "delete")
    assert apikeys.grants(("invoices.*",), "invoices", "delete")
    assert apikeys.grants(("*.read",), "customers", "read")
    assert not apikeys.grants(("*.read",), "customers", "create")
    assert not apikeys.grants(("invoices.read",), "invoices", "update")
    assert not apikeys.grants(("invoices.read",), "invoice", "read")
    with pytest.raises(Exception, match=r"invoices\.fly"):
        apikeys.check_permissions(["invoices.fly"], ())


async def test_lifecycle_over_the_admin_api(harness: AppHarness, clock: FakeClock) -> None:
    h = harness
    _, admin = new_key(h, "org_default", "api-keys.*", "invoices.*")
    auth = {"x-api-key": admin}
    org = new_org(h)
    created = await h.http.post(KEYS, json={"name": "billing", "org_id": org,
                                            "permissions": ["invoices.read"],
                                            "ip_allowlist": ["10.0.0.0/8"],
                                            "expires_in": 3600}, headers=auth)
    assert created.status_code == 201, created.text
    assert created.headers["cache-control"] == "no-store"
    body = created.json()
    key, key_id = body["key"], body["api_key"]["id"]
    assert body["api_key"]["ip_allowlist"] == ["10.0.0.0/8"]
    listed = await h.http.get(KEYS, params={"org_id": org}, headers=auth)
    assert [k["id"] for k in listed.json()["data"]] == [key_id]
    assert key not in listed.text and "digest" not in listed.text

    # the key itself: refused from 127.0.0.1 (allowlist), then allowed once widened
    error = assert_envelope(await h.http.get("/api/v1/api-key", headers={"x-api-key": key}),
                            401, "invalid_api_key")
    assert error["details"]["reason"] == "ip_whitelist_mismatch"
    patched = await h.http.patch(f"{KEYS}/{key_id}", json={"ip_allowlist": [],
                                                           "name": "billing 2"}, headers=auth)
    assert patched.status_code == 200 and patched.json()["name"] == "billing 2"
    h.runtime.poll_events()
    me = await h.http.get("/api/v1/api-key", headers={"x-api-key": key})
    assert me.status_code == 200
    assert me.json()["permissions"] == ["invoices.read"] and me.json()["org_id"] == org

    rotated = await h.http.post(f"{KEYS}/{key_id}/rotate", json={"grace_period": 60},
                                headers=auth)
    assert rotated.status_code == 201
    new = rotated.json()["key"]
    h.runtime.poll_events()
    for k in (key, new):
        assert (await h.http.get("/api/v1/api-key", headers={"x-api-key": k})).status_code == 200
    clock.advance(61)
    assert_envelope(await h.http.get("/api/v1/api-key", headers={"x-api-key": key}),
                    401, "expired_api_key")
    new_id = rotated.json()["api_key"]["id"]
    revoked = await h.http.post(f"{KEYS}/{new_id}/revoke", headers=auth)
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    h.runtime.poll_events()
    assert_envelope(await h.http.get("/api/v1/api-key", headers={"x-api-key": new}),
                    401, "invalid_api_key")
    with h.runtime.db.session() as session:
        actions = [a.action for a in session.scalars(select(AuditEntry).where(
            AuditEntry.actor.like("api_key:%")).order_by(AuditEntry.id))]
        assert actions == ["api_key.create", "api_key.update", "api_key.rotate",
                           "api_key.revoke"]
        types = {e.type for e in session.scalars(select(Event))}
        assert {"api_key.created", "api_key.updated", "api_key.rotated",
                "api_key.revoked"} <= types


async def test_permissions_scoping_and_escalation(harness: AppHarness) -> None:
    h = harness
    org, other = new_org(h, "A"), new_org(h, "B")
    _, reader = new_key(h, org, "api-keys.read")
    _, creator = new_key(h, org, "api-keys.create", "invoices.read")
    other_id, _ = new_key(h, other, "invoices.read")
    assert_envelope(await h.http.post(KEYS, json={"name": "x", "permissions": ["invoices.read"]},
                                      headers={"x-api-key": reader}),
                    403, "insufficient_permissions")
    # a key can hand out only what it holds
    assert_envelope(await h.http.post(KEYS, json={"name": "x", "permissions": ["*"]},
                                      headers={"x-api-key": creator}),
                    403, "insufficient_permissions")
    ok = await h.http.post(KEYS, json={"name": "x", "permissions": ["invoices.read"]},
                           headers={"x-api-key": creator})
    assert ok.status_code == 201 and ok.json()["api_key"]["org_id"] == org
    # another organisation's keys are invisible
    assert_envelope(await h.http.get(f"{KEYS}/{other_id}", headers={"x-api-key": reader}),
                    404, "not_found")
    listed = await h.http.get(KEYS, headers={"x-api-key": reader})
    assert other_id not in listed.text
    assert_envelope(await h.http.get(KEYS, params={"org_id": other},
                                     headers={"x-api-key": reader}),
                    404, "organization_not_found")


async def test_how_keys_are_sent(harness: AppHarness, debug_log_capture: Any) -> None:
    h = harness
    _, key = new_key(h, "org_default", "invoices.read")
    assert_envelope(await h.http.get("/api/v1/api-key"), 401, "invalid_api_key")
    error = assert_envelope(await h.http.get("/api/v1/api-key",
                                             headers={"authorization": f"Bearer {key}"}),
                            401, "invalid_api_key")
    assert "x-api-key" in error["message"]
    via_query = await h.http.get("/api/v1/api-key", params={"x-api-key": key})
    assert via_query.status_code == 200
    assert via_query.headers["deprecation"] == "true" and "x-api-key" in \
        via_query.headers["warning"]
    assert_envelope(await h.http.get("/api/v1/api-key", headers={"x-api-key": key[:-1] + "!"}),
                    401, "invalid_api_key")
    server_lines = [line for line in debug_log_capture.getvalue().splitlines()
                    if " httpx " not in line]  # the test's own client logs its URLs
    assert server_lines and not any(key in line for line in server_lines)
    assert any("sent in the query string" in line for line in server_lines)


@pytest.mark.parametrize(("body", "fragment"), [
    ({"name": "x", "permissions": ["invoices.fly"]}, "invoices.fly"),
    ({"name": "x", "permissions": "invoices.read"}, "permissions"),
    ({"name": "", "permissions": ["invoices.read"]}, "name"),
    ({"name": "x", "permissions": ["invoices.read"], "ip_allowlist": ["nope"]}, "nope"),
    ({"name": "x", "permissions": ["invoices.read"], "expires_in": -5}, "expires_at"),
    ({"name": "x", "permissions": ["invoices.read"], "rate_limits": {"hourly": "lots"}},
     "rate_limits"),
    ({"name": "x", "permissions": ["invoices.read"], "environment": "prod"}, "environment"),
    ({"name": "x", "permissions": ["invoices.read"], "org_id": "org_nope"}, "org_nope"),
])
async def test_bad_input_is_400(harness: AppHarness, body: dict[str, Any],
                                fragment: str) -> None:
    _, admin = new_key(harness, "org_default", "*")
    response = await harness.http.post(KEYS, json=body, headers={"x-api-key": admin})
    assert response.status_code in (400, 404), response.text
    assert fragment in response.json()["error"]["message"]


@pytest.mark.parametrize(("content", "headers"), [
    (b"{", {"content-type": "application/json"}),
    (b"[]", {"content-type": "application/json"}),
    (b"name=x", {"content-type": "application/x-www-form-urlencoded"}),
    (b'{"a": 1, "a": 2}', {"content-type": "application/json"}),
    (b"\xff\xfe", {"content-type": "application/json"}),
])
async def test_malformed_bodies_are_400_in_the_envelope(
    harness: AppHarness, content: bytes, headers: dict[str, str]
) -> None:
    _, admin = new_key(harness, "org_default", "*")
    response = await harness.http.post(KEYS, content=content,
                                       headers={**headers, "x-api-key": admin})
    assert_envelope(response, 400, "invalid_request")


async def test_disabling_an_organisation(harness: AppHarness) -> None:
    h = harness
    _, admin = new_key(h, "org_default", "*")
    org = new_org(h)
    _, key = new_key(h, org, "invoices.read")
    response = await h.http.patch(f"/api/v1/organizations/{org}", json={"disabled": True},
                                  headers={"x-api-key": admin})
    assert response.status_code == 200 and response.json()["status"] == "disabled"
    h.runtime.poll_events()
    error = assert_envelope(await h.http.get("/api/v1/api-key", headers={"x-api-key": key}),
                            401, "invalid_api_key")
    assert error["details"]["reason"] == "organization_disabled"
    assert_envelope(await h.http.patch("/api/v1/organizations/org_default",
                                       json={"disabled": True}, headers={"x-api-key": admin}),
                    403, "insufficient_permissions")


REDIS_URL = os.environ.get("AUTHSERVER_TEST_REDIS_URL")
BACKENDS = [
    pytest.param("", id="memory"),
    pytest.param(REDIS_URL or "", id="redis", marks=pytest.mark.skipif(
        not REDIS_URL, reason="AUTHSERVER_TEST_REDIS_URL is not set "
        "(e.g. redis://127.0.0.1:6379/0)")),
]


@pytest.mark.parametrize("redis_url", BACKENDS)
async def test_key_rate_limits_and_usage(tmp_path: Path, redis_url: str) -> None:
    """Burst per key: 429 in the envelope with Retry-After, retry_after and RateLimit-*
    headers; allowed forward-auth decisions are counted as usage (batched, by kind, credits)."""
    settings = make_settings(tmp_path, redis_url=redis_url,
                             server={"trusted_proxies": ["127.0.0.1/32"]},
                             rate_limits={"api_key_burst": "4/minute", "read_credits": 1,
                                          "write_credits": 5})
    async with running_app(settings) as h:
        key_id, key = new_key(h, "org_default", "invoices.*", "usage.read")
        forward = {"x-api-key": key, "x-forwarded-uri": "/api/v1/invoices/1"}
        for method in ("GET", "GET", "POST"):
            allowed = await h.http.get("/forward-auth",
                                       headers={**forward, "x-forwarded-method": method})
            assert allowed.status_code == 200, allowed.text
            assert allowed.headers["x-auth-api-key-id"] == key_id
            assert int(allowed.headers["ratelimit-limit"]) == 4
        h.runtime.flush_usage()
        report = await h.http.get("/api/v1/usage", headers={"x-api-key": key})  # 4th request
        assert report.status_code == 200, report.text
        (row,) = report.json()["data"]
        assert (row["subject"], row["reads"], row["writes"], row["credits"]) == \
            (key_id, 2, 1, 7)
        assert report.json()["totals"]["org_default"]["credits"] == 7
        refused = await h.http.get("/api/v1/api-key", headers={"x-api-key": key})
        error = assert_envelope(refused, 429, "rate_limit_exceeded")
        assert int(refused.headers["retry-after"]) == error["details"]["retry_after"] >= 1
        assert refused.headers["ratelimit-remaining"] == "0"
        with h.runtime.db.session() as session:
            assert apikeys.get_key(session, key_id).last_used_at is not None


async def test_a_failing_counter_store_fails_open(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(tmp_path, redis_url="redis://127.0.0.1:1/0",
                             rate_limits={"api_key_burst": "1/minute"})
    async with running_app(settings) as h:
        _, key = new_key(h, "org_default", "invoices.read")
        for _ in range(3):  # over the limit, but nothing can count: let through
            response = await h.http.get("/api/v1/api-key", headers={"x-api-key": key})
            assert response.status_code == 200
    assert "rate-limit store failed" in caplog.text


async def test_rotated_keys_and_empty_updates_are_refused(harness: AppHarness) -> None:
    h = harness
    _, admin = new_key(h, "org_default", "*")
    key_id, _ = new_key(h, "org_default", "invoices.read")
    auth = {"x-api-key": admin}
    assert_envelope(await h.http.patch(f"{KEYS}/{key_id}", json={}, headers=auth),
                    400, "invalid_request")
    first = await h.http.post(f"{KEYS}/{key_id}/rotate", json={"grace_period": 600},
                              headers=auth)
    assert first.status_code == 201
    # the old key only winds down: no second rotation, no changes (e.g. lifting its expiry)
    assert_envelope(await h.http.post(f"{KEYS}/{key_id}/rotate", json={}, headers=auth),
                    409, "conflict")
    assert_envelope(await h.http.patch(f"{KEYS}/{key_id}", json={"expires_at": None},
                                       headers=auth), 409, "conflict")
    new_id = first.json()["api_key"]["id"]
    shown = await h.http.get(f"{KEYS}/{new_id}", headers=auth)
    assert shown.json()["expires_at"] is None and shown.json()["status"] == "active"


async def test_admin_changes_apply_at_once_on_this_instance(tmp_path: Path) -> None:
    """No event poll in between: the instance that made the change drops its cached copy."""
    settings = make_settings(tmp_path, cache={"event_poll_interval": 60.0,
                                              "max_staleness": 600.0})
    async with running_app(settings) as h:
        _, admin = new_key(h, "org_default", "*")
        org = new_org(h)
        key_id, key = new_key(h, org, "invoices.read")
        auth = {"x-api-key": admin}
        me = "/api/v1/api-key"
        assert (await h.http.get(me, headers={"x-api-key": key})).status_code == 200  # cached
        assert (await h.http.patch(f"/api/v1/organizations/{org}", json={"disabled": True},
                                   headers=auth)).status_code == 200
        assert (await h.http.get(me, headers={"x-api-key": key})).status_code == 401
        assert (await h.http.patch(f"/api/v1/organizations/{org}", json={"disabled": False},
                                   headers=auth)).status_code == 200
        assert (await h.http.get(me, headers={"x-api-key": key})).status_code == 200
        assert (await h.http.post(f"{KEYS}/{key_id}/revoke", headers=auth)).status_code == 200
        assert (await h.http.get(me, headers={"x-api-key": key})).status_code == 401


async def test_an_access_token_with_admin_scopes_is_an_admin_caller(harness: AppHarness) -> None:
    h = harness
    org = new_org(h)
    in_org, _ = new_key(h, org, "invoices.read")
    elsewhere, _ = new_key(h, "org_default", "invoices.read")
    admin_api = h.settings.issuer + "/api/v1"
    reader, secret = factories.create_client(h.runtime, scopes=["api-keys.read"], org_id=org,
                                             resources=[admin_api])
    other, other_secret = factories.create_client(h.runtime, scopes=["invoices.read"],
                                                  resources=[admin_api])
    assert secret and other_secret

    async def token(client_id: str, client_secret: str, resource: str | None = admin_api
                    ) -> str:
        form = {"grant_type": "client_credentials", **({"resource": resource} if resource
                                                       else {})}
        answer = await h.http.post("/token", data=form,
                                   headers=factories.basic_auth(client_id, client_secret))
        assert answer.status_code == 200, answer.text
        return str(factories.remember(answer.json()["access_token"]))

    bearer = {"authorization": f"Bearer {await token(reader.client_id, secret)}"}
    listed = await h.http.get(KEYS, headers=bearer)
    assert listed.status_code == 200, listed.text
    assert [k["id"] for k in listed.json()["data"]] == [in_org]  # its organisation only
    assert_envelope(await h.http.get(f"{KEYS}/{elsewhere}", headers=bearer), 404, "not_found")
    assert_envelope(await h.http.post(KEYS, json={"name": "x", "permissions": ["invoices.read"]},
                                      headers=bearer), 403, "insufficient_permissions")
    assert_envelope(await h.http.get("/api/v1/api-key", headers=bearer), 401, "invalid_api_key")
    weak = {"authorization": f"Bearer {await token(other.client_id, other_secret)}"}
    assert_envelope(await h.http.get(KEYS, headers=weak), 403, "insufficient_permissions")
    other_api = {"authorization": f"Bearer {await token(reader.client_id, secret, None)}"}
    error = assert_envelope(await h.http.get(KEYS, headers=other_api), 401, "invalid_token")
    assert "resource=" in error["message"]  # a token for another API does not open this one
    forged = {"authorization": bearer["authorization"][:-3] + "AAA"}
    refused = await h.http.get(KEYS, headers=forged)
    assert_envelope(refused, 401, "invalid_token")
    assert refused.headers["www-authenticate"].startswith("Bearer ")


async def test_authentication_failures_are_audited_in_batches(harness: AppHarness) -> None:
    """Wrong client secrets and bad API keys are noted in memory and written by the periodic
    flush (no database write per failed request); the entries never hold a secret."""
    h = harness
    record, secret = factories.create_client(h.runtime)
    assert secret
    wrong = secret[:-2] + ("AA" if not secret.endswith("AA") else "BB")
    _, key = new_key(h, "org_default", "invoices.read")
    unknown_id, bad_key = apikeys.new_key("as", "live")  # well-formed, never issued
    assert (await h.http.post("/token", data={"grant_type": "client_credentials"},
                              headers=factories.basic_auth(record.client_id, wrong))
            ).status_code == 401
    for presented in (bad_key, "as_live_short"):
        assert (await h.http.get("/api/v1/api-key", headers={"x-api-key": presented})
                ).status_code == 401
    with h.runtime.db.session() as session:
        assert session.scalars(select(AuditEntry).where(
            AuditEntry.outcome == "failure")).all() == []  # nothing written per request
    h.runtime.flush_usage()
    with h.runtime.db.session() as session:
        entries = session.scalars(select(AuditEntry).where(
            AuditEntry.outcome == "failure").order_by(AuditEntry.id)).all()
    assert [(e.action, e.target, e.details["reason"]) for e in entries] == [
        ("client.authenticate", record.client_id, "wrong secret"),
        ("api_key.authenticate", unknown_id, f"unknown {unknown_id}"),
        ("api_key.authenticate", "malformed", "malformed")]
    assert all(e.source == "127.0.0.1" for e in entries)
    assert not any(s in str([(e.target, e.details) for e in entries])
                   for s in (secret, wrong, key, bad_key))


@pytest.mark.parametrize("redis_url", BACKENDS)
async def test_concurrent_requests_cannot_all_slip_through(redis_url: str) -> None:
    import secrets as random

    import anyio

    from authserver.ratelimit import CounterStore, RateLimiter

    store = CounterStore(redis_url)
    limiter = RateLimiter("3/minute", "test-" + random.token_hex(4), store)
    # Load the counting script and open a connection first: under a loaded CI machine, twenty
    # first-time connects and script loads at once could pass the store's 0.25 s timeout,
    # and a store that times out lets requests through (by design), which is not this test.
    await limiter.check("warm-up")
    verdicts: list[int | None] = []

    async def one() -> None:
        verdicts.append(await limiter.hit("key"))

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(one)
    await store.aclose()
    allowed = [v for v in verdicts if v is None]
    refused = [v for v in verdicts if v is not None]
    assert len(allowed) == 3 and len(refused) == 17
    assert all(1 <= v <= 60 for v in refused)  # seconds to wait


def test_memory_counters_expire_and_are_swept() -> None:
    """Counters in memory: one read after its expiry counts from zero again, and the periodic
    sweep drops expired counters that nobody reads any more (memory stays bounded)."""
    import time

    from authserver.ratelimit import LocalCounters

    counters = LocalCounters()
    assert counters.incr("a", 0.05) == 1 and counters.incr("a", 0.05) == 2
    counters.incr("gone", 0.05)
    counters.incr("kept", 60)
    time.sleep(0.06)
    assert counters.get("a") == 0 and counters.incr("a", 60) == 1
    assert "gone" in counters.storage  # nobody read it: still there until the sweep
    counters._next_sweep = 0
    counters.incr("kept", 60)
    assert "gone" not in counters.storage and "gone" not in counters.expirations
    assert counters.get("kept") == 2 and counters.get("a") == 1
    assert counters.decr("kept") == 1 and counters.decr("nothing") == 0


def test_limit_items_build_the_same_keys_once() -> None:
    """The items behind every limit keep `limits`' storage keys (counters in Redis written by
    an earlier version stay the same counters), build each once, and keep the cache bounded;
    `limits`' own parsing is left as it was."""
    from limits import RateLimitItemPerMinute, parse_many

    from authserver import ratelimit

    cached = ratelimit.limit_items("5/minute;100/hour")
    plain = parse_many("5/minute;100/hour")
    assert cached == plain
    for mine, theirs in zip(cached, plain, strict=True):
        assert mine.key_for("api_key", "key_1") == theirs.key_for("api_key", "key_1")
        assert mine.key_for("api_key", "key_1") is mine.key_for("api_key", "key_1")
    assert type(parse_many("5/minute")[0]) is RateLimitItemPerMinute
    item = cached[0]
    for n in range(ratelimit.KEY_CACHE + 5):
        item.key_for("address", str(n))
    assert len(item._keys) <= ratelimit.KEY_CACHE  # type: ignore[attr-defined]
    assert item.key_for("address", "7") == plain[0].key_for("address", "7")


async def test_changing_a_key_needs_its_permissions(harness: AppHarness) -> None:
    h = harness
    strong_id, strong = new_key(h, "org_default", "invoices.*")
    _, weak = new_key(h, "org_default", "api-keys.*")
    auth = {"x-api-key": weak}
    for method, path, body in (("PATCH", "", {"ip_allowlist": []}), ("POST", "/rotate", {}),
                               ("POST", "/revoke", None)):
        response = await h.http.request(method, f"{KEYS}/{strong_id}{path}", json=body,
                                        headers=auth)
        assert_envelope(response, 403, "insufficient_permissions")
    pasted = await h.http.get(f"{KEYS}/{strong}", headers=auth)
    assert_envelope(pasted, 400, "invalid_request")
    assert strong not in pasted.text


async def test_api_keys_are_paged(harness: AppHarness) -> None:
    h = harness
    _, admin = new_key(h, "org_default", "*")
    made = []
    for _ in range(4):
        h.runtime.clock.advance(1)  # type: ignore[attr-defined]  # the harness's FakeClock
        made.append(new_key(h, "org_default", "invoices.read")[0])
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        body = (await h.http.get(KEYS, params=params, headers={"x-api-key": admin})).json()
        seen += [k["id"] for k in body["data"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen[1:] == made and len(seen) == 5  # the admin key first, oldest first
