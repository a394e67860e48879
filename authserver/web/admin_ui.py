"""The admin web UI at /admin: server-rendered pages (Jinja2, `templates/admin/`) over the same
domain functions as the CLI and the admin API.

Sign-in: a person with role `admin` (argon2id password, lockout with backoff). The session is a
random cookie value (`HttpOnly`, `SameSite=Lax`, `Secure` when the issuer is https) of which
only a digest is stored. Every form carries the session's CSRF token, and a POST without it
(or from another origin) is refused with 403. A person of another organisation than the
operator's sees only that organisation.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from authserver import apikeys, audit, clients, organizations, users
from authserver.apikeys.format import Environment
from authserver.errors import Conflict, Invalid, NotFound, OAuthError
from authserver.storage.models import DEFAULT_ORG_ID, ApiKey, AuditEntry, Client, Organization
from authserver.web.admin_api import AdminDeps
from authserver.web.errors import request_id
from authserver.web.forms import Form, parse_form, read_body
from authserver.web.middleware import client_address

PREFIX = "/admin"
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
Page = Callable[[Request, users.SignedIn], Awaitable[Response]]


class AdminUi:
    def __init__(self, deps: AdminDeps, templates: Path = TEMPLATES) -> None:
        self.deps = deps
        self.settings = deps.settings
        self.templates = Jinja2Templates(directory=str(templates))
        self.templates.env.filters["time"] = _utc
        self.javascript = (templates / "admin" / "admin.js").read_bytes()
        self.secure = self.settings.issuer.startswith("https://")
        self.cookie = ("__Host-" if self.secure else "") + "authserver_admin"
        self.lifetime = float(self.settings.admin_ui.session_lifetime)
        self.trusted = [ipaddress.ip_network(c, strict=False)
                        for c in self.settings.server.trusted_proxies]

    # -- plumbing -------------------------------------------------------------------------

    def render(self, request: Request, name: str, status: int = 200,
               signed: users.SignedIn | None = None, **context: Any) -> Response:
        response = self.templates.TemplateResponse(
            request, f"admin/{name}", {"signed": signed, "prefix": PREFIX, **context},
            status_code=status)
        response.headers["cache-control"] = "no-store"
        response.headers["x-frame-options"] = "DENY"
        response.headers["content-security-policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            "frame-ancestors 'none'; form-action 'self'")
        return response

    async def db(self, fn: Callable[[Session], Any], write: bool = False) -> Any:
        def run() -> Any:
            with self.deps.db.session(write=write) as session:
                return fn(session)
        return await anyio.to_thread.run_sync(run)

    async def signed_in(self, request: Request) -> users.SignedIn | None:
        token = request.cookies.get(self.cookie)
        if not token:
            return None
        now = self.deps.clock.now()
        signed: users.SignedIn | None = await self.db(
            lambda s: users.resume_session(s, token, now))
        return signed if signed is not None and signed.user.role == "admin" else None

    def page(self, handler: Page) -> Callable[[Request], Awaitable[Response]]:
        """A page for signed-in admins: others go to the login page; a POST needs the CSRF
        token and a same-origin request; domain errors show on the page as 4xx."""
        async def endpoint(request: Request) -> Response:
            signed = await self.signed_in(request)
            if signed is None:
                return RedirectResponse(f"{PREFIX}/login", 303)
            if request.method == "POST":
                form = await self.form(request)
                if not self.csrf_ok(request, form, signed):
                    return self.render(request, "error.html", 403, signed,
                                       message="The form has expired or did not come from "
                                       "this site. Go back, reload the page and try again.")
                request.state.form = form
            try:
                return await handler(request, signed)
            except (Invalid, Conflict, NotFound) as exc:
                status = 404 if isinstance(exc, NotFound) else 400
                return self.render(request, "error.html", status, signed, message=str(exc))
            except SQLAlchemyError:
                return self.render(request, "error.html", 503, signed,
                                   message="The store is unavailable; nothing was changed. "
                                   "Try again shortly.")
        return endpoint

    async def form(self, request: Request) -> Form:
        try:
            return parse_form(await read_body(request, self.settings.server.max_body_bytes),
                              ("scope", "ip_allow"))
        except OAuthError:
            return Form({}, {})

    def csrf_ok(self, request: Request, form: Form, signed: users.SignedIn) -> bool:
        origin = request.headers.get("origin")
        if origin is not None and origin != "null":
            issuer = urlsplit(self.settings.issuer)
            if origin != f"{issuer.scheme}://{issuer.netloc}" and \
                    urlsplit(origin).netloc != request.headers.get("host"):
                return False
        return hmac.compare_digest(form.values.get("csrf_token", ""), signed.csrf_token)

    def actor(self, request: Request, signed: users.SignedIn) -> audit.Actor:
        return audit.Actor(f"user:{signed.user.id}", client_address(request.scope, self.trusted),
                           request_id(request), signed.user.org_id)

    @staticmethod
    def org_filter(signed: users.SignedIn) -> str | None:
        return None if signed.user.org_id == DEFAULT_ORG_ID else signed.user.org_id

    async def script(self, request: Request) -> Response:
        """The pages' only script, kept out of the HTML so the CSP needs no 'unsafe-inline'."""
        return Response(self.javascript, 200, {"cache-control": "public, max-age=3600"},
                        "text/javascript")

    # -- sign in and out ------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        return self.render(request, "login.html")

    async def login(self, request: Request) -> Response:
        form = await self.form(request)
        username, password = form.values.get("username", ""), form.values.get("password", "")
        source = client_address(request.scope, self.trusted)
        now = self.deps.clock.now()

        def attempt(session: Session) -> tuple[str, users.SignedIn] | float | None:
            result = users.login(session, username, password, now, source)
            if result.user is None:
                return result.locked_for
            if result.user.role != "admin":
                return None
            return users.start_session(session, result.user, now, self.lifetime, source)

        outcome = await self.db(attempt, write=True)
        if not isinstance(outcome, tuple):
            message = ("Too many failed attempts: try again in "
                       f"{int(outcome) + 1} seconds." if outcome else
                       "Wrong username or password.")
            return self.render(request, "login.html", 401, error=message, username=username)
        token, _ = outcome
        response = RedirectResponse(PREFIX, 303)
        response.set_cookie(self.cookie, token, max_age=int(self.lifetime), path="/",
                            httponly=True, secure=self.secure, samesite="lax")
        return response

    async def logout(self, request: Request, signed: users.SignedIn) -> Response:
        token = request.cookies.get(self.cookie, "")
        await self.db(lambda s: users.end_session(s, token), write=True)
        response = RedirectResponse(f"{PREFIX}/login", 303)
        response.delete_cookie(self.cookie, path="/", secure=self.secure, httponly=True,
                               samesite="lax")
        return response

    # -- pages ----------------------------------------------------------------------------

    async def dashboard(self, request: Request, signed: users.SignedIn) -> Response:
        org = self.org_filter(signed)
        since = self.deps.clock.now() - 86400

        def counts(session: Session) -> dict[str, Any]:
            def count(model: Any, *where: Any) -> int:
                return int(session.scalar(select(func.count()).select_from(model).where(
                    *where)) or 0)
            in_org = [] if org is None else [Client.org_id == org]
            keys_in_org = [] if org is None else [ApiKey.org_id == org]
            failures = select(AuditEntry).where(
                AuditEntry.outcome != "success", AuditEntry.at >= since,
                *([] if org is None else [AuditEntry.org_id == org])
            ).order_by(AuditEntry.id.desc()).limit(10)
            return {
                "clients": count(Client, *in_org),
                "registered": count(Client, Client.origin == "dcr", *in_org),
                "api_keys": count(ApiKey, ApiKey.status == "active", *keys_in_org),
                "organizations": count(Organization) if org is None else 1,
                "failures": list(session.scalars(failures)),
            }

        stats = await self.db(counts)
        return self.render(request, "dashboard.html", signed=signed, **stats)

    async def client_list(self, request: Request, signed: users.SignedIn) -> Response:
        query = request.query_params.get("q") or None
        origin = request.query_params.get("origin")
        origin = origin if origin in ("admin", "dcr") else None
        found = await self.db(lambda s: clients.list_clients(
            s, self.org_filter(signed), origin, name_contains=query, limit=500))
        return self.render(request, "clients.html", signed=signed, clients=found,
                           q=query or "", origin=origin or "")

    async def client_create(self, request: Request, signed: users.SignedIn) -> Response:
        form: Form = request.state.form
        spec = clients.ClientSpec(
            name=form.values.get("name", ""),
            scopes=tuple(" ".join(form.repeated.get("scope", [])).split()),
            ip_allow=tuple(v for v in form.values.get("ip_allow_text", "").split() if v),
            org_id=signed.user.org_id if self.org_filter(signed) else
            form.values.get("org_id", DEFAULT_ORG_ID))
        now = self.deps.clock.now()
        record, secret = await self.db(lambda s: clients.create_client(
            s, self.deps.catalog, spec, now, actor=self.actor(request, signed)), write=True)
        return self.render(request, "client_created.html", 201, signed, client=record,
                           secret=secret)

    async def client_detail(self, request: Request, signed: users.SignedIn) -> Response:
        record = await self.own_client(request, signed)
        return self.render(request, "client.html", signed=signed, client=record,
                           scope_text=" ".join(sorted(record.scopes)),
                           ip_text="\n".join(str(n) for n in record.ip_allow))

    async def client_update(self, request: Request, signed: users.SignedIn) -> Response:
        record = await self.own_client(request, signed)
        form: Form = request.state.form
        change = clients.ClientUpdate(
            name=form.values.get("name"),
            scopes=tuple(form.values.get("scope_text", "").split()),
            ip_allow=tuple(form.values.get("ip_allow_text", "").split()))
        now = self.deps.clock.now()
        await self.db(lambda s: clients.update_client(
            s, self.deps.catalog, record.client_id, change, now, self.actor(request, signed)),
            write=True)
        self.deps.client_cache.invalidate([record.client_id])
        return RedirectResponse(f"{PREFIX}/clients/{record.client_id}?saved=1", 303)

    async def client_action(self, request: Request, signed: users.SignedIn) -> Response:
        record = await self.own_client(request, signed)
        action = request.path_params["action"]
        now, actor, cid = self.deps.clock.now(), self.actor(request, signed), record.client_id
        if action == "rotate-secret":
            secret = await self.db(lambda s: clients.rotate_secret(s, cid, now, actor), True)
            self.deps.client_cache.invalidate([cid])
            return self.render(request, "client_created.html", 200, signed, client=record,
                               secret=secret, rotated=True)
        if action in ("disable", "enable"):
            await self.db(lambda s: clients.set_disabled(s, cid, action == "disable", now,
                                                         actor), True)
        elif action == "delete":
            await self.db(lambda s: clients.delete_client(s, cid, now, actor), True)
            self.deps.client_cache.invalidate([cid])
            return RedirectResponse(f"{PREFIX}/clients", 303)
        else:
            raise NotFound(f"no action {action}")
        self.deps.client_cache.invalidate([cid])
        return RedirectResponse(f"{PREFIX}/clients/{cid}", 303)

    async def own_client(self, request: Request, signed: users.SignedIn) -> clients.ClientRecord:
        client_id = request.path_params["client_id"]
        record: clients.ClientRecord = await self.db(lambda s: clients.get_client(s, client_id))
        if self.org_filter(signed) not in (None, record.org_id):
            raise NotFound(f"no client {client_id}")
        return record

    async def key_list(self, request: Request, signed: users.SignedIn) -> Response:
        revoked = request.query_params.get("revoked") == "1"
        now = self.deps.clock.now()
        found = await self.db(lambda s: apikeys.list_keys(
            s, self.org_filter(signed), include_revoked=revoked, limit=500))
        orgs = await self.db(organizations.list_orgs) if self.org_filter(signed) is None else []
        return self.render(request, "api_keys.html", signed=signed, keys=found, now=now,
                           revoked=revoked, orgs=orgs)

    async def key_create(self, request: Request, signed: users.SignedIn) -> Response:
        form: Form = request.state.form
        now = self.deps.clock.now()
        days = form.values.get("expires_in_days", "")
        if days and not (days.isascii() and days.isdigit() and 0 < int(days) <= 3650):
            raise Invalid("expires in: 1 to 3650 days, or empty for no expiry")
        org_id = signed.user.org_id if self.org_filter(signed) else \
            form.values.get("org_id", DEFAULT_ORG_ID)
        environment: Environment = "test" if form.values.get("environment") == "test" \
            else "live"
        spec = apikeys.ApiKeySpec(
            name=form.values.get("name", ""), org_id=org_id,
            permissions=tuple(form.values.get("permissions", "").split()),
            environment=environment,
            ip_allow=tuple(form.values.get("ip_allow_text", "").split()),
            expires_at=now + int(days) * 86400 if days else None)
        record, key = await self.db(lambda s: apikeys.create_key(
            s, self.deps.catalog, spec, self.settings.api_keys.prefix, now,
            self.actor(request, signed)), write=True)
        return self.render(request, "api_key_created.html", 201, signed, key_record=record,
                           key=key)

    async def key_action(self, request: Request, signed: users.SignedIn) -> Response:
        key_id, action = request.path_params["key_id"], request.path_params["action"]
        org, now, actor = self.org_filter(signed), self.deps.clock.now(), \
            self.actor(request, signed)
        if action == "rotate":
            form: Form = request.state.form
            hours = form.values.get("grace_hours", "0") or "0"
            if not (hours.isascii() and hours.isdigit() and int(hours) <= 720):
                raise Invalid("grace period: 0 to 720 hours")
            record, key = await self.db(lambda s: apikeys.rotate_key(
                s, key_id, self.settings.api_keys.prefix, now, actor,
                grace=int(hours) * 3600.0, org_id=org), write=True)
            self.deps.api_keys.keys.cache.invalidate([key_id])
            return self.render(request, "api_key_created.html", 201, signed,
                               key_record=record, key=key, rotated=key_id)
        if action != "revoke":
            raise NotFound(f"no action {action}")
        await self.db(lambda s: apikeys.revoke_key(s, key_id, now, actor, org), write=True)
        self.deps.api_keys.keys.cache.invalidate([key_id])
        return RedirectResponse(f"{PREFIX}/api-keys", 303)

    async def signing_keys(self, request: Request, signed: users.SignedIn) -> Response:
        now = self.deps.clock.now()
        await anyio.to_thread.run_sync(lambda: self.deps.keyring.load(now))
        return self.render(request, "keys.html", signed=signed,
                           keys=self.deps.keyring.snapshot(now).views,
                           operator=self.org_filter(signed) is None)

    async def rotate_key(self, request: Request, signed: users.SignedIn) -> Response:
        if self.org_filter(signed) is not None:
            return self.render(request, "error.html", 403, signed,
                               message="Only operators rotate signing keys.")
        ring, alg = self.deps.keyring, self.settings.signing.algorithm
        delay, clock = self.settings.signing.propagation_delay, self.deps.clock
        key = await anyio.to_thread.run_sync(
            lambda: ring.rotate(alg, clock.now(), delay, clock=clock.now))
        actor = self.actor(request, signed)
        await self.db(lambda s: audit.record(
            s, actor, "signing_key.rotate", key.kid, clock.now(),
            details={"alg": key.alg, "activate_at": key.activate_at}), write=True)
        return RedirectResponse(f"{PREFIX}/keys?rotated={key.kid}", 303)

    async def audit_log(self, request: Request, signed: users.SignedIn) -> Response:
        params = request.query_params
        before = params.get("before")
        query = audit.AuditQuery(
            actor=params.get("actor") or None, action=params.get("action") or None,
            target=params.get("target") or None, org_id=self.org_filter(signed),
            before_id=int(before) if before and before.isdigit() else None, limit=100)
        entries = await self.db(lambda s: audit.read(s, query))
        return self.render(request, "audit.html", signed=signed, entries=entries,
                           filters={k: params.get(k, "") for k in ("actor", "action", "target")},
                           next_before=entries[-1].id if len(entries) == 100 else None)


