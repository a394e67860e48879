"""Bench-only: create many clients fast, as `authserver clients create --name … --scope "read
write"` would, for the client-scaling scenario of bench/run.sh (`CLIENTS`).

    python bench/seed_clients.py --config CONFIG.toml --count N --keep K --out FILE

Each client goes through the CLI's own domain call, `authserver.clients.create_client` (same
validation, SHA-256 secret digest, `client.created` event and audit entry, CLI actor), so the
token endpoint authenticates it exactly as a client created by the CLI. Only the transactions
differ: one per `--batch` clients (the CLI commits one per client, which takes a process
start each). FILE gets `base64(client_id:client_secret)`, the Basic credentials, of K clients
picked uniformly at random among the N, one a line; the other secrets are thrown away.
Progress and timing go to stderr.
"""

from __future__ import annotations

import argparse
import base64
import secrets
import sys
import time
from pathlib import Path

from authserver import clients
from authserver.cli.common import cli_actor, database
from authserver.clock import SystemClock
from authserver.config import load_settings
from authserver.scopes import ScopeCatalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--count", type=int, required=True, help="clients to create")
    parser.add_argument("--keep", type=int, default=1000,
                        help="clients whose Basic credentials go to --out (random sample)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch", type=int, default=2000, help="clients per transaction")
    parser.add_argument("--scope", default="read write")
    args = parser.parse_args()

    settings = load_settings(args.config)
    db = database(settings)
    catalog = ScopeCatalog(settings)
    clock = SystemClock()
    actor = cli_actor()
    spec = clients.ClientSpec(name="bench-seed", scopes=tuple(args.scope.split()))
    keep = set(secrets.SystemRandom().sample(range(args.count), min(args.keep, args.count)))
    kept: list[str] = []
    started = time.perf_counter()
    done = 0
    while done < args.count:
        size = min(args.batch, args.count - done)
        with db.session(write=True) as session:
            for i in range(done, done + size):
                record, secret = clients.create_client(session, catalog, spec, clock.now(),
                                                       actor=actor)
                if i in keep:
                    raw = f"{record.client_id}:{secret}".encode()
                    kept.append(base64.b64encode(raw).decode())
        done += size
        if done % 20000 < size or done == args.count:
            print(f"seed: {done}/{args.count} clients, {time.perf_counter() - started:.1f} s",
                  file=sys.stderr)
    Path(args.out).write_text("".join(f"{line}\n" for line in kept), encoding="ascii")
    elapsed = time.perf_counter() - started
    print(f"seed: {args.count} clients in {elapsed:.1f} s "
          f"({args.count / elapsed if elapsed else 0:.0f}/s); {len(kept)} kept in {args.out}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
