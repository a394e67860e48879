"""The authorization endpoint and its pages: sign-in, consent, and the error page for requests
that may not be redirected (RFC 6749 §4.1, OAuth 2.1 §4.1, RFC 9207, OpenID Connect Core §3.1).

The request is checked first (`oauth.authorize`); then the person signs in (the session shared
with the admin UI, `web.signin`), consents unless a remembered consent covers the scopes, and
goes back to the client with a code, `state` and `iss`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import anyio.to_thread
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from authserver import audit, users
from authserver.clock import Clock
from authserver.config import Settings
from authserver.errors import (
    AccessDenied,
    ConsentRequired,
    LoginRequired,
    OAuthError,
    TemporarilyUnavailable,
)
from authserver.oauth.authorize import (
    AuthorizationRequest,
    AuthorizationRequests,
    NotRedirectable,
    Redirectable,
    with_params,
)
from authserver.people import codes, consents
from authserver.scopes import ScopeCatalog
from authserver.storage.db import Database
from authserver.web.assets import templates_dir
from authserver.web.errors import request_id
from authserver.web.forms import Form, parse_form, read_body
from authserver.web.middleware import client_address
from authserver.web.signin import SignIn

CSP = ("default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
REPEATABLE = ("resource",)
IDENTITY_TEXT = {
    "openid": "confirm who you are (your user id)",
    "profile": "see your name and username",
    "email": "see your email address",
    "offline_access": "keep access while you are away (refresh tokens)",
}
# The authorization parameters a consent form carries back (re-checked on the way in).
CARRIED = ("client_id", "redirect_uri", "response_type", "scope", "state", "nonce",
           "code_challenge", "code_challenge_method")


def _utc(value: float | None) -> str:
    if value is None:
        return ""
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class PeoplePages:
    """Pages people see: shared rendering, the sign-in and the store access."""

    def __init__(self, settings: Settings, db: Database, clock: Clock, signin: SignIn,
                 catalog: ScopeCatalog, requests: AuthorizationRequests) -> None:
        self.settings = settings
        self.db = db
        self.clock = clock
        self.signin = signin
        self.catalog = catalog
        self.requests = requests
        self.templates = Jinja2Templates(directory=str(templates_dir()))
        self.templates.env.filters["time"] = _utc
        self.issuer_host = urlsplit(settings.issuer).netloc
        self.max_body = settings.server.max_body_bytes

    def render(self, request: Request, name: str, status: int = 200,
               signed: users.SignedIn | None = None, **context: Any) -> Response:
        response = self.templates.TemplateResponse(
            request, f"people/{name}", {"signed": signed, "issuer_host": self.issuer_host,
                                        **context}, status_code=status)
        response.headers["cache-control"] = "no-store"
        response.headers["x-frame-options"] = "DENY"
        response.headers["content-security-policy"] = CSP
        response.headers["referrer-policy"] = "no-referrer"
        return response

    async def run(self, fn: Callable[[Session], Any], write: bool = False) -> Any:
        def work() -> Any:
            with self.db.session(write=write) as session:
                return fn(session)
        try:
            return await anyio.to_thread.run_sync(work)
        except SQLAlchemyError as exc:
            raise TemporarilyUnavailable("The store is unavailable; retry shortly",
                                         detail=type(exc).__name__) from exc

    async def form(self, request: Request) -> Form:
        return parse_form(await read_body(request, self.max_body), REPEATABLE)

    def actor(self, request: Request, signed: users.SignedIn) -> audit.Actor:
        return audit.Actor(f"user:{signed.user.id}",
                           client_address(request.scope, self.signin.trusted),
                           request_id(request), signed.user.org_id)


class AuthorizePages(PeoplePages):
    async def authorize(self, request: Request) -> Response:
        """RFC 6749 §3.1: GET with the query, or POST with a form (OpenID Connect §3.1.2.1)."""
        try:
            if request.method == "POST":
                form = await self.form(request)
            else:
                form = parse_form(request.scope.get("query_string", b""), REPEATABLE)
        except OAuthError as exc:  # a repeated parameter, bad encoding: nothing is trusted yet
            return self.render(request, "error.html", 400, message=exc.description)
        return await self._handle(request, form, decision=None)

    async def decision(self, request: Request) -> Response:
        """The consent form's answer."""
        try:
            form = await self.form(request)
        except OAuthError as exc:
            return self.render(request, "error.html", 400, message=exc.description)
        return await self._handle(request, form, decision=form.values.get("decision"))

    async def _handle(self, request: Request, form: Form, decision: str | None) -> Response:
        try:
            req = await self.requests.check(form.values, form.repeated.get("resource", ()))
        except NotRedirectable as exc:
            return self.render(request, "error.html", 400, message=exc.message)
        except Redirectable as exc:
            return self._redirect(self.requests.error_redirect(exc))
        try:
            return await self._continue(request, form, req, decision)
        except OAuthError as exc:
            return self._redirect(self.requests.error_redirect(
                Redirectable(exc, req.redirect_uri, req.state)))

    async def _continue(self, request: Request, form: Form, req: AuthorizationRequest,
                        decision: str | None) -> Response:
        signed = await self.signin.current(request)
        if decision is not None:  # the consent form: only from the signed-in person's page
            if signed is None or not self.signin.csrf_ok(request, form, signed.csrf_token):
                return self.render(request, "error.html", 403, signed, message=(
                    "The form has expired or did not come from this site. Go back to the "
                    "application and start again."))
            if decision != "allow":
                raise AccessDenied("The person denied the request")
            return await self._issue(request, req, signed, grant_consent=True)
        if signed is None or "login" in req.prompt:
            if "none" in req.prompt:
                raise LoginRequired("Nobody is signed in")
            return self._to_login(form, req)
        now = self.clock.now()
        remembered: frozenset[str] = await self.run(
            lambda s: consents.remembered(s, signed.user.id, req.client.client_id, now))
        if "consent" in req.prompt or not set(req.scopes) <= remembered:
            if "none" in req.prompt:
                raise ConsentRequired("The person has not allowed this client these scopes")
            return self._consent_page(request, form, req, signed)
        return await self._issue(request, req, signed, grant_consent=False)

    def _to_login(self, form: Form, req: AuthorizationRequest) -> Response:
        """To the sign-in page, which comes back here; `prompt=login` is satisfied by it."""
        values = dict(form.values)
        prompt = " ".join(sorted(req.prompt - {"login"}))
        if prompt:
            values["prompt"] = prompt
        else:
            values.pop("prompt", None)
        pairs: list[tuple[str, str]] = list(values.items())
        pairs += [("resource", r) for r in form.repeated.get("resource", ())]
        back = "/authorize?" + urlencode(pairs)
        return RedirectResponse("/login?" + urlencode({"return_to": back}), 303)

    def _consent_page(self, request: Request, form: Form, req: AuthorizationRequest,
                      signed: users.SignedIn) -> Response:
        fields: list[tuple[str, str]] = [(n, form.values[n]) for n in CARRIED
                                         if n in form.values and n != "scope"]
        fields.append(("scope", " ".join(req.scopes)))
        fields += [("resource", r) for r in req.resources]
        if "redirect_uri" not in form.values:
            fields.append(("redirect_uri", req.redirect_uri))
        scopes = [(s, IDENTITY_TEXT.get(s) or self.catalog.descriptions.get(s, ""))
                  for s in req.scopes]
        note = None
        if req.client.origin == "cimd":
            note = f"This application describes itself at {req.client.client_id}."
        elif req.client.origin == "dcr":
            note = "This application registered itself; its name is not verified."
        return self.render(request, "consent.html", 200, signed, client=req.client,
                           redirect_host=urlsplit(req.redirect_uri).netloc, scopes=scopes,
                           resources=req.resources, fields=fields, client_note=note)

    async def _issue(self, request: Request, req: AuthorizationRequest,
                     signed: users.SignedIn, grant_consent: bool) -> Response:
        now = self.clock.now()
        flow = self.settings.authorization
        actor = self.actor(request, signed)
        auth_time = signed.expires_at - self.signin.lifetime

        def work(session: Session) -> str:
            if grant_consent:
                consents.grant(session, signed.user.id, req.client.client_id, req.scopes, now,
                               flow.consent_lifetime, actor)
            return codes.issue_code(
                session, client_id=req.client.client_id, user_id=signed.user.id,
                redirect_uri=req.redirect_uri, code_challenge=req.code_challenge,
                scopes=req.scopes, resources=req.resources, nonce=req.nonce,
                auth_time=auth_time, now=now, lifetime=flow.code_lifetime)
        code: str = await self.run(work, write=True)
        params = {"code": code}
        if req.state is not None:
            params["state"] = req.state
        params["iss"] = self.settings.issuer  # RFC 9207
        return self._redirect(with_params(req.redirect_uri, params))

    @staticmethod
    def _redirect(location: str) -> Response:
        return RedirectResponse(location, 303, {"cache-control": "no-store",
                                                "referrer-policy": "no-referrer"})


def safe_return(value: str | None) -> str:
    """Only our own pages: the authorization endpoint or the account page."""
    if value and (value.startswith("/authorize?") or value == "/account") and \
            "\\" not in value and not value.startswith("//"):
        return value
    return "/account"

