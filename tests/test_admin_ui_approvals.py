"""Quorum approval in the admin UI, in-process over ASGI: two people signed in side by side
(each with their own cookie jar) and an API-key admin. Gated actions make pending requests,
another person (UI) or key (API) approves, the requester cannot, rejection and withdrawal, the
key revealed once and working, CSRF-less posts change nothing, other organisations get 404,
and raising a key to privileged permissions on its edit page waits for the quorum too."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from authserver.clock import FakeClock
from authserver.storage.models import ApiKey, ApprovalRequest, Client, Organization
from tests import factories
from tests.conftest import AppHarness, make_settings, running_app
from tests.test_admin_ui import PASSWORD, csrf, make_user
from tests.test_api_keys import new_key, new_org

pytestmark = pytest.mark.anyio
GATES = ["api_key.create.privileged", "organization.delete", "client.delete"]
APR = re.compile(r"apr_[0-9a-f]{16}")


@dataclass
class Quorum:
    h: AppHarness
    alice: httpx.AsyncClient  # operator admins, each signed in in their own browser
    bob: httpx.AsyncClient
    admin_key: str  # an API key admin (`*`, operator organisation)
    running: running_app  # for more browsers


async def signed_in(running: running_app, username: str, port: int) -> httpx.AsyncClient:
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=running.app, client=("127.0.0.1", port)),
        base_url=running.runtime.settings.issuer)
    answer = await client.post("/admin/login", data={"username": username,
                                                     "password": PASSWORD})
    assert answer.status_code == 303, answer.text
    return client


@asynccontextmanager
async def quorum(tmp_path: Path, required: int, clock: FakeClock | None = None
                 ) -> AsyncIterator[Quorum]:
    running = running_app(make_settings(tmp_path, approvals={
        "required": required, "actions": GATES}), clock)
    async with running as h:
        make_user(h, "alice")
        make_user(h, "bob")
        alice = await signed_in(running, "alice", 50001)
        bob = await signed_in(running, "bob", 50002)
        try:
            yield Quorum(h, alice, bob, new_key(h, "org_default", "*")[1], running)
        finally:
            await alice.aclose()
            await bob.aclose()


async def token_of(browser: httpx.AsyncClient, path: str = "/admin/approvals") -> str:
    return csrf(await browser.get(path))


async def post(browser: httpx.AsyncClient, path: str, **data: str) -> httpx.Response:
    return await browser.post(path, data={"csrf_token": await token_of(browser), **data})


def request_row(h: AppHarness, request_id: str) -> ApprovalRequest:
    with h.runtime.db.session() as session:
        row = session.get(ApprovalRequest, request_id)
        assert row is not None
        session.expunge(row)
        return row


def key_count(h: AppHarness) -> int:
    with h.runtime.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(ApiKey)) or 0)


def requested_id(page: httpx.Response, needed: int) -> str:
    assert page.status_code == 202, page.text[-800:]
    assert f"needs {needed} approval" in page.text
    match = APR.search(page.text)
    assert match, page.text
    assert f'href="/admin/approvals/{match.group(0)}"' in page.text
    return match.group(0)


@pytest.mark.parametrize("required", [1, 2])
async def test_a_key_asked_for_in_the_ui_is_approved_and_revealed_once(
        tmp_path: Path, required: int) -> None:
    async with quorum(tmp_path, required) as q:
        h, before = q.h, key_count(q.h)
        page = await post(q.alice, "/admin/api-keys", name="root", permissions="*",
                          expires_in_days="30")
        request_id = requested_id(page, required)
        assert key_count(h) == before  # made only at the reveal
        assert request_row(h, request_id).requested_by.startswith("user:")

        listing = await q.bob.get("/admin/approvals")
        assert request_id in listing.text
        assert re.search(r'id="pending-approvals"[^>]*>1<', listing.text)  # the nav count
        mine = await q.alice.get(f"/admin/approvals/{request_id}")
        assert mine.status_code == 200 and "This is your request" in mine.text
        assert ">Approve<" not in mine.text

        # The requester cannot approve, in any session; a post without CSRF changes nothing.
        own = await post(q.alice, f"/admin/approvals/{request_id}/approve")
        assert own.status_code == 403 and "requester" in own.text
        forged = await q.bob.post(f"/admin/approvals/{request_id}/approve")
        assert forged.status_code == 403
        cross = await q.bob.post(f"/admin/approvals/{request_id}/approve", data={
            "csrf_token": await token_of(q.bob)}, headers={"origin": "https://evil.example"})
        assert cross.status_code == 403
        assert request_row(h, request_id).approvals == []

        theirs = await q.bob.get(f"/admin/approvals/{request_id}")
        assert ">Approve<" in theirs.text and "alice" in theirs.text
        approved = await post(q.bob, f"/admin/approvals/{request_id}/approve")
        assert approved.status_code == 303
        assert approved.headers["location"] == f"/admin/approvals/{request_id}?done=approved"
        again = await post(q.bob, f"/admin/approvals/{request_id}/approve")
        assert again.status_code == 400
        assert ("already approved" if required == 2 else "not pending") in again.text
        if required == 2:
            early = await post(q.alice, f"/admin/approvals/{request_id}/reveal")
            assert early.status_code == 400 and "not approved" in early.text
            via_api = await h.http.post(f"/api/v1/approvals/{request_id}/approve",
                                        headers={"x-api-key": q.admin_key})
            assert via_api.status_code == 200 and via_api.json()["state"] == "approved"
        row = request_row(h, request_id)
        assert row.state == "approved" and len(row.approvals) == required
        assert len({a["by"] for a in row.approvals}) == required  # distinct approvers

        not_theirs = await post(q.bob, f"/admin/approvals/{request_id}/reveal")
        assert not_theirs.status_code == 403 and "requester" in not_theirs.text
        assert key_count(h) == before
        shown = await q.alice.get(f"/admin/approvals/{request_id}")
        assert "Reveal the key" in shown.text
        forged_reveal = await q.alice.post(f"/admin/approvals/{request_id}/reveal")
        assert forged_reveal.status_code == 403 and key_count(h) == before

        revealed = await post(q.alice, f"/admin/approvals/{request_id}/reveal")
        assert revealed.status_code == 201, revealed.text[-800:]
        key = factories.remember(re.search(r'id="api-key">([^<]+)<',
                                           revealed.text).group(1))  # type: ignore[union-attr]
        assert 'data-copy="api-key"' in revealed.text
        assert revealed.headers["cache-control"] == "no-store"
        itself = await h.http.get("/api/v1/api-key", headers={"x-api-key": key})
        assert itself.status_code == 200 and itself.json()["permissions"] == ["*"]
        assert itself.json()["expires_at"] == pytest.approx(h.runtime.clock.now() + 30 * 86400,
                                                            abs=5)
        second = await post(q.alice, f"/admin/approvals/{request_id}/reveal")
        assert second.status_code == 400 and "only once" in second.text
        assert key not in second.text
        assert key_count(h) == before + 1
        for browser in (q.alice, q.bob):
            page = await browser.get(f"/admin/approvals/{request_id}")
            assert "executed" in page.text and key not in page.text
            assert key not in (await browser.get("/admin/audit")).text
        done = await q.bob.get("/admin/approvals?state=executed")
        assert request_id in done.text and 'id="pending-approvals"' not in done.text


async def test_requests_of_the_api_are_decided_in_the_ui(tmp_path: Path) -> None:
    async with quorum(tmp_path, 1) as q:
        h = q.h
        empty = new_org(h, "Empty")
        asked = await h.http.delete(f"/api/v1/organizations/{empty}",
                                    headers={"x-api-key": q.admin_key})
        assert asked.status_code == 202
        request_id = asked.json()["id"]
        page = await q.alice.get(f"/admin/approvals/{request_id}")
        assert page.status_code == 200 and "Delete an organisation" in page.text
        assert empty in page.text
        done = await post(q.alice, f"/admin/approvals/{request_id}/approve")
        assert done.status_code == 303
        assert request_row(h, request_id).state == "executed"
        with h.runtime.db.session() as session:
            assert session.get(Organization, empty) is None

        # A key a person made asks; that person cannot approve it (one person, one voice).
        made = await post(q.alice, "/admin/api-keys", name="deleter",
                          permissions="clients.delete approvals.update")
        assert made.status_code == 201
        puppet = factories.remember(re.search(r'id="api-key">([^<]+)<',
                                              made.text).group(1))  # type: ignore[union-attr]
        client, _ = factories.create_client(h.runtime, name="doomed", scopes=[])
        asked = await h.http.delete(f"/api/v1/clients/{client.client_id}",
                                    headers={"x-api-key": puppet})
        assert asked.status_code == 202, asked.text
        request_id = asked.json()["id"]
        refused = await post(q.alice, f"/admin/approvals/{request_id}/approve")
        assert refused.status_code == 403 and "made by this approver" in refused.text
        assert request_row(h, request_id).approvals == []
        ok = await post(q.bob, f"/admin/approvals/{request_id}/approve")
        assert ok.status_code == 303
        with h.runtime.db.session() as session:
            assert session.get(Client, client.client_id) is None

        # ... and the other way round: a request from the UI, approved with a key that
        # person made, is refused by the API.
        other, _ = factories.create_client(h.runtime, name="kept", scopes=[])
        page = await post(q.alice, f"/admin/clients/{other.client_id}/delete")
        request_id = requested_id(page, 1)
        answer = await h.http.post(f"/api/v1/approvals/{request_id}/approve",
                                   headers={"x-api-key": puppet})
        assert answer.status_code == 403
        with h.runtime.db.session() as session:
            assert session.get(Client, other.client_id) is not None


async def test_reject_and_withdraw(tmp_path: Path) -> None:
    async with quorum(tmp_path, 2) as q:
        h = q.h
        client, _ = factories.create_client(h.runtime, name="keep me", scopes=[])
        page = await post(q.alice, f"/admin/clients/{client.client_id}/delete")
        request_id = requested_id(page, 2)
        forged = await q.bob.post(f"/admin/approvals/{request_id}/reject",
                                  data={"reason": "forged"})
        assert forged.status_code == 403 and request_row(h, request_id).state == "pending"
        bad = await post(q.bob, f"/admin/approvals/{request_id}/reject", reason="x" * 501)
        assert bad.status_code == 400 and request_row(h, request_id).state == "pending"
        rejected = await post(q.bob, f"/admin/approvals/{request_id}/reject",
                              reason="still in use")
        assert rejected.status_code == 303
        shown = await q.alice.get(rejected.headers["location"])
        assert "Rejected by bob" in shown.text and "still in use" in shown.text
        late = await post(q.alice, f"/admin/approvals/{request_id}/approve")
        assert late.status_code in (400, 403)
        assert request_row(h, request_id).state == "rejected"
        with h.runtime.db.session() as session:
            assert session.get(Client, client.client_id) is not None

        # The requester withdraws its own request by rejecting it.
        empty = new_org(h, "Empty")
        page = await post(q.alice, f"/admin/organizations/{empty}/delete")
        request_id = requested_id(page, 2)
        mine = await q.alice.get(f"/admin/approvals/{request_id}")
        assert ">Withdraw<" in mine.text
        assert (await post(q.alice, f"/admin/approvals/{request_id}/reject")).status_code == 303
        assert request_row(h, request_id).state == "rejected"
        listing = await q.alice.get("/admin/approvals?state=rejected")
        assert listing.text.count("approval-row") == 2
        assert (await q.alice.get("/admin/approvals?state=nope")).status_code == 400
        assert (await q.alice.get("/admin/approvals/apr_nope")).status_code == 404
        assert (await q.alice.get("/admin/approvals/apr_0000000000000000")).status_code == 404
        with h.runtime.db.session() as session:
            assert session.get(Organization, empty) is not None


async def test_other_organisations_get_404(tmp_path: Path) -> None:
    async with quorum(tmp_path, 1) as q:
        h = q.h
        tenant = new_org(h, "Tenant")
        make_user(h, "tina", org_id=tenant)
        tina = await signed_in(q.running, "tina", 50003)
        try:
            page = await post(q.alice, "/admin/api-keys", name="root", permissions="*")
            operator_request = requested_id(page, 1)
            assert operator_request not in (await tina.get("/admin/approvals?state=all")).text
            assert (await tina.get(f"/admin/approvals/{operator_request}")).status_code == 404
            for action in ("approve", "reject", "reveal"):
                answer = await post(tina, f"/admin/approvals/{operator_request}/{action}")
                assert answer.status_code == 404
            assert request_row(h, operator_request).state == "pending"

            # Tina's own requests are hers and the operator's to see.
            asked = await post(tina, "/admin/api-keys", name="tenant root", permissions="*")
            tenant_request = requested_id(asked, 1)
            assert tenant_request in (await q.bob.get("/admin/approvals")).text
            listing = await tina.get("/admin/approvals")
            assert tenant_request in listing.text and operator_request not in listing.text
            assert re.search(r'id="pending-approvals"[^>]*>1<', listing.text)
            # A tenant admin cannot delete organisations, nor approve their deletion.
            refused = await post(tina, f"/admin/organizations/{tenant}/delete")
            assert refused.status_code == 403
            asked = await h.http.delete(f"/api/v1/organizations/{tenant}",
                                        headers={"x-api-key": q.admin_key})
            assert asked.status_code == 409  # not empty: tina is in it
        finally:
            await tina.aclose()


async def test_raising_a_key_on_its_edit_page_waits_for_the_quorum(tmp_path: Path) -> None:
    async with quorum(tmp_path, 1) as q:
        h = q.h
        key_id, key = new_key(h, "org_default", "invoices.read")
        factories.remember(key)
        edit = f"/admin/api-keys/{key_id}"
        forged = await q.alice.post(edit, data={"name": "k", "permissions": "*"})
        assert forged.status_code == 403
        page = await post(q.alice, edit, name="root now", permissions="*")
        request_id = requested_id(page, 1)
        row = request_row(h, request_id)
        assert row.action == "api_key.update.privileged" and row.target == key_id
        assert row.payload["changes"] == {"name": "root now", "permissions": ["*"]}
        assert key not in json.dumps(row.payload)
        itself = await h.http.get("/api/v1/api-key", headers={"x-api-key": key})
        assert itself.json()["permissions"] == ["invoices.read"]  # unchanged until approved
        # Narrowing or an unprivileged change is made at once.
        plain = await post(q.alice, edit, name="k", permissions="invoices.read invoices.create")
        assert plain.status_code == 303, plain.text[-600:]
        shown = await q.bob.get(f"/admin/approvals/{request_id}")
        assert "Raise an API key to privileged permissions" in shown.text
        assert "invoices.read" in shown.text  # the permissions before
        assert (await post(q.bob, f"/admin/approvals/{request_id}/approve")).status_code == 303
        assert request_row(h, request_id).state == "executed"
        itself = await h.http.get("/api/v1/api-key", headers={"x-api-key": key})
        assert itself.json()["permissions"] == ["*"] and itself.json()["name"] == "root now"


async def test_not_gated_the_ui_acts_at_once(harness: AppHarness) -> None:
    h = harness
    make_user(h, "alice")
    await h.http.post("/admin/login", data={"username": "alice", "password": PASSWORD})
    token = csrf(await h.http.get("/admin/organizations"))
    empty = new_org(h, "Empty")
    gone = await h.http.post(f"/admin/organizations/{empty}/delete",
                             data={"csrf_token": token})
    assert gone.status_code == 303 and gone.headers["location"].endswith(f"deleted={empty}")
    with h.runtime.db.session() as session:
        assert session.get(Organization, empty) is None
    kept = await h.http.post("/admin/organizations/org_default/delete",
                             data={"csrf_token": token})
    assert kept.status_code == 400 and "cannot be deleted" in kept.text
    listing = await h.http.get("/admin/approvals")
    assert listing.status_code == 200 and "No pending requests" in listing.text
