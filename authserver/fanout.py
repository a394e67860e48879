"""Event-log fan-out: a commit that appends to the event log wakes every instance's follower.

The message is only a wake-up: it carries no event, and a follower that gets one reads the log
(the source of truth) at once. A lost message therefore costs at most one
`cache.event_poll_interval`, which polling keeps as the bound whether the channel works or not.

Two channels (`cache.fanout`, docs/deploy.md "Several instances"):

- Redis pub/sub (`redis_url`), the choice when Redis is there: nothing between the instances
  and Redis has to keep a session open for them, unlike LISTEN behind PgBouncer in
  transaction mode;
- PostgreSQL LISTEN/NOTIFY, chosen explicitly (`cache.fanout = "postgres"`) when there is no
  Redis: no extra infrastructure, one connection per process kept outside the pool. Not the
  default: behind PgBouncer in transaction mode a LISTEN hears nothing, silently.

Publishing happens after the commit, from a task of its own: a commit only sets a flag (from
whatever thread it ran in) and bursts of commits coalesce into one message. A channel that is
down is retried with capped exponential backoff; publishing into it fails quietly (logged at
most once per backoff), and the followers poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

import anyio
import psycopg
import redis.asyncio
from psycopg import sql

log = logging.getLogger("authserver.fanout")
Kind = Literal["redis", "postgres"]
# Reconnect backoff: doubles from the first to the cap, with jitter, reset by a good session.
BACKOFF_FIRST = 0.5
BACKOFF_CAP = 10.0
# How long a subscriber waits for a message before checking its connection is alive.
KEEPALIVE = 15.0
CONNECT_TIMEOUT = 2.0
# Reads the log at most this often however many wake-ups arrive (a burst is one read anyway).
MIN_READ_GAP = 0.01
_JITTER = secrets.SystemRandom()


class Wakeup:
    """A flag the follower sleeps on, settable from any thread (commits run in worker threads,
    messages arrive on the event loop)."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.count = 0

    def bind(self) -> None:
        """Attach to the running event loop (the follower's)."""
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def set(self) -> None:
        self.count += 1
        _set_from_any_thread(self._loop, self._event)

    async def wait(self, seconds: float) -> bool:
        """Sleep until set or for `seconds`; True when woken. Clears the flag."""
        assert self._event is not None, "bind() first"
        woken = False
        with anyio.move_on_after(seconds):
            await self._event.wait()
            woken = True
        self._event.clear()
        return woken


async def follow(wakeup: Wakeup, interval: float, read: Callable[[], Awaitable[None]]) -> None:
    """Read the log when woken, and every `interval` seconds in any case (the fallback that
    bounds staleness when the channel is down). A failed read is logged and retried."""
    while True:
        await wakeup.wait(interval)
        try:
            await read()
        except Exception as exc:
            log.warning("event poll failed: %s: %s", type(exc).__name__, exc)
        await anyio.sleep(MIN_READ_GAP)


class Channel(Protocol):
    kind: Kind

    async def publish(self, payload: str) -> None: ...
    async def listen(self, on_message: Callable[[], None],
                     on_subscribed: Callable[[], None]) -> None: ...
    async def aclose(self) -> None: ...


class RedisChannel:
    """Redis pub/sub on one channel name."""

    kind: Kind = "redis"

    def __init__(self, url: str, channel: str) -> None:
        self.url = url
        self.channel = channel
        self._publisher = redis.asyncio.Redis.from_url(
            url, socket_timeout=CONNECT_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT)

    async def publish(self, payload: str) -> None:
        await self._publisher.publish(self.channel, payload)

    async def listen(self, on_message: Callable[[], None],
                     on_subscribed: Callable[[], None]) -> None:
        """Subscribe and call `on_message` per message until the connection fails (raises)."""
        client = redis.asyncio.Redis.from_url(
            self.url, socket_connect_timeout=CONNECT_TIMEOUT, socket_keepalive=True,
            health_check_interval=KEEPALIVE, client_name=f"authserver-fanout-{self.channel}")
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.channel)
            on_subscribed()
            while True:
                message = await pubsub.get_message(timeout=KEEPALIVE)
                if message is not None and message.get("type") == "message":
                    on_message()
                elif message is None:
                    await pubsub.ping()  # a dead connection raises here, not silently
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
                await client.aclose()

    async def aclose(self) -> None:
        with anyio.move_on_after(1.0):
            await self._publisher.aclose()


