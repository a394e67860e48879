"""Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document; MCP
authorization): an https URL used as `client_id` names a JSON document of RFC 7591 client
metadata, fetched through the SSRF-hardened `JsonFetcher` and turned into a `ClientRecord`.

Such a client has no shared secret, so only `none` and `private_key_jwt` are accepted. The domain
policy (`[cimd] allow_domains` / `deny_domains`) is applied before anything is fetched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from authserver.clients.records import (
    SECRET_METHODS,
    AuthMethod,
    ClientRecord,
    check_jwks,
    check_jwks_uri,
)
from authserver.clock import Clock
from authserver.config import CimdSettings, Settings
from authserver.errors import Invalid
from authserver.outbound import JsonFetcher, OutboundError
from authserver.scopes import ScopeCatalog, parse_scope
from authserver.uris import redirect_uri_problem

ORIGIN = "cimd"
MAX_URL = 2000
MAX_NAME = 200
GRANT_TYPES = ("authorization_code", "refresh_token")
AUTH_METHODS: tuple[AuthMethod, ...] = ("none", "private_key_jwt")
_MEMO_LIMIT = 10_000


class CimdRefused(Exception):
    """A metadata-document client was refused; the message is safe to show to the person and
    to the client's developer (it names the URL, never anything internal)."""


def is_document_url(client_id: str, allow_loopback: bool = False) -> bool:
    """Whether `client_id` has the syntax of a client identifier URL (draft §3): https, a host,
    a path other than "/", no "." or ".." segments, no fragment, no user info. A pure syntax
    check (nothing is resolved); http only when `allow_loopback` (development)."""
    if (not client_id or len(client_id) > MAX_URL or not client_id.isascii()
            or any(ord(c) < 0x21 or ord(c) == 0x7F for c in client_id)
            or "#" in client_id or "\\" in client_id):
        return False
    try:
        parts = urlsplit(client_id)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return False
    schemes = ("https", "http") if allow_loopback else ("https",)
    if parts.scheme not in schemes or not parts.hostname or "@" in parts.netloc:
        return False
    if parts.path in ("", "/"):
        return False
    # "%2e" is a dot to every server that normalises the path (RFC 3986 §2.3).
    segments = (s.lower().replace("%2e", ".") for s in parts.path.split("/"))
    return not any(s in (".", "..") for s in segments)


def _host(value: str) -> str:
    return value.strip().lower().strip("[]").rstrip(".")


def host_matches(host: str, patterns: Iterable[str]) -> bool:
    """`host` is one of `patterns`; "*.example.com" covers every subdomain of example.com
    (not example.com itself). Case and a trailing dot are ignored."""
    host = _host(host)
    for pattern in patterns:
        entry = _host(pattern)
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                return True
        elif host == entry:
            return True
    return False


def domain_permitted(host: str, cimd: CimdSettings) -> bool:
    """The domain policy: a denied host is refused (deny wins); with an allow list, only hosts
    on it are accepted; without one, every host that is not denied."""
    if host_matches(host, cimd.deny_domains):
        return False
    return not cimd.allow_domains or host_matches(host, cimd.allow_domains)


@dataclass(frozen=True, slots=True)
class _Checked:
    # The fetcher's cached dict: the same object means the same fetch, so the check holds.
    document: dict[str, Any]
    record: ClientRecord | None
    problem: str | None


