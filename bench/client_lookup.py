"""Bench-only: the in-process cost of a client-cache miss against the number of stored clients
(bench/run.sh `CLIENTS`, after each server has stopped; pinned to the server core).

    python bench/client_lookup.py --config CONFIG.toml --basic-file FILE [--rounds 3]

For the clients of FILE (the Basic credentials of the sample the spread runs used), times:

- `read`: `ClientDirectory._load`, what a miss runs in a worker thread: one session and
  `load_client` (the client by primary key, then its organisation);
- `miss`: `ClientDirectory.get` with the cache emptied before each call: the read plus the
  hop to the worker thread and back, as on the token path;
- `hit`: `ClientDirectory.get` with the client cached (one dict lookup);
- `poll`: `Runtime.read_new_events`, the event follower's read that every server runs once per
  `cache.event_poll_interval` (1 s) in a worker thread, with no new events (each client
  created wrote one `client.created` event, so the log holds at least N events). Its clock is
  set 60 s ahead: the poll also re-reads the events of the last 10 s (EVENT_RESCAN_MARGIN),
  and the seeding has just written thousands; during the runs it is older than that.

Prints one markdown table row: N (stored clients), the sample size, then the median and p99 of
each, in µs.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import time
from pathlib import Path

import anyio
from sqlalchemy import func, select

from authserver.cli.common import database
from authserver.clients import ClientCache, ClientDirectory
from authserver.clock import SystemClock
from authserver.config import load_settings
from authserver.storage.models import Client
from authserver.wiring import build_runtime


class _Later(SystemClock):
    def now(self) -> float:
        return super().now() + 60.0


def _stats(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"{statistics.median(ordered) * 1e6:.0f} | {p99 * 1e6:.0f}"


async def _timed_get(directory: ClientDirectory, ids: list[str], rounds: int,
                     clear: bool) -> list[float]:
    samples = []
    if not clear:
        for client_id in ids:  # cache them first
            await directory.get(client_id)
    for _ in range(rounds):
        for client_id in ids:
            if clear:
                directory.cache.clear()
            started = time.perf_counter()
            record = await directory.get(client_id)
            samples.append(time.perf_counter() - started)
            assert record is not None, client_id
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--basic-file", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    settings = load_settings(args.config)
    db = database(settings)
    with db.session() as session:
        stored = session.scalar(select(func.count()).select_from(Client))
    ids = [base64.b64decode(line).decode().partition(":")[0]
           for line in Path(args.basic_file).read_text(encoding="ascii").split()]
    directory = ClientDirectory(db, ClientCache())

    for client_id in ids:  # warm the connection pool and the database's page cache alike
        directory._load(client_id)
    reads = []
    for _ in range(args.rounds):
        for client_id in ids:
            started = time.perf_counter()
            directory._load(client_id)
            reads.append(time.perf_counter() - started)
    misses = anyio.run(_timed_get, directory, ids, args.rounds, True)
    hits = anyio.run(_timed_get, directory, ids, args.rounds, False)
    runtime = build_runtime(settings, _Later())
    runtime.start_position()
    polls = []
    for _ in range(20):
        started = time.perf_counter()
        runtime.read_new_events()
        polls.append(time.perf_counter() - started)
    runtime.db.dispose()
    print(f"| {stored:,} | {len(ids):,} | {_stats(reads)} | {_stats(misses)} | {_stats(hits)} "
          f"| {_stats(polls)} |")


if __name__ == "__main__":
    main()
