"""RFC 8936 poll delivery of the revocation feed: who may poll, and the long poll."""

from __future__ import annotations

import logging

import anyio
import anyio.to_thread
from sqlalchemy.exc import SQLAlchemyError

from authserver import feed
from authserver.clock import Clock
from authserver.config import Settings
from authserver.errors import InsufficientScope, TemporarilyUnavailable
from authserver.keyring import Keyring
from authserver.oauth.token import TokenService
from authserver.storage.db import Database

log = logging.getLogger("authserver.feed")
MAX_LIMIT = 1000
# A new receiver also gets events this much older than the longest token lifetime.
HISTORY_MARGIN = 60.0


class Notifier:
    """Wakes long polls when the event log brings something deliverable. Take `current()`
    before looking at the store, then wait on it: a notification in between is not missed."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def current(self) -> anyio.Event:
        return self._event

    def notify(self) -> None:
        self._event.set()
        self._event = anyio.Event()


class FeedService:
    def __init__(
        self, settings: Settings, clock: Clock, db: Database, keyring: Keyring,
        tokens: TokenService, notifier: Notifier, settle: float,
    ) -> None:
        self.settings = settings.feed
        self.issuer = settings.issuer
        self.history = settings.tokens.access_token_lifetime + HISTORY_MARGIN
        self.settle = settle
        self.clock = clock
        self.db = db
        self.keyring = keyring
        self.tokens = tokens
        self.notifier = notifier
        self._waiting: dict[str, anyio.Event] = {}

    async def receiver(self, authorization: str | None, client_ip: str | None) -> str:
        """The polling client, by its own credentials (Basic or a private_key_jwt is not
        possible with a JSON body), holding the feed scope. Access tokens are not accepted:
        one meant for some API could otherwise acknowledge (and so hide) the client's SETs."""
        client = await self.tokens.authenticate({}, authorization, client_ip)
        if self.settings.scope not in client.scopes:
            raise InsufficientScope(f"Polling the revocation feed needs the scope "
                                    f"{self.settings.scope}")
        return client.client_id

    def _poll(self, client_id: str, request: feed.PollRequest) -> tuple[dict[str, str], bool]:
        signer = self.keyring.snapshot(self.clock.now()).signer
        if signer is None:
            raise TemporarilyUnavailable("No signing key is active", detail="no active key")
        for jti, report in request.errors.items():
            log.info("receiver %s could not process SET %s: %s", client_id, jti[:40],
                     str(report)[:200])
        with self.db.session(write=True) as session:
            batch = feed.poll(session, _receiver_id(client_id, request), client_id, request,
                              self.clock.now(),
                              history=self.history, settle=self.settle,
                              default_max=self.settings.max_events, limit=MAX_LIMIT)
            sets = {str(e.id): feed.sign_set(signer, e, self.issuer, client_id)
                    for e in batch.events}
        return sets, batch.more_available

    def _pending(self, receiver_id: str) -> bool:
        with self.db.session() as session:
            return feed.has_pending(session, receiver_id)

    async def poll(self, client_id: str, request: feed.PollRequest) -> dict[str, object]:
        """RFC 8936 §2.4: acknowledge, then answer with what is pending; without
        `returnImmediately`, wait up to the long-poll timeout for something to arrive."""
        try:
            sets, more = await anyio.to_thread.run_sync(self._poll, client_id, request)
            if not sets and not request.return_immediately and request.max_events != 0:
                await self._wait(_receiver_id(client_id, request))
                empty = feed.PollRequest(max_events=request.max_events, return_immediately=True,
                                         receiver=request.receiver)
                sets, more = await anyio.to_thread.run_sync(self._poll, client_id, empty)
        except SQLAlchemyError as exc:
            raise TemporarilyUnavailable("The event store is unavailable; retry shortly",
                                         detail=type(exc).__name__) from exc
        return {"sets": sets, "moreAvailable": more}

    async def _wait(self, receiver_id: str) -> None:
        """Until the receiver has something pending, the long-poll timeout passes, or a newer
        long poll of the same receiver takes over (one waiter per receiver; past
        `max_long_polls` waiters, polls answer at once)."""
        if receiver_id not in self._waiting and len(self._waiting) >= self.settings.max_long_polls:
            return
        previous = self._waiting.get(receiver_id)
        if previous is not None:
            previous.set()
        superseded = self._waiting[receiver_id] = anyio.Event()
        try:
            with anyio.move_on_after(self.settings.long_poll_timeout):
                while not superseded.is_set():
                    wake = self.notifier.current()
                    if await anyio.to_thread.run_sync(self._pending, receiver_id):
                        break
                    with anyio.move_on_after(self.settle):
                        await _first_of(wake, superseded)
        finally:
            if self._waiting.get(receiver_id) is superseded:
                del self._waiting[receiver_id]


async def _first_of(*events: anyio.Event) -> None:
    """Wait until one of `events` is set."""
    async with anyio.create_task_group() as tg:
        async def wait(event: anyio.Event) -> None:
            await event.wait()
            tg.cancel_scope.cancel()

        for event in events:
            tg.start_soon(wait, event)


def _receiver_id(client_id: str, request: feed.PollRequest) -> str:
    return f"{client_id}/{request.receiver}"
