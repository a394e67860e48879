"""Driving the authorization code flow through the real HTML forms (an HTTP client standing in
for the person's browser): shared by the in-process and the real-socket tests."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

_INPUT = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()) \
        .rstrip(b"=").decode()
    return verifier, challenge


def hidden_fields(page: str) -> list[tuple[str, str]]:
    return [(name, html.unescape(value)) for name, value in _INPUT.findall(page)]


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@dataclass
class Browser:
    """Follows the server's pages as a person would: signs in, then answers the consent."""

    http: httpx.AsyncClient | httpx.Client
    username: str
    password: str
    decision: str = "allow"

    async def authorize(self, url: str) -> str:
        """From an authorization URL to the redirect back to the client (its Location)."""
        assert isinstance(self.http, httpx.AsyncClient)
        response = await self.http.get(url)
        for _ in range(6):
            if response.status_code == 303:
                location = response.headers["location"]
                parts = urlsplit(location)
                if parts.path == "/login":
                    page = await self.http.get(location)
                    fields = dict(hidden_fields(page.text))
                    response = await self.http.post("/login", data={
                        "username": self.username, "password": self.password,
                        "return_to": fields["return_to"]})
                    continue
                if parts.path.startswith("/authorize"):
                    response = await self.http.get(location)
                    continue
                return location
            if response.status_code == 200 and 'action="/authorize/decision"' in response.text:
                form = response.text.split('action="/authorize/decision"', 1)[1]
                answer = hidden_fields(form.split("</form>", 1)[0])
                response = await self.http.post(
                    "/authorize/decision", content=urlencode(
                        [*answer, ("decision", self.decision)]),
                    headers={"content-type": "application/x-www-form-urlencoded"})
                continue
            raise AssertionError(f"unexpected page {response.status_code}: {response.text[-900:]}")
        raise AssertionError("too many steps")
