"""RFC 8936 poll delivery of the revocation feed: who may poll, and the long poll."""

from __future__ import annotations

import anyio
import anyio.to_thread
from sqlalchemy.exc import SQLAlchemyError

from authserver import feed
from authserver.clock import Clock
from authserver.config import Settings
from authserver.errors import InsufficientScope, InvalidToken, TemporarilyUnavailable
from authserver.keyring import Keyring
from authserver.oauth.token import TokenService
from authserver.revocation import TokenInspector
from authserver.storage.db import Database

MAX_LIMIT = 1000
# A new receiver also gets events this much older than the longest token lifetime.
HISTORY_MARGIN = 60.0


class Notifier:
    """Wakes long polls when the event log brings something deliverable."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = anyio.Event()

    async def wait(self, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await self._event.wait()


class FeedService:
    def __init__(
        self, settings: Settings, clock: Clock, db: Database, keyring: Keyring,
        tokens: TokenService, inspector: TokenInspector, notifier: Notifier, settle: float,
    ) -> None:
        self.settings = settings.feed
        self.issuer = settings.issuer
        self.history = settings.tokens.access_token_lifetime + HISTORY_MARGIN
        self.settle = settle
        self.clock = clock
        self.db = db
        self.keyring = keyring
        self.tokens = tokens
        self.inspector = inspector
        self.notifier = notifier

    async def receiver(self, authorization: str | None, client_ip: str | None) -> str:
        """The polling client: an access token carrying the feed scope (Bearer), or the
        client's own credentials (Basic) when the client holds the scope."""
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() == "bearer":
            claims = await self.inspector.active(value.strip())
            if claims is None:
                raise InvalidToken("The access token is not active")
            scopes = str(claims.get("scope", "")).split()
            client_id = str(claims["client_id"])
        else:
            client = await self.tokens.authenticate({}, authorization, client_ip)
            scopes, client_id = list(client.scopes), client.client_id
        if self.settings.scope not in scopes:
            raise InsufficientScope(f"Polling the revocation feed needs the scope "
                                    f"{self.settings.scope}")
        return client_id

    def _poll(self, client_id: str, request: feed.PollRequest) -> tuple[dict[str, str], bool]:
        signer = self.keyring.snapshot(self.clock.now()).signer
        if signer is None:
            raise TemporarilyUnavailable("No signing key is active", detail="no active key")
        with self.db.session(write=True) as session:
            batch = feed.poll(session, client_id, request, self.clock.now(),
                              history=self.history, settle=self.settle,
                              default_max=self.settings.max_events, limit=MAX_LIMIT)
            sets = {str(e.id): feed.sign_set(signer, e, self.issuer, client_id)
                    for e in batch.events}
        return sets, batch.more_available

    def _pending(self, client_id: str) -> bool:
        with self.db.session() as session:
            return feed.has_pending(session, client_id)

    async def poll(self, client_id: str, request: feed.PollRequest) -> dict[str, object]:
        """RFC 8936 §2.4: acknowledge, then answer with what is pending; without
        `returnImmediately`, wait up to the long-poll timeout for something to arrive."""
        try:
            sets, more = await anyio.to_thread.run_sync(self._poll, client_id, request)
            if not sets and not request.return_immediately and request.max_events != 0:
                with anyio.move_on_after(self.settings.long_poll_timeout):
                    while not await anyio.to_thread.run_sync(self._pending, client_id):
                        await self.notifier.wait(self.settle)
                empty = feed.PollRequest(max_events=request.max_events, return_immediately=True)
                sets, more = await anyio.to_thread.run_sync(self._poll, client_id, empty)
        except SQLAlchemyError as exc:
            raise TemporarilyUnavailable("The event store is unavailable; retry shortly",
                                         detail=type(exc).__name__) from exc
        return {"sets": sets, "moreAvailable": more}
