"""RFC 7591 registration and RFC 7592 management of self-registered clients.

Idempotency (docs/registration.md): a registration whose origin (the initial access token it
presented, or for open registration the source address) and accepted metadata equal those of
an earlier one, made within `registration.idempotency_window` of it, returns that client with
the same credentials, as long as nobody has changed the client since. The credentials of a
self-registered client are derived from a server key, so they can be given again without ever
being stored in plaintext; only their digests are in the database.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

import orjson
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from authserver import audit, events, hashing
from authserver.clients.admin import ClientSpec, client_row, create_client, cutoff, delete_client
from authserver.clients.records import SECRET_METHODS
from authserver.clock import Clock
from authserver.config import Settings
from authserver.errors import InvalidClientMetadata, InvalidToken, TemporarilyUnavailable
from authserver.registration.access_tokens import consume_access_token, find_access_token
from authserver.registration.metadata import ClientMetadata, parse_metadata
from authserver.scopes import ScopeCatalog
from authserver.storage.db import Database
from authserver.storage.models import Client, ClientRegistration

# Changing one of these changes what the client's tokens can do: earlier tokens are cut off.
_SECURITY_FIELDS = ("scopes", "grant_types", "auth_method", "jwks", "jwks_uri")
# Members the server sets; RFC 7592 §2.2 says to ignore them in an update request.
_SERVER_MEMBERS = ("registration_access_token", "registration_client_uri",
                   "client_secret_expires_at", "client_id_issued_at")
DEFAULT_NAME = "Self-registered client"
MAX_CLIENT_ID = 128
_NO_DIGEST = "0" * 64
P = ParamSpec("P")
R = TypeVar("R")


def _store_failures_are_503(
    method: Callable[Concatenate[Registrar, P], R],
) -> Callable[Concatenate[Registrar, P], R]:
    """A storage failure is 503 temporarily_unavailable, never a fake success or a 500."""
    def wrapper(self: Registrar, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except SQLAlchemyError as exc:
            raise TemporarilyUnavailable(
                "The client store is unavailable; retry shortly", detail=type(exc).__name__
            ) from exc
    return wrapper


@dataclass(frozen=True, slots=True)
class Origin:
    """Who is registering: the initial access token presented (if any) and the address."""

    source_address: str | None
    initial_access_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class ClientInformation:
    """RFC 7591 §3.2.1 client information response (with the RFC 7592 members)."""

    body: dict[str, Any] = field(repr=False)
    replayed: bool = False


class Registrar:
    def __init__(
        self, settings: Settings, catalog: ScopeCatalog, db: Database, clock: Clock, key: bytes
    ) -> None:
        self.settings = settings.registration
        self.issuer_endpoint = settings.endpoint("/register")
        self.catalog = catalog
        self.db = db
        self.clock = clock
        self._key = key

    # -- credentials --------------------------------------------------------------------------

    def _derived_secret(self, client_id: str) -> str:
        return hashing.derive_secret(self._key, hashing.CLIENT_SECRET_PREFIX, "client_secret",
                                     client_id)

    def _derived_token(self, client_id: str) -> str:
        return hashing.derive_secret(self._key, hashing.REGISTRATION_TOKEN_PREFIX,
                                     "registration_access_token", client_id)

    # -- RFC 7591 -----------------------------------------------------------------------------

    @_store_failures_are_503
    def register(self, body: dict[str, Any], origin: Origin) -> ClientInformation:
        metadata = parse_metadata(body)
        key = self._idempotency_key(metadata, origin)
        for attempt in range(3):
            try:
                with self.db.session(write=True) as session:
                    return self._register(session, metadata, origin, key)
            except IntegrityError:
                # A concurrent identical registration won the unique idempotency key: the
                # next attempt finds and returns its client.
                if key is None or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _idempotency_key(self, metadata: ClientMetadata, origin: Origin) -> str | None:
        """None when replay is off, or when there is no origin to tell registrants apart (an
        open registration from an unknown address must never share another's client)."""
        if self.settings.idempotency_window <= 0:
            return None
        if origin.initial_access_token:
            who = f"iat:{hashing.digest(origin.initial_access_token)}"
        elif origin.source_address:
            who = f"ip:{origin.source_address}"
        else:
            return None
        canonical = orjson.dumps({"origin": who, "metadata": metadata.identity()},
                                 option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(canonical).hexdigest()

    def _register(
        self, session: Session, metadata: ClientMetadata, origin: Origin, key: str | None
    ) -> ClientInformation:
        now = self.clock.now()
        token_row = None
        if origin.initial_access_token:
            token_row = find_access_token(session, origin.initial_access_token, now)
        elif self.settings.policy == "initial_access_token":
            raise InvalidToken("Registration requires an initial access token (Bearer)",
                               challenge_error=False)
        if key is not None:
            earlier = session.scalars(
                select(ClientRegistration).where(ClientRegistration.idempotency_key == key)
            ).first()
            if earlier is not None:
                replay = self._replay(earlier, now)
                if replay is not None:
                    return replay
                earlier.idempotency_key = None  # stale: free the key for this registration
                session.flush()
        ceiling = set(token_row.scopes if token_row else self.settings.open_scopes)
        ceiling -= self.catalog.api_key_only
        requested = metadata.scope
        scopes = sorted(ceiling if requested is None else ceiling & set(requested))
        client_id = hashing.new_client_id()
        secret = self._derived_secret(client_id)
        spec = ClientSpec(
            name=metadata.client_name or metadata.software_id or DEFAULT_NAME,
            scopes=tuple(scopes), auth_method=metadata.token_endpoint_auth_method,
            # Every configured resource server (RFC 8707): agents such as the MCP SDK always
            # send `resource`; the scopes a token gets stay bounded by the resource's own set.
            resources=tuple(sorted(self.catalog.resources)),
            jwks=metadata.jwks, jwks_uri=metadata.jwks_uri,
            grant_types=metadata.grant_types, origin="dcr",
            redirect_uris=metadata.redirect_uris,
        )
        actor = audit.Actor(f"initial_access_token:{token_row.id}" if token_row else "anonymous",
                            origin.source_address)
        _, secret_or_none = create_client(session, self.catalog, spec, now,
                                          client_id=client_id, secret=secret, actor=actor)
        token = self._derived_token(client_id)
        session.add(ClientRegistration(
            client_id=client_id, via="initial_access_token" if token_row else "open",
            initial_access_token_id=token_row.id if token_row else None,
            source_address=origin.source_address, software_id=metadata.software_id,
            software_version=metadata.software_version, client_metadata=metadata.stored(),
            scope_ceiling=sorted(ceiling), token_digest=hashing.digest(token),
            idempotency_key=key, created_at=now,
        ))
        # The unique idempotency key is checked first, so a concurrent identical registration
        # replays the winner's client instead of racing it for the token's last use.
        session.flush()
        if token_row is not None:
            consume_access_token(session, token_row.id, now)
        row = client_row(session, client_id)
        assert row.registration is not None
        return ClientInformation(self._information(row, row.registration, token, secret_or_none))

    def _replay(self, earlier: ClientRegistration, now: float) -> ClientInformation | None:
        """The earlier registration's response, if it may still be given (see module doc)."""
        row = earlier.client
        if (earlier.created_at < now - self.settings.idempotency_window
                or row.status != "active" or row.updated_at != earlier.created_at):
            return None
        token = self._derived_token(row.client_id)
        secret = self._derived_secret(row.client_id) if row.secret_digest else None
        if not hashing.matches(token, earlier.token_digest) or (
            secret is not None and not hashing.matches(secret, row.secret_digest or "")
        ):
            return None  # the server key changed since
        return ClientInformation(self._information(row, earlier, token, secret), replayed=True)

    # -- RFC 7592 -----------------------------------------------------------------------------

    def _authorize(
        self, session: Session, client_id: str, token: str | None
    ) -> tuple[Client, ClientRegistration, str]:
        """The client whose registration access token this is; one answer for every failure,
        so it never confirms that a client exists."""
        if token is None:
            raise InvalidToken("A registration access token is required", challenge_error=False)
        registration = None
        if 0 < len(client_id) <= MAX_CLIENT_ID and client_id.isprintable():
            registration = session.get(ClientRegistration, client_id)
        # The digest is compared whether or not the client exists (no timing difference).
        matches = hashing.matches(token, registration.token_digest if registration else _NO_DIGEST)
        if registration is None or not matches:
            raise InvalidToken("The registration access token is invalid for this client")
        return registration.client, registration, token

    @_store_failures_are_503
    def read(self, client_id: str, token: str | None) -> ClientInformation:
        """RFC 7592 §2.1: the current metadata; the secret is never shown again."""
        with self.db.session() as session:
            row, registration, token = self._authorize(session, client_id, token)
            return ClientInformation(self._information(row, registration, token, None))

    @_store_failures_are_503
    def update(self, client_id: str, token: str | None, body: dict[str, Any]) -> ClientInformation:
        """RFC 7592 §2.2: replace the metadata. The extension member `rotate_client_secret:
        true` asks for a new secret (returned once)."""
        with self.db.session(write=True) as session:
            row, registration, token = self._authorize(session, client_id, token)
            body_id = body.get("client_id")
            if body_id is not None and body_id != client_id:
                raise InvalidClientMetadata("client_id: does not match the registration")
            rotate = body.get("rotate_client_secret", False)
            if not isinstance(rotate, bool):
                raise InvalidClientMetadata("rotate_client_secret: must be true or false")
            metadata = parse_metadata(
                {k: v for k, v in body.items() if k not in _SERVER_MEMBERS})
            presented = body.get("client_secret")
            if presented is not None and not (
                isinstance(presented, str) and row.secret_digest
                and hashing.matches(presented, row.secret_digest)
            ):
                raise InvalidClientMetadata("client_secret: does not match the current secret")
            secret = self._apply(session, row, registration, metadata, rotate)
            return ClientInformation(self._information(row, registration, token, secret))

    def _apply(
        self, session: Session, row: Client, registration: ClientRegistration,
        metadata: ClientMetadata, rotate: bool,
    ) -> str | None:
        now = self.clock.now()
        ceiling = set(registration.scope_ceiling) - self.catalog.api_key_only
        scopes = sorted(ceiling if metadata.scope is None else ceiling & set(metadata.scope))
        wanted: dict[str, Any] = {
            "name": metadata.client_name or metadata.software_id or DEFAULT_NAME,
            "scopes": scopes, "grant_types": list(metadata.grant_types),
            "auth_method": metadata.token_endpoint_auth_method,
            "jwks": metadata.jwks, "jwks_uri": metadata.jwks_uri,
            "redirect_uris": list(metadata.redirect_uris),
        }
        changed: list[str] = []
        for name, value in wanted.items():
            if getattr(row, name) != value:
                setattr(row, name, value)
                changed.append(name)
        secret = None
        needs_secret = row.auth_method in SECRET_METHODS
        if needs_secret and (rotate or row.secret_digest is None):
            secret = hashing.new_secret(hashing.CLIENT_SECRET_PREFIX)
            row.secret_digest = hashing.digest(secret)
            changed.append("secret")
        elif not needs_secret and row.secret_digest is not None:
            row.secret_digest = None
            changed.append("secret")
        registration.client_metadata = metadata.stored()
        registration.software_id = metadata.software_id
        registration.software_version = metadata.software_version
        registration.idempotency_key = None
        row.updated_at = now
        if set(changed) & set(_SECURITY_FIELDS):
            row.tokens_valid_after = cutoff(now)
        events.record(session, "client.updated", row.client_id, now, row.org_id,
                      {"fields": changed, "tokens_valid_after": row.tokens_valid_after,
                       "origin": "dcr"})
        audit.record(session, audit.Actor(f"client:{row.client_id}"), "client.update",
                     row.client_id, now, org_id=row.org_id,
                     details={"fields": changed, "via": "rfc7592"})
        return secret

    @_store_failures_are_503
    def delete(self, client_id: str, token: str | None) -> None:
        """RFC 7592 §2.3: the client stops working at once and its tokens are cut off."""
        with self.db.session(write=True) as session:
            row, _, _ = self._authorize(session, client_id, token)
            delete_client(session, row.client_id, self.clock.now(),
                          audit.Actor(f"client:{row.client_id}"))

    # -- responses ----------------------------------------------------------------------------

    def _information(
        self, row: Client, registration: ClientRegistration, token: str, secret: str | None
    ) -> dict[str, Any]:
        metadata = dict(registration.client_metadata)
        metadata.pop("scope", None)
        body: dict[str, Any] = {
            **metadata,
            "client_id": row.client_id,
            "client_id_issued_at": int(row.created_at),
            "client_name": row.name,
            "grant_types": list(row.grant_types),
            "token_endpoint_auth_method": row.auth_method,
            "registration_access_token": token,
            "registration_client_uri": f"{self.issuer_endpoint}/{row.client_id}",
        }
        if row.scopes:
            body["scope"] = " ".join(row.scopes)
        if secret is not None:
            body["client_secret"] = secret
        if row.auth_method in SECRET_METHODS:
            body["client_secret_expires_at"] = 0
        return body