def _utc(value: float | None) -> str:
    if value is None:
        return ""
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")


async def no_icon(request: Request) -> Response:
    return Response(status_code=204, headers={"cache-control": "public, max-age=86400"})


def routes(ui: AdminUi) -> list[Any]:
    from starlette.routing import Route
    return [
        Route(f"{PREFIX}/admin.js", ui.script, methods=["GET"]),
        Route("/favicon.ico", no_icon, methods=["GET"]),
        Route(f"{PREFIX}/login", ui.login_page, methods=["GET"]),
        Route(f"{PREFIX}/login", ui.login, methods=["POST"]),
        Route(f"{PREFIX}/logout", ui.page(ui.logout), methods=["POST"]),
        Route(PREFIX, ui.page(ui.dashboard), methods=["GET"]),
        Route(f"{PREFIX}/clients", ui.page(ui.client_list), methods=["GET"]),
        Route(f"{PREFIX}/clients", ui.page(ui.client_create), methods=["POST"]),
        Route(f"{PREFIX}/clients/{{client_id}}", ui.page(ui.client_detail), methods=["GET"]),
        Route(f"{PREFIX}/clients/{{client_id}}", ui.page(ui.client_update), methods=["POST"]),
        Route(f"{PREFIX}/clients/{{client_id}}/{{action}}", ui.page(ui.client_action),
              methods=["POST"]),
        Route(f"{PREFIX}/api-keys", ui.page(ui.key_list), methods=["GET"]),
        Route(f"{PREFIX}/api-keys", ui.page(ui.key_create), methods=["POST"]),
        Route(f"{PREFIX}/api-keys/{{key_id}}/{{action}}", ui.page(ui.key_action),
              methods=["POST"]),
        Route(f"{PREFIX}/keys", ui.page(ui.signing_keys), methods=["GET"]),
        Route(f"{PREFIX}/keys/rotate", ui.page(ui.rotate_key), methods=["POST"]),
        Route(f"{PREFIX}/audit", ui.page(ui.audit_log), methods=["GET"]),
    ]
