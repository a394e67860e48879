"""Composition root: builds every service from the settings and runs the background loops."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import anyio
import anyio.to_thread
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette

from authserver import apikeys, audit, events, fanout, hashing, registration, users
from authserver.cimd import MetadataDocuments
from authserver.clients import ClientCache, ClientDirectory
from authserver.clients.usage import UsageTracker, record_last_used
from authserver.clock import Clock, SystemClock
from authserver.config import Settings
from authserver.feed import DELIVERED, purge_receivers
from authserver.keyring import KeyFileError, Keyring
from authserver.oauth.authorize import AuthorizationRequests
from authserver.oauth.client_auth import ClientAuthenticator
from authserver.oauth.feed import FeedService, Notifier
from authserver.oauth.grants import PersonGrants
from authserver.oauth.revocation import RevocationService
from authserver.oauth.token import TokenService
from authserver.outbound import JsonFetcher
from authserver.people import codes, refresh
from authserver.ratelimit import CounterStore, Limits
from authserver.replay import MemoryReplayCache
from authserver.revocation import DenyList, TokenInspector, purge_denied
from authserver.scopes import ScopeCatalog
from authserver.storage.db import Database
from authserver.usage import UsageCounters, record_usage
from authserver.web.account import AccountPages
from authserver.web.admin_api import AdminDeps
from authserver.web.admin_ops import OperatorEndpoints
from authserver.web.admin_ui import AdminUi
from authserver.web.admin_ui import routes as admin_ui_routes
from authserver.web.apikeys import ApiKeyEndpoints
from authserver.web.app import build_app
from authserver.web.clients_admin import ClientEndpoints
from authserver.web.credentials import install_log_redaction
from authserver.web.feed import FeedEndpoint
from authserver.web.forward_auth import ForwardAuth
from authserver.web.oauth import OAuthEndpoints
from authserver.web.observability import Health, MetricsEndpoint, RuntimeState
from authserver.web.organizations import OrganizationEndpoints
from authserver.web.registration import RegistrationEndpoints
from authserver.web.signin import SignIn
from authserver.web.users_admin import UserEndpoints
from authserver.web.wellknown import WellKnown

log = logging.getLogger("authserver")
# Events committed this long after their created_at are still picked up (concurrent writers).
EVENT_RESCAN_MARGIN = 10.0
# The server key self-registered clients' credentials are derived from (docs/registration.md).
REGISTRATION_KEY = "registration.key"
PURGE_INTERVAL = 3600.0
# A feed receiver silent this long (or longer than the longest token lifetime) is forgotten.
RECEIVER_IDLE_LIMIT = 86400.0


@dataclass
class Runtime:
    """Every long-lived service of one server process."""

    settings: Settings
    clock: Clock
    db: Database
    keyring: Keyring
    cache: ClientCache
    catalog: ScopeCatalog
    fetcher: JsonFetcher
    tokens: TokenService
    usage: UsageTracker
    registrar: registration.Registrar
    denied: DenyList
    revocation: RevocationService
    notifier: Notifier
    feed: FeedService
    api_key_cache: apikeys.ApiKeyCache
    api_keys: apikeys.ApiKeyAuthenticator
    limits: Limits
    counters: UsageCounters
    failures: audit.FailureLog
    event_cursor: int = 0
    last_poll_ok: float = 0.0
    # Wakes the event follower before its poll interval (the fan-out; docs/deploy.md).
    wakeup: fanout.Wakeup = field(default_factory=fanout.Wakeup)
    fanout: fanout.Fanout | None = None
    _seen_events: dict[int, float] = field(default_factory=dict)

    def read_new_events(self) -> list[events.EventRecord]:
        """Events not seen yet (runs in a worker thread)."""
        now = self.clock.now()
        with self.db.session() as session:
            batch = events.read_since(session, self.event_cursor, now - EVENT_RESCAN_MARGIN)
        fresh = [e for e in batch if e.id not in self._seen_events]
        for event in fresh:
            self._seen_events[event.id] = event.created_at
            self.event_cursor = max(self.event_cursor, event.id)
        self._seen_events = {i: t for i, t in self._seen_events.items()
                             if t >= now - 2 * EVENT_RESCAN_MARGIN or i == self.event_cursor}
        return fresh

    def apply_events(self, fresh: list[events.EventRecord]) -> None:
        """Invalidate what the events name (on the event loop, beside the cache's readers)."""
        if any(e.type.startswith("organization.") for e in fresh):
            self.cache.clear()  # records carry their organisation's state
            self.api_key_cache.clear()
        self.cache.invalidate(e.subject for e in fresh if e.type.startswith("client."))
        self.api_key_cache.invalidate(e.subject for e in fresh if e.type.startswith("api_key."))
        self.denied.apply(fresh)
        self.denied.stale = False
        if any(e.type in DELIVERED for e in fresh):
            self.notifier.notify()
        self.last_poll_ok = self.clock.now()

    def enforce_staleness(self) -> None:
        """While the log is not being read (a poll failing, or hanging), cached clients may be
        stale: past the bound they are dropped, and the deny-list is marked stale, so lookups go
        to the store (503 if it is down).
        Runs on its own loop, so a poll stuck in the database cannot hold it up."""
        if self.clock.now() - self.last_poll_ok > self.settings.cache.max_staleness:
            self.cache.clear()
            self.api_key_cache.clear()
            self.denied.stale = True

    def poll_events(self) -> int:
        """Read and apply in one go; returns how many events were new."""
        fresh = self.read_new_events()
        self.apply_events(fresh)
        return len(fresh)

    def flush_usage(self) -> None:
        """Write the last-use times noted since the previous flush (kept on failure)."""
        used = self.usage.take()
        counted, keys_used = self.counters.take()
        failures = self.failures.take(self.clock.now())
        try:
            with self.db.session(write=True) as session:
                record_last_used(session, used)
                record_usage(session, counted, keys_used)
                audit.write_entries(session, failures)
        except BaseException:
            self.usage.give_back(used)
            self.counters.give_back(counted, keys_used)
            self.failures.give_back(failures)
            raise

    def reap_registrations(self) -> int:
        """Flush usage first, so this instance never reaps a client it just served."""
        self.flush_usage()
        with self.db.session(write=True) as session:
            count = registration.reap(session, self.settings.registration, self.clock.now(),
                                      self.settings.cache.last_used_flush_interval)
        log.info("reaped %d unused self-registered clients", count)
        return count

    def purge_expired(self) -> tuple[int, int, int]:
        """Revoked tokens past their `exp` need no deny-list entry any more, feed receivers
        long silent no position, audit entries past retention no place: (deny-list rows,
        receivers, audit entries) removed."""
        now = self.clock.now()
        idle = max(RECEIVER_IDLE_LIMIT, self.feed.history)
        with self.db.session(write=True) as session:
            denied = purge_denied(session, now)
            receivers = purge_receivers(session, now - idle)
            entries = audit.purge(session, now - self.settings.audit.retention_days * 86400.0)
            users.purge_sessions(session, now)
            # Kept an hour past expiry, so a late second use of a code is still recognised.
            codes.purge_codes(session, now - 3600.0)
            refresh.purge_refresh_tokens(session, now)
        self.denied.purge(now)
        return denied, receivers, entries

    def start_position(self) -> None:
        with self.db.session() as session:
            self.event_cursor = events.last_id(session)
            self.denied.load(session, self.clock.now())
        self.last_poll_ok = self.clock.now()


def build_runtime(settings: Settings, clock: Clock | None = None) -> Runtime:
    clock = clock or SystemClock()
    db = Database(settings.effective_database_url, settings.database)
    keyring = Keyring(Path(settings.keys_dir), settings.tokens.access_token_lifetime)
    cache = ClientCache()
    catalog = ScopeCatalog(settings)
    fetcher = JsonFetcher(settings.outbound, clock)
    authenticator = ClientAuthenticator(settings, clock, MemoryReplayCache(), fetcher)
    usage = UsageTracker()
    failures = audit.FailureLog()
    limits = Limits(settings.rate_limits, CounterStore(settings.redis_url))
    tokens = TokenService(settings, clock, keyring, ClientDirectory(db, cache), authenticator,
                          catalog, usage, limits, failures)
    denied = DenyList(horizon=2.0 * settings.tokens.access_token_lifetime)
    directory = tokens.clients
    inspector = TokenInspector(settings.issuer, clock, keyring, directory, denied, db)
    revocation = RevocationService(tokens, inspector, denied, db, clock)
    if settings.authorization.enabled:
        documents = MetadataDocuments(settings, clock) if settings.cimd.enabled else None
        tokens.enable_people(PersonGrants(settings, clock, keyring, db, denied), documents)
        inspector.lookup = tokens.lookup
    notifier = Notifier()
    feed = FeedService(settings, clock, db, keyring, tokens, notifier, EVENT_RESCAN_MARGIN)
    keys_dir = Path(settings.keys_dir)
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    registrar = registration.Registrar(
        settings, catalog, db, clock, hashing.load_or_create_key(keys_dir / REGISTRATION_KEY))
    api_key_cache = apikeys.ApiKeyCache()
    api_keys = apikeys.ApiKeyAuthenticator(db, api_key_cache, settings.api_keys.prefix, clock,
                                           failures)
    counters = UsageCounters(settings.rate_limits.read_credits,
                             settings.rate_limits.write_credits)
    runtime = Runtime(settings, clock, db, keyring, cache, catalog, fetcher, tokens, usage,
                      registrar, denied, revocation, notifier, feed, api_key_cache, api_keys,
                      limits, counters, failures)
    channel = fanout.channel_for(settings.cache.fanout, settings.redis_url,
                                 settings.effective_database_url, settings.cache.fanout_channel)
    if channel is not None:
        runtime.fanout = fanout.Fanout(channel, runtime.wakeup)
        events.on_commit(db.engine, runtime.fanout.committed)
    return runtime


def people_pages(settings: Settings, rt: Runtime) -> AccountPages | None:
    """The authorization endpoint, sign-in, consent and account pages, and userinfo."""
    if not settings.authorization.enabled:
        return None
    requests = AuthorizationRequests(settings, rt.catalog,
                                     partial(rt.tokens.lookup, explain=True))
    pages = AccountPages(settings, rt.db, rt.clock, SignIn(settings, rt.db, rt.clock),
                         rt.catalog, requests)
    pages.bind(rt.tokens, rt.revocation.inspector)
    return pages


def prepare_storage(db: Database) -> None:
    """`serve` migrates the embedded SQLite store itself; other stores need `authserver
    migrate` run deliberately (an upgrade step an operator should see)."""
    if db.url.get_backend_name() == "sqlite":
        db.migrate()
    elif db.pending_migrations():
        raise RuntimeError("the database has pending migrations; run `authserver migrate` first")


async def _every(interval: float, job_name: str, job: Callable[[], Awaitable[None]]) -> None:
    """Run `job` forever; a failure is logged and retried, never ends the loop."""
    while True:
        await anyio.sleep(interval)
        try:
            await job()
        except (SQLAlchemyError, KeyFileError, OSError) as exc:
            log.warning("%s failed: %s", job_name, exc)
        except Exception:
            log.exception("%s failed unexpectedly", job_name)


def create_app(
    settings: Settings, clock: Clock | None = None, runtime: Runtime | None = None
) -> Starlette:
    rt = runtime or build_runtime(settings, clock)
    install_log_redaction()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(prepare_storage, rt.db)
        now = rt.clock.now()
        if settings.signing.generate_if_missing:
            rt.keyring.ensure_signer(settings.signing.algorithm, now)
        else:
            rt.keyring.load(now)
        if rt.keyring.snapshot(now).signer is None:
            log.warning("no signing key is active: the token endpoint answers 503")
        await anyio.to_thread.run_sync(rt.start_position)
        async def follow_events() -> None:
            rt.apply_events(await anyio.to_thread.run_sync(rt.read_new_events))

        async def watch_staleness() -> None:
            rt.enforce_staleness()

        async def reload_keys() -> None:
            await anyio.to_thread.run_sync(lambda: rt.keyring.load(rt.clock.now()))

        async def flush_usage() -> None:
            await anyio.to_thread.run_sync(rt.flush_usage)

        async def reap() -> None:
            await anyio.to_thread.run_sync(rt.reap_registrations)

        async def purge() -> None:
            await anyio.to_thread.run_sync(rt.purge_expired)

        rt.wakeup.bind()
        async with anyio.create_task_group() as tg:
            tg.start_soon(fanout.follow, rt.wakeup, settings.cache.event_poll_interval,
                          follow_events)
            if rt.fanout is not None:
                tg.start_soon(rt.fanout.run)
            tg.start_soon(_every, settings.signing.reload_interval, "key reload", reload_keys)
            tg.start_soon(_every, settings.cache.event_poll_interval, "staleness check",
                          watch_staleness)
            tg.start_soon(_every, settings.cache.last_used_flush_interval, "last-use flush",
                          flush_usage)
            tg.start_soon(_every, PURGE_INTERVAL, "deny-list, feed and audit purge", purge)
            if settings.registration.policy != "closed":
                tg.start_soon(_every, settings.registration.reap_interval, "registration reaper",
                              reap)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
        try:
            await anyio.to_thread.run_sync(rt.flush_usage)
        except SQLAlchemyError as exc:
            log.warning("last-use flush at shutdown failed: %s", exc)
        await rt.fetcher.aclose()
        if rt.tokens.documents is not None:
            await rt.tokens.documents.aclose()
        await rt.limits.store.aclose()
        rt.db.dispose()

    admin = AdminDeps(settings, rt.db, rt.catalog, rt.api_keys, rt.revocation.inspector,
                      rt.clock, rt.limits, rt.cache, rt.keyring)
    app = build_app(
        wellknown=WellKnown(settings, rt.catalog, rt.keyring, rt.clock),
        oauth=OAuthEndpoints(settings, rt.tokens, rt.revocation),
        feed=FeedEndpoint(settings, rt.feed),
        registration=None if settings.registration.policy == "closed"
        else RegistrationEndpoints(settings, rt.registrar, rt.cache, rt.limits),
        api_keys=ApiKeyEndpoints(admin),
        orgs=OrganizationEndpoints(admin),
        admin_clients=ClientEndpoints(admin),
        operator=OperatorEndpoints(admin),
        users=UserEndpoints(admin),
        forward_auth=ForwardAuth(settings, rt.api_keys, rt.revocation.inspector, rt.limits,
                                 rt.counters, rt.clock),
        health=Health(rt.db, rt.keyring, rt.clock),
        people=people_pages(settings, rt),
        metrics=MetricsEndpoint(settings, RuntimeState(
            rt.clock, rt.keyring, lambda: rt.last_poll_ok, lambda: rt.denied.stale,
            {"clients": rt.cache, "api_keys": rt.api_key_cache},
        )) if settings.metrics.enabled else None,
        lifespan=lifespan,
    )
    app.router.routes.extend(admin_ui_routes(AdminUi(admin, rt.tokens.rate)))
    app.state.runtime = rt
    return app
