"""The admin UI's plumbing: templates and security headers, the session cookie and sign-in,
CSRF and same-origin checks, domain errors rendered as 4xx pages."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread
from sqlalchemy.exc import DataError, SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from authserver import approvals, audit, users
from authserver.errors import ApiError, Conflict, Invalid, NotFound, OAuthError
from authserver.storage.models import DEFAULT_ORG_ID
from authserver.tokenrate import TokenRate
from authserver.web.admin_api import AdminDeps, Caller
from authserver.web.assets import templates_dir
from authserver.web.errors import request_id
from authserver.web.forms import Form, parse_form, read_body
from authserver.web.middleware import client_address
from authserver.web.signin import SignIn

PREFIX = "/admin"
TEMPLATES = templates_dir()
Page = Callable[[Request, users.SignedIn], Awaitable[Response]]
# A person with role `admin` holds every permission within their organisation (like a `*`
# key); the admin API's no-escalation checks run on that set all the same.
PERSON_PERMISSIONS = ("*",)
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


class Refused(Exception):
    """Not allowed for this person (rendered as 403 with the message)."""


class AdminUiBase:
    def __init__(self, deps: AdminDeps, token_rate: TokenRate | None = None,
                 templates: Path = TEMPLATES) -> None:
        self.deps = deps
        self.settings = deps.settings
        self.token_rate = token_rate
        self.templates = Jinja2Templates(directory=str(templates))
        self.templates.env.filters["time"] = _utc
        self.templates.env.globals["operator_org"] = DEFAULT_ORG_ID
        self.javascript = (templates / "admin" / "admin.js").read_bytes()
        self.stylesheet = (templates / "admin" / "admin.css").read_bytes()
        self.signin = SignIn(self.settings, deps.db, deps.clock)
        self.trusted = [ipaddress.ip_network(c, strict=False)
                        for c in self.settings.server.trusted_proxies]

    # -- plumbing -------------------------------------------------------------------------

    def render(self, request: Request, name: str, status: int = 200,
               signed: users.SignedIn | None = None, **context: Any) -> Response:
        response = self.templates.TemplateResponse(
            request, f"admin/{name}", {
                "signed": signed, "prefix": PREFIX,
                "pending_approvals": getattr(request.state, "pending_approvals", 0),
                **context}, status_code=status)
        response.headers["cache-control"] = "no-store"
        response.headers["x-frame-options"] = "DENY"
        response.headers["content-security-policy"] = CSP
        return response

    async def db(self, fn: Callable[[Session], Any], write: bool = False) -> Any:
        def run() -> Any:
            with self.deps.db.session(write=write) as session:
                return fn(session)
        return await anyio.to_thread.run_sync(run)

    async def signed_in(self, request: Request) -> users.SignedIn | None:
        signed = await self.signin.current(request)
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
                request.state.pending_approvals = await self.pending_approvals(signed)
                return await handler(request, signed)
            except Refused as exc:
                return self.render(request, "error.html", 403, signed, message=str(exc))
            except ApiError as exc:  # the admin API's checks, reused (e.g. may_grant)
                return self.render(request, "error.html", exc.status, signed,
                                   message=exc.message)
            except (Invalid, Conflict, NotFound) as exc:
                status = 404 if isinstance(exc, NotFound) else 400
                return self.render(request, "error.html", status, signed, message=str(exc))
            except DataError:  # e.g. a NUL character, which PostgreSQL cannot store
                return self.render(request, "error.html", 400, signed,
                                   message="A value cannot be stored as given (a NUL "
                                   "character, or a number out of range).")
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
        return self.signin.csrf_ok(request, form, signed.csrf_token)

    def actor(self, request: Request, signed: users.SignedIn) -> audit.Actor:
        return audit.Actor(f"user:{signed.user.id}", client_address(request.scope, self.trusted),
                           request_id(request), signed.user.org_id)

    def caller(self, request: Request, signed: users.SignedIn) -> Caller:
        """The signed-in person as the admin API sees a caller, for its may-grant rules."""
        return Caller(PERSON_PERMISSIONS, signed.user.org_id, self.actor(request, signed))

    async def pending_approvals(self, signed: users.SignedIn) -> int:
        """For the nav: requests waiting for approval that this person can see."""
        now, org = self.deps.clock.now(), self.org_filter(signed)
        count: int = await self.db(lambda s: approvals.count_pending(s, now, org))
        return count

    def requested(self, request: Request, signed: users.SignedIn,
                  view: approvals.ApprovalView) -> Response:
        """A gated action became a pending request (docs/approvals.md): 202 and a link."""
        return self.render(request, "approval_requested.html", 202, signed, approval=view)

    @staticmethod
    def org_filter(signed: users.SignedIn) -> str | None:
        return None if signed.user.org_id == DEFAULT_ORG_ID else signed.user.org_id

    @staticmethod
    def form_of(request: Request) -> Form:
        form: Form = request.state.form
        return form

    async def script(self, request: Request) -> Response:
        """The pages' only script, kept out of the HTML so the CSP needs no 'unsafe-inline'."""
        return Response(self.javascript, 200, {"cache-control": "public, max-age=3600"},
                        "text/javascript")

    async def style(self, request: Request) -> Response:
        """The pages' stylesheet, likewise out of the HTML."""
        return Response(self.stylesheet, 200, {"cache-control": "public, max-age=3600"},
                        "text/css")

    # -- sign in and out ------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        return self.render(request, "login.html")

    async def login(self, request: Request) -> Response:
        form = await self.form(request)
        username, password = form.values.get("username", ""), form.values.get("password", "")
        outcome = await self.signin.attempt(request, username, password, role="admin")
        if isinstance(outcome, str):
            return self.render(request, "login.html", 401, error=outcome, username=username)
        response = RedirectResponse(PREFIX, 303)
        self.signin.set_cookie(response, outcome[0])
        return response

    async def logout(self, request: Request, signed: users.SignedIn) -> Response:
        response = RedirectResponse(f"{PREFIX}/login", 303)
        await self.signin.end(request, response)
        return response


def _utc(value: float | None) -> str:
    if value is None:
        return ""
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")


def days(raw: str, what: str = "expires in") -> int | None:
    """A whole number of days from a form field (1 to 3650), or None when left empty."""
    raw = raw.strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit() and 0 < int(raw) <= 3650):
        raise Invalid(f"{what}: 1 to 3650 days, or empty for none")
    return int(raw)


async def no_icon(request: Request) -> Response:
    return Response(status_code=204, headers={"cache-control": "public, max-age=86400"})