class MetadataDocuments:
    """Client records for metadata-document client ids, cached as long as the document is."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        cimd = settings.cimd
        self.cimd = cimd
        self.clock = clock
        # model_copy, not a new OutboundSettings: cimd.max_bytes may sit below the outbound
        # minimum, which is about JWK Sets.
        outbound = settings.outbound.model_copy(update={
            "allow_loopback_http": cimd.allow_loopback, "max_bytes": cimd.max_bytes,
            "min_cache_seconds": cimd.min_cache_seconds,
            "max_cache_seconds": cimd.max_cache_seconds,
        })
        self.fetcher = JsonFetcher(outbound, clock)
        catalog = ScopeCatalog(settings)
        self.scopes = frozenset(cimd.scopes) - catalog.api_key_only
        self.resources = catalog.resources
        self._checked: dict[str, _Checked] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def handles(self, client_id: str) -> bool:
        """Whether `client_id` is to be resolved as a metadata document (not looked up)."""
        return self.cimd.enabled and is_document_url(client_id, self.cimd.allow_loopback)

    async def client(self, url: str) -> ClientRecord:
        """The client `url` describes; raises CimdRefused with the reason (policy, fetch,
        validation). Fetches at most once per cache lifetime, concurrent callers included."""
        if not self.cimd.enabled:
            raise CimdRefused("This server does not accept URLs as client_id.")
        if not is_document_url(url, self.cimd.allow_loopback):
            raise CimdRefused("The client_id is not a valid client metadata document URL (https, "
                              "a path, no fragment, no user info, no dot segments).")
        host = urlsplit(url).hostname or ""
        if not domain_permitted(host, self.cimd):
            raise CimdRefused(f"This server does not accept client metadata documents from "
                              f"{host}.")
        lock = self._locks.setdefault(url, asyncio.Lock())
        try:
            async with lock:
                checked = await self._load(url)
        finally:
            if not lock.locked():
                self._locks.pop(url, None)
        if checked.record is None:
            raise CimdRefused(checked.problem or "The client metadata document was refused.")
        return checked.record

    async def aclose(self) -> None:
        await self.fetcher.aclose()

    async def _load(self, url: str) -> _Checked:
        try:
            document = await self.fetcher.get(url)
        except OutboundError as exc:
            raise CimdRefused(
                f"The client metadata document at {url} could not be fetched: {exc}.") from None
        checked = self._checked.get(url)
        if checked is not None and checked.document is document:
            return checked
        try:
            record = self._record(url, document)
            checked = _Checked(document, record, None)
        except Invalid as exc:
            checked = _Checked(document, None,
                               f"The client metadata document at {url} is not valid: {exc}.")
        if len(self._checked) >= _MEMO_LIMIT:
            self._checked.clear()
        self._checked[url] = checked
        return checked

    def _record(self, url: str, doc: dict[str, Any]) -> ClientRecord:
        """Check the document (draft §4, RFC 7591 §2 names) and build the record."""
        if doc.get("client_id") != url:
            raise Invalid("client_id must equal the URL the document was fetched from")
        if "client_secret" in doc or "client_secret_expires_at" in doc:
            raise Invalid("a metadata document must not carry a client secret")
        name = doc.get("client_name")
        if not isinstance(name, str) or not name.strip():
            raise Invalid("client_name is required")
        if len(name) > MAX_NAME or not name.isprintable():
            raise Invalid(f"client_name must be printable text of at most {MAX_NAME} "
                          "characters")
        method = self._auth_method(doc.get("token_endpoint_auth_method", "none"))
        jwks, jwks_uri = self._keys(method, doc.get("jwks"), doc.get("jwks_uri"))
        fetched = self.fetcher.fetched_at(url) or self.clock.now()
        return ClientRecord(
            client_id=url, org_id=self.cimd.organization, name=name.strip(), auth_method=method,
            grant_types=_grant_types(doc), scopes=self._scopes(doc.get("scope")), ip_allow=(),
            resources=self.resources, jwks=jwks, jwks_uri=jwks_uri, status="active",
            created_at=fetched, updated_at=fetched, tokens_valid_after=0.0, origin=ORIGIN,
            redirect_uris=_redirect_uris(doc.get("redirect_uris")),
        )

    @staticmethod
    def _auth_method(value: Any) -> AuthMethod:
        if value in SECRET_METHODS:
            raise Invalid(f"token_endpoint_auth_method {value} needs a shared secret, which a "
                          "metadata-document client cannot have; use none or private_key_jwt")
        for method in AUTH_METHODS:
            if value == method:
                return method
        raise Invalid("token_endpoint_auth_method must be none or private_key_jwt")

    def _keys(self, method: AuthMethod, jwks: Any,
              jwks_uri: Any) -> tuple[dict[str, Any] | None, str | None]:
        if method != "private_key_jwt":
            return None, None  # a public client authenticates with nothing; keys are unused
        if jwks is not None and jwks_uri is not None:
            raise Invalid("give jwks or jwks_uri, not both (RFC 7591 §2)")
        if jwks_uri is not None:
            if not isinstance(jwks_uri, str):
                raise Invalid("jwks_uri must be a URL")
            check_jwks_uri(jwks_uri)
            if urlsplit(jwks_uri).scheme != "https" and not self.cimd.allow_loopback:
                raise Invalid("jwks_uri must be an https URL")
            return None, jwks_uri
        if jwks is None:
            raise Invalid("private_key_jwt needs the client's public keys: jwks or jwks_uri")
        return check_jwks(jwks), None

    def _scopes(self, value: Any) -> frozenset[str]:
        """What the client may be granted: `[cimd] scopes`, narrowed by the document's own
        `scope` when it has one (api_key_only scopes never)."""
        if value is None:
            return self.scopes
        if not isinstance(value, str):
            raise Invalid("scope must be a space-separated string")
        return self.scopes & frozenset(parse_scope(value))


def _grant_types(doc: dict[str, Any]) -> tuple[str, ...]:
    grants = doc.get("grant_types", ["authorization_code"])
    if not isinstance(grants, list) or not all(isinstance(g, str) for g in grants):
        raise Invalid("grant_types must be a list of strings")
    for grant in grants:
        if grant not in GRANT_TYPES:
            raise Invalid(f"grant_types: {grant} is not available to a metadata-document "
                          f"client (allowed: {', '.join(GRANT_TYPES)})")
    if "authorization_code" not in grants:
        raise Invalid("grant_types must include authorization_code")
    responses = doc.get("response_types")
    if responses is not None and responses != ["code"]:
        raise Invalid('response_types must be ["code"]')
    return tuple(dict.fromkeys(grants))


def _redirect_uris(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise Invalid("redirect_uris is required: a non-empty list of URLs")
    for uri in value:
        if not isinstance(uri, str):
            raise Invalid("redirect_uris must be a list of strings")
        problem = redirect_uri_problem(uri)
        if problem is not None:
            raise Invalid(f"redirect_uris: {uri!r} {problem}")
    return tuple(dict.fromkeys(value))
