"""Prometheus /metrics: the exposition parses, the counters move with tokens issued and refused,
rate-limit refusals and forward-auth decisions, latency is labelled by route template, the
scrape-time gauges are there, and who may read it (docs/observability.md)."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from authserver import apikeys, audit
from tests import factories
from tests.conftest import AppHarness, make_settings, running_app

pytestmark = pytest.mark.anyio
PROXY = {"server": {"trusted_proxies": ["127.0.0.1/32"]}}


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition by (name, labels); parsing it is part of the test."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


async def scrape(h: AppHarness) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await h.http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert response.headers["cache-control"] == "no-store"
    return samples(response.text)


def new_key(h: AppHarness, *permissions: str) -> str:
    with h.runtime.db.session(write=True) as session:
        _, key = apikeys.create_key(
            session, h.runtime.catalog, apikeys.ApiKeySpec("k", "org_default", permissions),
            "as", h.runtime.clock.now(), audit.Actor("test"))
    factories.remember(key)
    return key


async def test_tokens_issued_and_refused(harness: AppHarness) -> None:
    client, secret = factories.create_client(harness.runtime, scopes=["read"])
    assert secret is not None
    before = await scrape(harness)
    form = {"grant_type": "client_credentials"}
    for _ in range(2):
        ok = await harness.http.post("/token", data=form,
                                     headers=factories.basic_auth(client.client_id, secret))
        assert ok.status_code == 200, ok.text
    bad = await harness.http.post("/token", data=form,
                                  headers=factories.basic_auth(client.client_id, "nope"))
    assert bad.status_code == 401
    odd = await harness.http.post("/token", data={"grant_type": "password"},
                                  headers=factories.basic_auth(client.client_id, secret))
    assert odd.json()["error"] == "unsupported_grant_type"
    after = await scrape(harness)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("authserver_tokens_issued_total", client_id=client.client_id,
                 grant_type="client_credentials") == 2
    assert delta("authserver_token_failures_total", error="invalid_client") == 1
    assert delta("authserver_token_failures_total", error="unsupported_grant_type") == 1
    # latency by route template, method and status
    assert delta("authserver_http_request_duration_seconds_count", route="/token",
                 method="POST", status="200") == 2
    assert delta("authserver_http_request_duration_seconds_count", route="/token",
                 method="POST", status="401") == 1
    assert delta("authserver_http_request_duration_seconds_bucket", route="/token",
                 method="POST", status="200", le="+Inf") == 2


async def test_route_templates_never_raw_paths(harness: AppHarness) -> None:
    for path in ("/nowhere/1", "/nowhere/2", "/api/v1/clients/c1", "/api/v1/clients/c2"):
        await harness.http.get(path)
    await harness.http.request("BREW", "/token")
    text = (await harness.http.get("/metrics")).text
    assert "/nowhere" not in text and "clients/c1" not in text and "BREW" not in text
    after = samples(text)
    assert value(after, "authserver_http_request_duration_seconds_count", route="unmatched",
                 method="GET", status="404") >= 2
    assert value(after, "authserver_http_request_duration_seconds_count",
                 route="/api/v1/clients/{client_id}", method="GET", status="401") >= 2
    assert value(after, "authserver_http_request_duration_seconds_count", route="/token",
                 method="other", status="405") >= 1


async def test_rate_limits_and_forward_auth_decisions(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, rate_limits={"api_key_burst": "2/minute"}, **PROXY)
    async with running_app(settings) as h:
        key = new_key(h, "invoices.read")
        before = await scrape(h)
        asked = {"x-forwarded-method": "GET", "x-forwarded-uri": "/api/v1/invoices/1"}
        statuses = [(await h.http.get("/forward-auth", headers={**asked, "x-api-key": key}))
                    .status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        missing = await h.http.get("/forward-auth", headers=asked)
        assert missing.status_code == 401
        envoy = await h.http.get("/forward-auth/api/v1/invoices/1")  # Envoy's form, no key
        assert envoy.status_code == 401
        after = await scrape(h)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("authserver_ratelimit_hits_total", limiter="api_key") == 1
    assert delta("authserver_forward_auth_decisions_total", outcome="allowed") == 2
    assert delta("authserver_forward_auth_decisions_total", outcome="rate_limit_exceeded") == 1
    assert delta("authserver_forward_auth_decisions_total", outcome="invalid_api_key") == 2
    assert delta("authserver_http_request_duration_seconds_count", route="/forward-auth",
                 method="GET", status="200") == 2
    assert delta("authserver_http_request_duration_seconds_count", route="/forward-auth",
                 method="GET", status="429") == 1
    assert delta("authserver_http_request_duration_seconds_count",
                 route="/forward-auth/{path:path}", method="GET", status="401") == 1


async def test_scrape_time_gauges(harness: AppHarness) -> None:
    after = await scrape(harness)
    kid = harness.runtime.keyring.snapshot(harness.runtime.clock.now()).signer
    assert kid is not None
    age = value(after, "authserver_signing_key_age_seconds", kid=kid.kid, state="active")
    assert 0 <= age < 60
    lag = value(after, "authserver_event_lag_seconds")
    assert not math.isnan(lag) and 0 <= lag < 60
    assert value(after, "authserver_revocation_stale") == 0
    assert ("authserver_cache_hits_total", frozenset({("cache", "clients")})) in after
    assert ("process_cpu_seconds_total", frozenset()) in after


async def test_client_labels_are_capped(tmp_path: Path) -> None:
    async with running_app(make_settings(tmp_path, metrics={"client_labels": 1})) as h:
        made = [factories.create_client(h.runtime, scopes=["read"]) for _ in range(3)]
        for client, secret in made:
            assert secret is not None
            ok = await h.http.post("/token", data={"grant_type": "client_credentials"},
                                   headers=factories.basic_auth(client.client_id, secret))
            assert ok.status_code == 200
        text = (await h.http.get("/metrics")).text
    after = samples(text)
    labelled = [c.client_id for c, _ in made
                if value(after, "authserver_tokens_issued_total", client_id=c.client_id,
                         grant_type="client_credentials")]
    assert labelled == [made[0][0].client_id]
    assert made[1][0].client_id not in text and made[2][0].client_id not in text
    assert value(after, "authserver_tokens_issued_total", client_id="other",
                 grant_type="client_credentials") >= 2


@pytest.mark.parametrize("token_set", [False, True])
async def test_who_may_read_metrics(tmp_path: Path, token_set: bool) -> None:
    token = "scrape-" + "x" * 40
    extra: dict[str, Any] = {"bearer_token_sha256": hashlib.sha256(token.encode()).hexdigest()} \
        if token_set else {}
    settings = make_settings(tmp_path, metrics=extra, **PROXY)
    app_ctx = running_app(settings)
    async with app_ctx:
        async def get(address: str, **headers: str) -> httpx.Response:
            transport = httpx.ASGITransport(app=app_ctx.app, client=(address, 40000))
            async with httpx.AsyncClient(transport=transport,
                                         base_url="http://127.0.0.1:8000") as c:
                return await c.get("/metrics", headers=headers)

        assert (await get("127.0.0.1")).status_code == 200  # loopback: the default
        refused = await get("203.0.113.9")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "metrics_forbidden"
        # through the trusted proxy, the client behind it is judged, not the proxy
        proxied = await get("127.0.0.1", **{"x-forwarded-for": "203.0.113.9"})
        assert proxied.status_code == 403
        with_token = await get("203.0.113.9", authorization=f"Bearer {token}")
        assert with_token.status_code == (200 if token_set else 403)
        wrong = await get("203.0.113.9", authorization="Bearer " + "y" * 46)
        assert wrong.status_code == 403


async def test_metrics_can_be_switched_off(tmp_path: Path) -> None:
    async with running_app(make_settings(tmp_path, metrics={"enabled": False})) as h:
        assert (await h.http.get("/metrics")).status_code == 404
        assert (await h.http.get("/healthz")).status_code == 200
