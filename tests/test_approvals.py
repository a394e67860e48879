"""Quorum approval over the admin API (in-process ASGI, every answer validated against the
OpenAPI document): gated key creation with reveal-once, organisation and client deletion,
who may see and decide, expiry, the audit trail, concurrent decisions on SQLite and
PostgreSQL; and the CLI."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import func, select

from authserver import apikeys, approvals, audit, organizations
from authserver.cli import main
from authserver.clock import FakeClock
from authserver.storage.db import Database
from authserver.storage.models import ApiKey, ApprovalRequest, AuditEntry, Organization
from authserver.wiring import prepare_storage
from tests import factories
from tests.conftest import AppHarness, make_settings, running_app
from tests.test_api_keys import new_key, new_org
from tests.test_openapi import check

pytestmark = pytest.mark.anyio
API = "/api/v1"
GATED = {"required": 2, "actions": ["api_key.create.privileged", "organization.delete",
                                    "client.delete"]}


async def call(h: AppHarness, method: str, path: str, key: str | None, status: int,
               **kwargs: Any) -> dict[str, Any]:
    """One admin API call, its answer checked against the OpenAPI document."""
    headers = {"x-api-key": key} if key else {}
    response = await h.http.request(method, API + path, headers=headers, **kwargs)
    assert response.status_code == status, response.text
    check(response, valid_request=status < 400)
    if status >= 400:
        error: dict[str, Any] = response.json()["error"]
        assert error["status"] == status and error["request_id"]
        return error
    return response.json() if response.content else {}


@pytest.fixture
async def gated(tmp_path: Path, database_url: str, clock: FakeClock
                ) -> AsyncIterator[AppHarness]:
    """Two other admins must approve; SQLite, and PostgreSQL when its URL is set."""
    migrator = Database(database_url)
    migrator.migrate()  # `serve` migrates only the embedded SQLite store itself
    migrator.dispose()
    async with running_app(make_settings(tmp_path, database_url, approvals=GATED),
                           clock) as h:
        yield h


def admins(h: AppHarness, count: int = 3) -> list[str]:
    return [new_key(h, "org_default", "*")[1] for _ in range(count)]


def audit_actions(h: AppHarness, target: str) -> list[str]:
    with h.runtime.db.session() as session:
        return list(session.scalars(select(AuditEntry.action).where(AuditEntry.target == target)
                                    .order_by(AuditEntry.id)))


def key_count(h: AppHarness) -> int:
    with h.runtime.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(ApiKey)) or 0)


async def test_off_by_default(harness: AppHarness) -> None:
    (admin,) = admins(harness, 1)
    made = await call(harness, "POST", "/api-keys", admin, 201,
                      json={"name": "root", "permissions": ["*"]})
    factories.remember(made["key"])
    org = new_org(harness, "Empty")
    await call(harness, "DELETE", f"/organizations/{org}", admin, 204)
    assert (await call(harness, "GET", "/approvals", admin, 200))["data"] == []


async def test_a_privileged_key_needs_two_approvals_and_is_revealed_once(
        gated: AppHarness) -> None:
    h = gated
    requester, first, second = admins(h)
    before = key_count(h)
    pending = await call(h, "POST", "/api-keys", requester, 202, json={
        "name": "root", "permissions": ["*"], "expires_in": 86400})
    request_id = pending["id"]
    assert pending["state"] == "pending" and pending["action"] == "api_key.create.privileged"
    assert pending["approvals_needed"] == 2 and pending["payload"]["permissions"] == ["*"]
    assert key_count(h) == before  # no key exists before its reveal

    refused = await call(h, "POST", f"/approvals/{request_id}/approve", requester, 403)
    assert "requester" in refused["message"]
    one = await call(h, "POST", f"/approvals/{request_id}/approve", first, 200)
    assert one["state"] == "pending" and one["approvals_needed"] == 1
    await call(h, "POST", f"/approvals/{request_id}/approve", first, 409)  # once each
    await call(h, "POST", f"/approvals/{request_id}/reveal", requester, 409)  # not yet
    two = await call(h, "POST", f"/approvals/{request_id}/approve", second, 200)
    assert two["state"] == "approved"
    assert [a["by"] for a in two["approvals"]] == [actor(first), actor(second)]

    await call(h, "POST", f"/approvals/{request_id}/reveal", first, 403)  # requester only
    revealed = await call(h, "POST", f"/approvals/{request_id}/reveal", requester, 201)
    key = factories.remember(revealed["key"])
    assert key and revealed["approval"]["state"] == "executed"
    assert revealed["approval"]["result"] == revealed["api_key"]["id"]
    assert revealed["api_key"]["expires_at"] == pytest.approx(h.runtime.clock.now() + 86400)
    itself = await h.http.get(f"{API}/api-key", headers={"x-api-key": key})
    assert itself.status_code == 200 and itself.json()["permissions"] == ["*"]
    again = await call(h, "POST", f"/approvals/{request_id}/reveal", requester, 409)
    assert "once" in again["message"] and key not in json.dumps(again)
    assert key_count(h) == before + 1

    shown = await call(h, "GET", f"/approvals/{request_id}", first, 200)
    assert key not in json.dumps(shown)
    assert audit_actions(h, request_id) == ["approval.request", "approval.approve",
                                            "approval.approve", "approval.reveal"]
    with h.runtime.db.session() as session:
        entries = session.scalars(select(AuditEntry)).all()
        assert not any(key in json.dumps(e.details) for e in entries)
        created = session.scalars(select(AuditEntry).where(
            AuditEntry.action == "api_key.create",
            AuditEntry.target == revealed["api_key"]["id"])).one()
        assert created.details["approval"] == request_id


def actor(key: str) -> str:
    """The audit actor of an API key."""
    parsed = apikeys.parse_key(key, "as")
    assert parsed is not None
    return f"api_key:{parsed.key_id}"


async def test_plain_keys_are_not_gated_and_bad_input_is_400(gated: AppHarness) -> None:
    (admin,) = admins(gated, 1)
    made = await call(gated, "POST", "/api-keys", admin, 201,
                      json={"name": "reader", "permissions": ["invoices.read"]})
    factories.remember(made["key"])
    await call(gated, "POST", "/api-keys", admin, 400,
               json={"name": "", "permissions": ["*"]})
    await call(gated, "POST", "/api-keys", admin, 400,
               json={"name": "x", "permissions": ["*"], "ip_allowlist": ["nope"]})
    await call(gated, "POST", "/api-keys", admin, 400,
               json={"name": "x", "permissions": ["*"], "rate_limits": {"burst": "lots"}})
    assert (await call(gated, "GET", "/approvals", admin, 200))["data"] == []


async def test_api_key_only_scopes_are_privileged(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, approvals={"required": 1},
                             scopes=[{"name": "portal-provision", "api_key_only": True}])
    async with running_app(settings) as h:
        (admin,) = admins(h, 1)
        pending = await call(h, "POST", "/api-keys", admin, 202, json={
            "name": "portal", "permissions": ["portal-provision"]})
        assert pending["action"] == "api_key.create.privileged"
        catalog = h.runtime.catalog
        assert not approvals.privileged(catalog, ("invoices.*", "*.read"))
        assert approvals.privileged(catalog, ("*",))


async def test_every_key_when_api_key_create_is_gated(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, approvals={"required": 1,
                                                  "actions": ["api_key.create"]})
    async with running_app(settings) as h:
        (admin,) = admins(h, 1)
        pending = await call(h, "POST", "/api-keys", admin, 202, json={
            "name": "reader", "permissions": ["invoices.read"]})
        assert pending["action"] == "api_key.create"


async def test_rejected_and_expired_requests_go_nowhere(gated: AppHarness) -> None:
    h = gated
    requester, first, second = admins(h)
    body = {"name": "root", "permissions": ["*"]}
    rejected = (await call(h, "POST", "/api-keys", requester, 202, json=body))["id"]
    await call(h, "POST", f"/approvals/{rejected}/approve", first, 200)
    done = await call(h, "POST", f"/approvals/{rejected}/reject", second, 200,
                      json={"reason": "use a narrower key"})
    assert done["state"] == "rejected" and done["rejection"]["reason"] == "use a narrower key"
    await call(h, "POST", f"/approvals/{rejected}/approve", second, 409)
    await call(h, "POST", f"/approvals/{rejected}/reveal", requester, 409)
    await call(h, "POST", f"/approvals/{rejected}/reject", first, 400,
               json={"reason": "x" * 501})

    withdrawn = (await call(h, "POST", "/api-keys", requester, 202, json=body))["id"]
    await call(h, "POST", f"/approvals/{withdrawn}/reject", requester, 200)  # may withdraw

    stale = (await call(h, "POST", "/api-keys", requester, 202, json=body))["id"]
    h.runtime.clock.advance(h.settings.approvals.request_lifetime + 1)  # type: ignore[attr-defined]
    refused = await call(h, "POST", f"/approvals/{stale}/approve", first, 409)
    assert "expired" in refused["message"]
    expired = await call(h, "GET", "/approvals", first, 200, params={"state": "expired"})
    assert [r["id"] for r in expired["data"]] == [stale]
    rejected_list = await call(h, "GET", "/approvals", first, 200,
                               params={"state": "rejected"})
    assert {r["id"] for r in rejected_list["data"]} == {rejected, withdrawn}
    assert audit_actions(h, rejected) == ["approval.request", "approval.approve",
                                          "approval.reject"]


async def test_an_approved_key_must_be_revealed_in_time(gated: AppHarness) -> None:
    h = gated
    requester, first, second = admins(h)
    request_id = (await call(h, "POST", "/api-keys", requester, 202,
                             json={"name": "root", "permissions": ["*"]}))["id"]
    for approver in (first, second):
        await call(h, "POST", f"/approvals/{request_id}/approve", approver, 200)
    h.runtime.clock.advance(h.settings.approvals.request_lifetime + 1)  # type: ignore[attr-defined]
    refused = await call(h, "POST", f"/approvals/{request_id}/reveal", requester, 409)
    assert "expired" in refused["message"]


async def test_other_organisations_see_nothing(gated: AppHarness) -> None:
    h = gated
    requester, first, _ = admins(h)
    tenant_org = new_org(h, "Tenant")
    _, tenant = new_key(h, tenant_org, "*")
    request_id = (await call(h, "POST", "/api-keys", requester, 202,
                             json={"name": "root", "permissions": ["*"]}))["id"]
    for method, path in (("GET", ""), ("POST", "/approve"), ("POST", "/reject"),
                         ("POST", "/reveal")):
        await call(h, method, f"/approvals/{request_id}{path}", tenant, 404)
    assert (await call(h, "GET", "/approvals", tenant, 200))["data"] == []
    await call(h, "GET", "/approvals", tenant, 404, params={"org_id": "org_default"})
    # a tenant's own request: its own admins and the operator's see it
    _, tenant_peer = new_key(h, tenant_org, "*")
    own = (await call(h, "POST", "/api-keys", tenant, 202,
                      json={"name": "t", "permissions": ["*"]}))["id"]
    assert [r["id"] for r in (await call(h, "GET", "/approvals", tenant_peer, 200))["data"]
            ] == [own]
    await call(h, "POST", f"/approvals/{own}/approve", tenant_peer, 200)
    await call(h, "POST", f"/approvals/{own}/approve", first, 200)
    # a path id that is not a request id is not echoed (it could be a pasted key)
    error = await call(h, "GET", "/approvals/as_live_notarequest", first, 404)
    assert "as_live" not in error["message"]


async def test_approvers_are_peers_and_not_made_by_the_requester(gated: AppHarness) -> None:
    h = gated
    requester, first, _ = admins(h)
    _, narrow = new_key(h, "org_default", "approvals.*", "api-keys.*")
    request_id = (await call(h, "POST", "/api-keys", requester, 202,
                             json={"name": "root", "permissions": ["*"]}))["id"]
    error = await call(h, "POST", f"/approvals/{request_id}/approve", narrow, 403)
    assert error["details"]["required"] == "*"  # cannot hand out what it lacks
    # a key the requester made itself (a sock puppet) cannot approve its requests
    puppet = await call(h, "POST", "/api-keys", requester, 201, json={
        "name": "puppet", "permissions": ["approvals.update", "clients.delete"]})
    factories.remember(puppet["key"])
    org = new_org(h, "Empty")
    client, _ = factories.create_client(h.runtime, name="c")
    with h.runtime.db.session(write=True) as session:  # a request it holds the rights for
        view = approvals.request_client_delete(session, h.settings.approvals, client.client_id,
                                               h.runtime.clock.now(),
                                               audit.Actor(actor(requester)))
    error = await call(h, "POST", f"/approvals/{view.id}/approve", puppet["key"], 403)
    assert "made by the requester" in error["message"]
    org_request = (await call(h, "DELETE", f"/organizations/{org}", requester, 202))["id"]
    with h.runtime.db.session(write=True) as session:
        grandchild, _ = apikeys.create_key(
            session, h.runtime.catalog, apikeys.ApiKeySpec("grandchild", "org_default", ("*",)),
            "as", h.runtime.clock.now(), audit.Actor(f"api_key:{puppet['api_key']['id']}"))
        with pytest.raises(approvals.NotAllowed):
            approvals.approve(session, h.settings.approvals, org_request, None,
                              h.runtime.clock.now(), audit.Actor(f"api_key:{grandchild.id}"))
    await call(h, "POST", f"/approvals/{org_request}/approve", first, 200)


async def test_organisation_delete_is_gated_and_runs_on_the_final_approval(
        gated: AppHarness) -> None:
    h = gated
    requester, first, second = admins(h)
    busy = new_org(h, "Busy")
    new_key(h, busy, "invoices.read")
    error = await call(h, "DELETE", f"/organizations/{busy}", requester, 409)
    assert "live API key" in error["message"]
    await call(h, "DELETE", "/organizations/org_default", requester, 409)
    _, tenant = new_key(h, busy, "*")
    await call(h, "DELETE", f"/organizations/{busy}", tenant, 403)  # operator only

    org = new_org(h, "Empty")
    pending = await call(h, "DELETE", f"/organizations/{org}", requester, 202)
    assert pending["action"] == "organization.delete" and pending["target"] == org
    await call(h, "POST", f"/approvals/{pending['id']}/approve", first, 200)
    await call(h, "GET", f"/organizations/{org}", requester, 200)  # still there
    done = await call(h, "POST", f"/approvals/{pending['id']}/approve", second, 200)
    assert done["state"] == "executed" and done["result"] == org
    await call(h, "GET", f"/organizations/{org}", requester, 404)
    assert audit_actions(h, pending["id"]) == ["approval.request", "approval.approve",
                                               "approval.approve", "approval.execute"]
    assert audit_actions(h, org)[-1] == "organization.delete"


async def test_a_delete_that_cannot_run_leaves_the_request_pending(gated: AppHarness) -> None:
    h = gated
    requester, first, second = admins(h)
    org = new_org(h, "Soon busy")
    request_id = (await call(h, "DELETE", f"/organizations/{org}", requester, 202))["id"]
    await call(h, "POST", f"/approvals/{request_id}/approve", first, 200)
    factories.create_client(h.runtime, org_id=org)  # a client arrives meanwhile
    await call(h, "POST", f"/approvals/{request_id}/approve", second, 409)
    view = await call(h, "GET", f"/approvals/{request_id}", first, 200)
    assert view["state"] == "pending" and len(view["approvals"]) == 1


async def test_client_delete_is_gated(gated: AppHarness) -> None:
    h = gated
    requester, first, second = admins(h)
    client, _ = factories.create_client(h.runtime, scopes=["read"])
    pending = await call(h, "DELETE", f"/clients/{client.client_id}", requester, 202)
    assert pending["payload"] == {"client_id": client.client_id, "name": "test client",
                                  "scopes": ["read"]}
    for approver in (first, second):
        done = await call(h, "POST", f"/approvals/{pending['id']}/approve", approver, 200)
    assert done["state"] == "executed"
    await call(h, "GET", f"/clients/{client.client_id}", requester, 404)


async def test_concurrent_decisions_do_not_run_twice(gated: AppHarness) -> None:
    h = gated
    requester, first, second, third = admins(h, 4)
    org = new_org(h, "Empty")
    request_id = (await call(h, "DELETE", f"/organizations/{org}", requester, 202))["id"]
    await call(h, "POST", f"/approvals/{request_id}/approve", first, 200)
    statuses: list[int] = []

    async def approve(key: str) -> None:
        response = await h.http.post(f"{API}/approvals/{request_id}/approve",
                                     headers={"x-api-key": key})
        statuses.append(response.status_code)

    async with anyio.create_task_group() as tg:
        tg.start_soon(approve, second)
        tg.start_soon(approve, third)
    assert sorted(statuses) == [200, 409]
    assert audit_actions(h, org).count("organization.delete") == 1
    assert audit_actions(h, request_id).count("approval.execute") == 1

    key_request = (await call(h, "POST", "/api-keys", requester, 202,
                              json={"name": "root", "permissions": ["*"]}))["id"]
    for approver in (first, second):
        await call(h, "POST", f"/approvals/{key_request}/approve", approver, 200)
    before = key_count(h)
    answers: list[httpx.Response] = []

    async def reveal() -> None:
        answers.append(await h.http.post(f"{API}/approvals/{key_request}/reveal",
                                         headers={"x-api-key": requester}))

    async with anyio.create_task_group() as tg:
        tg.start_soon(reveal)
        tg.start_soon(reveal)
    assert sorted(a.status_code for a in answers) == [201, 409]
    for answer in answers:
        if answer.status_code == 201:
            factories.remember(answer.json()["key"])
    assert key_count(h) == before + 1


async def test_lists_of_requests_are_paged(gated: AppHarness) -> None:
    h = gated
    requester, other, _ = admins(h)
    made = []
    for i in range(3):
        made.append((await call(h, "POST", "/api-keys", requester, 202,
                                json={"name": f"k{i}", "permissions": ["*"]}))["id"])
        h.runtime.clock.advance(1)  # type: ignore[attr-defined]
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2, "state": "pending"}
    while True:
        page = await call(h, "GET", "/approvals", other, 200, params=params)
        seen += [r["id"] for r in page["data"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == made
    await call(h, "GET", "/approvals", other, 400, params={"cursor": "nope"})


# -- the CLI -------------------------------------------------------------------------------


def test_cli_lists_approves_and_rejects(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "authserver.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\nkeys_dir = "{tmp_path / "keys"}"\n'
                      "[approvals]\nrequired = 1\n")

    def run(*args: str) -> Any:
        code = main(["--config", str(config), "--json", *args])
        out, err = capsys.readouterr()
        assert code == 0, err
        return json.loads(out)

    empty = run("orgs", "create", "--name", "Empty")["id"]
    other = run("orgs", "create", "--name", "Other")["id"]
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'data' / 'authserver.db'}",
                             approvals={"required": 1})
    db = Database(settings.effective_database_url)
    requester = audit.Actor("api_key:key_requester")
    with db.session(write=True) as session:
        doomed = approvals.request_org_delete(session, settings.approvals, empty, time.time(),
                                              requester)
        spared = approvals.request_org_delete(session, settings.approvals, other, time.time(),
                                              requester)
    listed = run("approvals", "list", "--state", "pending")
    assert {r["id"] for r in listed} == {doomed.id, spared.id}
    assert run("approvals", "show", doomed.id)["action"] == "organization.delete"
    done = run("approvals", "approve", doomed.id)
    assert done["state"] == "executed"
    rejected = run("approvals", "reject", spared.id, "--reason", "keep it")
    assert rejected["rejection"]["reason"] == "keep it"
    assert rejected["rejection"]["by"].startswith("cli")
    with db.session() as session:
        assert session.get(Organization, empty) is None
        assert session.get(Organization, other) is not None
        assert session.get(ApprovalRequest, spared.id).state == "rejected"  # type: ignore[union-attr]
    assert run("orgs", "delete", other)["id"] == other
    code = main(["--config", str(config), "approvals", "approve", spared.id])
    assert code == 2 and "rejected" in capsys.readouterr().err
    code = main(["--config", str(config), "orgs", "delete", "org_default"])
    assert code == 2 and "operator" in capsys.readouterr().err
    db.dispose()


def test_delete_org_domain_rules(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    db = Database(settings.effective_database_url)
    prepare_storage(db)
    actor = audit.Actor("test")
    with db.session(write=True) as session:
        org = organizations.create_org(session, "Gone", 1.0, actor).id
    with db.session(write=True) as session:
        organizations.delete_org(session, org, 2.0, actor)
    with db.session() as session, pytest.raises(Exception, match="no organisation"):
        organizations.delete_org(session, org, 3.0, actor)
    db.dispose()


async def test_raising_a_key_to_privileged_permissions_is_gated(gated: AppHarness) -> None:
    """PATCH cannot make a plain key (made at once) a `*` key without the quorum."""
    h = gated
    requester, first, second = admins(h)
    key_id, key = new_key(h, "org_default", "invoices.read")
    factories.remember(key)
    await call(h, "PATCH", f"/api-keys/{key_id}", requester, 400,
               json={"permissions": ["*"], "ip_allowlist": ["nope"]})  # checked when asked
    assert (await call(h, "GET", "/approvals", first, 200))["data"] == []
    pending = await call(h, "PATCH", f"/api-keys/{key_id}", requester, 202,
                         json={"permissions": ["*"], "rate_limits": {"hourly": "50/hour"}})
    assert pending["action"] == "api_key.update.privileged" and pending["target"] == key_id
    assert pending["payload"]["previous_permissions"] == ["invoices.read"]
    assert pending["payload"]["changes"] == {"permissions": ["*"],
                                             "rate_limits": {"hourly": "50/hour"}}
    assert key not in json.dumps(pending)
    itself = await h.http.get(f"{API}/api-key", headers={"x-api-key": key})
    assert itself.json()["permissions"] == ["invoices.read"]
    # Changes that reach nothing privileged are made at once.
    plain = await call(h, "PATCH", f"/api-keys/{key_id}", requester, 200,
                       json={"permissions": ["invoices.*"]})
    assert plain["permissions"] == ["invoices.*"]

    request_id = pending["id"]
    await call(h, "POST", f"/approvals/{request_id}/approve", requester, 403)
    await call(h, "POST", f"/approvals/{request_id}/approve", first, 200)
    done = await call(h, "POST", f"/approvals/{request_id}/approve", second, 200)
    assert done["state"] == "executed" and done["result"] == key_id
    itself = await h.http.get(f"{API}/api-key", headers={"x-api-key": key})
    assert itself.json()["permissions"] == ["*"]
    assert audit_actions(h, request_id) == ["approval.request", "approval.approve",
                                            "approval.approve", "approval.execute"]
    with h.runtime.db.session() as session:
        update = session.scalars(select(AuditEntry).where(
            AuditEntry.action == "api_key.update", AuditEntry.target == key_id)
            .order_by(AuditEntry.id.desc()).limit(1)).one()
        assert update.details["approval"] == request_id
        assert update.actor == actor(second)
    # A `*` key narrowed is not gated.
    await call(h, "PATCH", f"/api-keys/{key_id}", requester, 200,
               json={"permissions": ["invoices.read"]})


async def test_a_key_update_that_cannot_run_leaves_the_request_pending(
        gated: AppHarness) -> None:
    h = gated
    requester, first, second = admins(h)
    key_id, _ = new_key(h, "org_default", "invoices.read")
    request_id = (await call(h, "PATCH", f"/api-keys/{key_id}", requester, 202,
                             json={"permissions": ["*"]}))["id"]
    await call(h, "POST", f"/api-keys/{key_id}/revoke", requester, 200)
    await call(h, "POST", f"/approvals/{request_id}/approve", first, 200)
    await call(h, "POST", f"/approvals/{request_id}/approve", second, 409)
    with h.runtime.db.session() as session:
        row = session.get(ApprovalRequest, request_id)
        assert row is not None and row.state == "pending" and len(row.approvals) == 1


async def test_which_key_updates_are_gated(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, approvals={"required": 1}, scopes=[
        {"name": "portal-provision", "api_key_only": True},
        {"name": "billing.mint", "api_key_only": True}])
    async with running_app(settings) as h:
        gate, catalog = h.settings.approvals, h.runtime.catalog

        def gated(current: tuple[str, ...], new: tuple[str, ...] | None) -> bool:
            return approvals.key_update_action(gate, catalog, current, new) is not None

        assert gated(("invoices.read",), ("*",))
        assert gated(("invoices.read",), ("portal-provision",))
        assert gated(("invoices.read",), ("billing.*",))  # a wildcard covering one
        assert gated(("portal-provision",), ("*",))
        assert gated(("billing.mint",), ("portal-provision", "billing.mint"))
        assert not gated(("*",), ("portal-provision",))  # narrowing
        assert not gated(("billing.*",), ("billing.mint",))
        assert not gated(("invoices.read",), ("invoices.*", "*.read"))
        assert not gated(("invoices.read",), None)
        off = make_settings(tmp_path, approvals={"required": 1,
                                                 "actions": ["organization.delete"]})
        assert approvals.key_update_action(off.approvals, catalog, (), ("*",)) is None


async def test_a_key_cannot_approve_what_a_key_it_made_asked_for(gated: AppHarness) -> None:
    """Approvers and requesters are apart in both directions along `created_by`."""
    h = gated
    maker, other, _ = admins(h)
    made = await call(h, "POST", "/api-keys", maker, 201, json={
        "name": "child", "permissions": ["clients.delete", "approvals.read"]})
    child = factories.remember(made["key"])
    client, _ = factories.create_client(h.runtime, name="c", scopes=[])
    request_id = (await call(h, "DELETE", f"/clients/{client.client_id}", child, 202))["id"]
    error = await call(h, "POST", f"/approvals/{request_id}/approve", maker, 403)
    assert "made by this approver" in error["message"]
    await call(h, "POST", f"/approvals/{request_id}/approve", other, 200)
