"""The fan-out channel: wake-ups reach the follower, a killed subscription comes back by itself,
an unreachable channel is retried with backoff (no busy loop) and shuts down cleanly."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import anyio
import psycopg
import pytest
import redis

from authserver import fanout
from tests.conftest import POSTGRES_ENV

pytestmark = pytest.mark.anyio
REDIS_ENV = "AUTHSERVER_TEST_REDIS_URL"


async def until(condition: Callable[[], bool], within: float = 10.0) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within:
            raise AssertionError(f"not within {within} s")
        await anyio.sleep(0.01)
    return time.monotonic() - started


async def test_follow_reads_when_woken_and_polls_otherwise() -> None:
    wakeup = fanout.Wakeup()
    wakeup.bind()
    reads: list[float] = []

    async def read() -> None:
        reads.append(time.monotonic())
        if len(reads) == 2:
            raise RuntimeError("a failed read is logged and retried, never ends the loop")

    async with anyio.create_task_group() as tg:
        tg.start_soon(fanout.follow, wakeup, 0.5, read)
        await anyio.sleep(0.05)
        wakeup.set()
        await until(lambda: len(reads) == 1, 1.0)  # at once, long before the poll interval
        await anyio.to_thread.run_sync(wakeup.set)  # from a worker thread, as commits run
        await until(lambda: len(reads) == 2, 1.0)
        await until(lambda: len(reads) == 3, 1.5)  # then the poll, woken or not
        tg.cancel_scope.cancel()
    assert reads[2] - reads[1] >= 0.45


def _channel(kind: str, name: str) -> tuple[fanout.Channel, Callable[[], int]]:
    """A channel of `kind`, and a function that kills its subscriber's connection."""
    if kind == "redis":
        url = os.environ.get(REDIS_ENV)
        if not url:
            pytest.skip(f"{REDIS_ENV} is not set")

        def kill_redis() -> int:
            admin = redis.Redis.from_url(url)
            try:
                killed = 0
                for client in admin.client_list(_type="pubsub"):
                    if client.get("name") == f"authserver-fanout-{name}":
                        killed += int(admin.client_kill_filter(_id=client["id"]))
                return killed
            finally:
                admin.close()
        return fanout.RedisChannel(url, name), kill_redis
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set")
    conninfo = fanout.libpq_conninfo(url)

    def kill_postgres() -> int:
        with psycopg.connect(conninfo, autocommit=True) as admin:
            rows = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query = %s AND pid <> pg_backend_pid()", (f'LISTEN "{name}"',)).fetchall()
        return len(rows)
    return fanout.PostgresChannel(conninfo, name), kill_postgres


@pytest.mark.parametrize("kind", ["redis", "postgres"])
async def test_a_killed_subscription_comes_back_and_hears_again(kind: str) -> None:
    name = "ft_" + os.urandom(6).hex()
    channel, kill = _channel(kind, name)
    sender_channel, _ = _channel(kind, name)
    wakeup, other = fanout.Wakeup(), fanout.Wakeup()
    wakeup.bind()
    other.bind()
    listener, sender = fanout.Fanout(channel, wakeup), fanout.Fanout(sender_channel, other)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.run)
        tg.start_soon(sender.run)
        await until(lambda: listener.connected and sender.connected)
        sender.committed()  # what a commit on another instance does
        await until(lambda: listener.received >= 1, 5.0)

        assert await anyio.to_thread.run_sync(kill) == 2  # both subscriptions
        await until(lambda: not listener.connected, 5.0)
        back = await until(lambda: listener.connected and sender.connected, 5.0)
        before = listener.received
        sender.committed()
        await until(lambda: listener.received > before, 5.0)
        tg.cancel_scope.cancel()
    print(f"\n{kind}: subscription back {back:.2f} s after it was killed")
    assert not listener.connected


async def test_an_unreachable_channel_backs_off_and_stops_cleanly() -> None:
    channel = fanout.RedisChannel("redis://127.0.0.1:1/0", "ft_down")
    attempts: list[float] = []
    real_listen = channel.listen

    async def counting_listen(*args: object) -> None:
        attempts.append(time.monotonic())
        await real_listen(*args)  # type: ignore[arg-type]

    channel.listen = counting_listen  # type: ignore[method-assign]
    wakeup = fanout.Wakeup()
    wakeup.bind()
    hub = fanout.Fanout(channel, wakeup)
    async with anyio.create_task_group() as tg:
        tg.start_soon(hub.run)
        for _ in range(50):  # a burst of commits while the channel is down
            hub.committed()
        await anyio.sleep(4.0)
        stopping = time.monotonic()
        tg.cancel_scope.cancel()
    assert time.monotonic() - stopping < 1.0
    assert not hub.connected and hub.published == 0
    # backoff 0.5, 1, 2 s (x 0.5-1.5 jitter): a handful of attempts in 4 s, not a busy loop
    assert 2 <= len(attempts) <= 6, attempts
