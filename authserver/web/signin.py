"""People's sign-in, shared by the admin UI and the authorization pages: one session cookie,
the password check with lockout (`users.login`), CSRF tokens and the same-origin check.

The cookie holds a random value of which only a digest is stored; it is `HttpOnly`,
`SameSite=Lax`, and `Secure` with a `__Host-` name when the issuer is https.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from authserver import users
from authserver.clock import Clock
from authserver.config import Settings
from authserver.storage.db import Database
from authserver.web.forms import Form
from authserver.web.middleware import client_address

COOKIE = "authserver_session"


class SignIn:
    def __init__(self, settings: Settings, db: Database, clock: Clock) -> None:
        self.settings = settings
        self.db = db
        self.clock = clock
        self.secure = settings.issuer.startswith("https://")
        self.cookie = ("__Host-" if self.secure else "") + COOKIE
        self.lifetime = float(settings.admin_ui.session_lifetime)
        self.trusted = [ipaddress.ip_network(c, strict=False)
                        for c in settings.server.trusted_proxies]

    async def _run(self, fn: Callable[[Session], Any], write: bool = False) -> Any:
        def run() -> Any:
            with self.db.session(write=write) as session:
                return fn(session)
        return await anyio.to_thread.run_sync(run)

    async def current(self, request: Request) -> users.SignedIn | None:
        """The person signed in with this browser, while session and account are active."""
        token = request.cookies.get(self.cookie)
        if not token:
            return None
        now = self.clock.now()
        signed: users.SignedIn | None = await self._run(
            lambda s: users.resume_session(s, token, now))
        return signed

    async def attempt(self, request: Request, username: str, password: str,
                      role: str | None = None) -> tuple[str, users.SignedIn] | str:
        """Check the password and start a session: (cookie value, state), or the message to
        show. With `role`, a person without it gets the wrong-password answer."""
        source = client_address(request.scope, self.trusted)
        now = self.clock.now()

        def attempt(session: Session) -> tuple[str, users.SignedIn] | float | None:
            result = users.login(session, username, password, now, source)
            if result.user is None:
                return result.locked_for
            if role is not None and result.user.role != role:
                return None
            return users.start_session(session, result.user, now, self.lifetime, source)

        outcome = await self._run(attempt, write=True)
        if isinstance(outcome, tuple):
            return outcome
        if outcome:
            return f"Too many failed attempts: try again in {int(outcome) + 1} seconds."
        return "Wrong username or password."

    def set_cookie(self, response: Response, token: str) -> None:
        response.set_cookie(self.cookie, token, max_age=int(self.lifetime), path="/",
                            httponly=True, secure=self.secure, samesite="lax")

    async def end(self, request: Request, response: Response) -> None:
        token = request.cookies.get(self.cookie, "")
        await self._run(lambda s: users.end_session(s, token), write=True)
        response.delete_cookie(self.cookie, path="/", secure=self.secure, httponly=True,
                               samesite="lax")

    def csrf_ok(self, request: Request, form: Form, csrf_token: str) -> bool:
        """The form carries the session's CSRF token and the request is not cross-origin."""
        origin = request.headers.get("origin")
        if origin is not None and origin != "null":
            issuer = urlsplit(self.settings.issuer)
            if origin != f"{issuer.scheme}://{issuer.netloc}" and \
                    urlsplit(origin).netloc != request.headers.get("host"):
                return False
        return hmac.compare_digest(form.values.get("csrf_token", ""), csrf_token)