class PostgresChannel:
    """PostgreSQL LISTEN/NOTIFY on one channel, over connections of its own (not the pool's:
    a listening connection stays checked out for good)."""

    kind: Kind = "postgres"

    def __init__(self, conninfo: str, channel: str) -> None:
        self.conninfo = conninfo
        self.channel = channel
        self._publisher: psycopg.AsyncConnection[Any] | None = None
        self._lock = anyio.Lock()

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        with anyio.fail_after(CONNECT_TIMEOUT + 1):
            return await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True, connect_timeout=max(1, int(CONNECT_TIMEOUT)))

    async def publish(self, payload: str) -> None:
        async with self._lock:
            try:
                if self._publisher is None or self._publisher.closed:
                    self._publisher = await self._connect()
                with anyio.fail_after(CONNECT_TIMEOUT):
                    await self._publisher.execute("SELECT pg_notify(%s, %s)",
                                                  (self.channel, payload))
            except BaseException:
                await self._drop_publisher()
                raise

    async def _drop_publisher(self) -> None:
        connection, self._publisher = self._publisher, None
        if connection is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                await connection.close()

    async def listen(self, on_message: Callable[[], None],
                     on_subscribed: Callable[[], None]) -> None:
        connection = await self._connect()
        try:
            await connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            on_subscribed()
            while True:
                async for _ in connection.notifies(timeout=KEEPALIVE):
                    on_message()
                with anyio.fail_after(CONNECT_TIMEOUT):
                    await connection.execute("SELECT 1")  # a dead connection raises here
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                await connection.close()

    async def aclose(self) -> None:
        await self._drop_publisher()


class Fanout:
    """Publishes a wake-up after each commit that appended to the log, and wakes the local
    follower on every message (its own included: harmless, and it applies a local change
    without waiting for the poll)."""

    def __init__(self, channel: Channel, wakeup: Wakeup) -> None:
        self.channel = channel
        self.wakeup = wakeup
        # Names this process in messages (for debugging with redis-cli / pg_stat_activity).
        self.instance = secrets.token_hex(6)
        self.connected = False
        self.received = 0
        self.published = 0
        self._pending = threading.Event()
        self._poke: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._quiet_until = 0.0

    def committed(self) -> None:
        """After a commit that recorded events (any thread): ask the publisher task to tell
        every instance (this one applied its own change already, and hears its message too)."""
        self._pending.set()
        _set_from_any_thread(self._loop, self._poke)

    async def run(self) -> None:
        """The subscriber and the publisher, until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._poke = asyncio.Event()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._subscribe)
                tg.start_soon(self._publish)
        finally:
            self.connected = False
            with anyio.CancelScope(shield=True):
                await self.channel.aclose()

    def _on_message(self) -> None:
        self.received += 1
        self.wakeup.set()

    def _on_subscribed(self) -> None:
        self.connected = True
        log.info("event fan-out: listening on %s channel %r", self.channel.kind,
                 getattr(self.channel, "channel", "?"))
        self.wakeup.set()  # whatever was published while we were away: read the log now

    async def _subscribe(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            started = time.monotonic()
            try:
                await self.channel.listen(self._on_message, self._on_subscribed)
            except Exception as exc:
                if self.connected or delay == BACKOFF_FIRST:
                    log.warning("event fan-out (%s) unavailable, polling only: %s: %s",
                                self.channel.kind, type(exc).__name__, exc)
            self.connected = False
            if time.monotonic() - started > BACKOFF_CAP:
                delay = BACKOFF_FIRST  # it had been up for a while: start the backoff afresh
            await anyio.sleep(delay * (0.5 + _JITTER.random()))
            delay = min(BACKOFF_CAP, delay * 2)

    async def _publish(self) -> None:
        assert self._poke is not None
        while True:
            await self._poke.wait()
            self._poke.clear()
            if not self._pending.is_set():
                continue
            self._pending.clear()
            try:
                with anyio.fail_after(CONNECT_TIMEOUT * 2):
                    await self.channel.publish(self.instance)
                self.published += 1
            except Exception as exc:
                now = time.monotonic()
                if now >= self._quiet_until:
                    log.warning("event fan-out (%s): publish failed, other instances will see "
                                "the change by polling: %s: %s", self.channel.kind,
                                type(exc).__name__, exc)
                    self._quiet_until = now + BACKOFF_CAP
                await anyio.sleep(BACKOFF_FIRST)  # a burst of commits while down: one try per


def channel_for(kind: str, redis_url: str, database_url: str, channel: str) -> Channel | None:
    """The configured channel (`cache.fanout`), or None for polling only."""
    is_postgres = database_url.startswith("postgresql")
    if kind == "auto":  # LISTEN is opt-in: behind PgBouncer in transaction mode it hears nothing
        kind = "redis" if redis_url else "off"
    if kind == "off":
        return None
    if kind == "redis":
        if not redis_url:
            raise ValueError("cache.fanout = \"redis\" needs redis_url")
        return RedisChannel(redis_url, channel)
    if not is_postgres:
        raise ValueError("cache.fanout = \"postgres\" needs a PostgreSQL database_url")
    return PostgresChannel(libpq_conninfo(database_url), channel)


def libpq_conninfo(database_url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as libpq understands it (no `+driver`)."""
    _scheme, sep, rest = database_url.partition("://")
    return "postgresql://" + rest if sep else database_url


def _set_from_any_thread(loop: asyncio.AbstractEventLoop | None,
                         event: asyncio.Event | None) -> None:
    """Set `event` of `loop` from its own thread or any other; nothing before `bind` or once
    the loop has closed (shutdown)."""
    if loop is None or event is None or loop.is_closed():
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        event.set()
    else:
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(event.set)
