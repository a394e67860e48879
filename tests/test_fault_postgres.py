"""PostgreSQL stopped for a few seconds under token traffic and admin writes (issue 7).

A throwaway cluster of its own (`initdb` + `pg_ctl` from Debian's packages, in a temporary
directory, on a free port; never the shared server): during the outage only 200 and 503
`temporarily_unavailable`, never a 500 or a dropped connection; every admin write answered 2xx
is there afterwards; after the database is back, everything works again without a restart.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from authserver import apikeys, audit
from authserver.storage.db import Database
from authserver.storage.models import DEFAULT_ORG_ID
from tests import factories
from tests.conftest import ON_POSTGRES, bind_loopback, start_live_server

OUTAGE_SECONDS = 3.0
RECOVERY_SECONDS = 15.0


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return Path(found[-1]).parent if found else None


class Cluster:
    """A PostgreSQL cluster in a temporary directory; as the postgres user when run as root
    (initdb refuses root)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="authserver-pgfault-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        sock, _ = bind_loopback()
        self.port = sock.getsockname()[1]
        sock.close()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=timeout)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync",
                  "-E", "UTF8")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off",
                  "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if ON_POSTGRES:
        pytest.skip("brings its own PostgreSQL; runs once, in the SQLite pass")
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin "
                    "(apt-get install postgresql)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: initdb refuses root")
    c = Cluster(bindir)
    try:
        c.init()
        c.start()
        with psycopg.connect(c.url("postgres"), autocommit=True) as conn:
            conn.execute('CREATE DATABASE "authserver"')
        yield c
    finally:
        c.destroy()


@dataclass
class Traffic:
    """What a load thread saw: (time, status or exception name, error code, Retry-After)."""

    results: list[tuple[float, str, str, str | None]] = field(default_factory=list)
    created: list[str] = field(default_factory=list)  # organisation ids answered 201
    stop: threading.Event = field(default_factory=threading.Event)

    def outcomes(self, since: float = 0.0) -> set[str]:
        return {status for t, status, _, _ in self.results if t >= since}


def _drive_tokens(url: str, client_id: str, secret: str, traffic: Traffic) -> None:
    with httpx.Client(base_url=url, timeout=10) as http:
        while not traffic.stop.is_set():
            try:
                r = http.post("/token", data={"grant_type": "client_credentials"},
                              headers=factories.basic_auth(client_id, secret))
                code = r.json().get("error", "") if r.status_code != 200 else ""
                traffic.results.append((time.monotonic(), str(r.status_code), code,
                                        r.headers.get("retry-after")))
            except httpx.HTTPError as exc:
                traffic.results.append((time.monotonic(), type(exc).__name__, "", None))
            time.sleep(0.005)


def _drive_admin_writes(url: str, key: str, traffic: Traffic) -> None:
    with httpx.Client(base_url=url, timeout=10, headers={"x-api-key": key}) as http:
        n = 0
        while not traffic.stop.is_set():
            n += 1
            try:
                r = http.post("/api/v1/organizations", json={"name": f"fault {n}"})
                code = "" if r.status_code < 400 else r.json()["error"]["code"]
                if r.status_code == 201:
                    traffic.created.append(r.json()["id"])
                traffic.results.append((time.monotonic(), str(r.status_code), code,
                                        r.headers.get("retry-after")))
            except httpx.HTTPError as exc:
                traffic.results.append((time.monotonic(), type(exc).__name__, "", None))
            time.sleep(0.05)


def _wait_for(predicate: Any, within: float, what: str) -> float:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.05)
    raise AssertionError(f"{what} within {within} s")


def test_postgres_outage_under_load_is_503_and_recovers(cluster: Cluster, tmp_path: Path) -> None:
    url = cluster.url("authserver")
    migrator = Database(url)
    migrator.migrate()
    migrator.dispose()
    server = start_live_server(
        tmp_path, database_url=url,
        # fail closed fast: cached clients are trusted for 1 s without a readable event log
        cache={"event_poll_interval": 0.2, "max_staleness": 1.0,
               "last_used_flush_interval": 0.5},
        database={"connect_timeout": 2, "pool_timeout": 2.0, "pool_size": 5},
    )
    tokens, writes = Traffic(), Traffic()
    threads: list[threading.Thread] = []
    try:
        rt = server.runtime
        client, secret = factories.create_client(rt)
        assert secret is not None
        with rt.db.session(write=True) as session:
            _, key = apikeys.create_key(
                session, rt.catalog, apikeys.ApiKeySpec("fault", DEFAULT_ORG_ID, ("*",)),
                rt.settings.api_keys.prefix, rt.clock.now(), audit.Actor("test"))
        factories.remember(key)
        threads = [
            threading.Thread(target=_drive_tokens, args=(server.url, client.client_id, secret,
                                                         tokens), daemon=True),
            threading.Thread(target=_drive_admin_writes, args=(server.url, key, writes),
                             daemon=True),
        ]
        for t in threads:
            t.start()
        _wait_for(lambda: "200" in tokens.outcomes() and "201" in writes.outcomes(), 10,
                  "traffic flowing before the outage")
        time.sleep(0.5)

        down_at = time.monotonic()
        cluster.stop("fast")
        time.sleep(OUTAGE_SECONDS)
        cluster.start()
        up_at = time.monotonic()

        # recovery, by itself: both kinds of request succeed again, then keep succeeding
        recovered = _wait_for(
            lambda: "200" in tokens.outcomes(time.monotonic() - 0.2)
            and "201" in writes.outcomes(time.monotonic() - 0.3),
            RECOVERY_SECONDS, "service back after the database returned")
        time.sleep(2.0)
        steady = recovered + 0.5
    finally:
        tokens.stop.set()
        writes.stop.set()
        for t in threads:
            t.join(timeout=15)
        server.stop()

    # only 200 and 503 throughout: no 500, no reset or refused connection
    assert tokens.outcomes() <= {"200", "503"}, sorted(tokens.outcomes())
    assert writes.outcomes() <= {"201", "503"}, sorted(writes.outcomes())
    # the outage was seen, and answered as documented
    outage_tokens = [r for r in tokens.results if down_at <= r[0] <= up_at + 1]
    assert any(r[1] == "503" for r in outage_tokens), "no 503 while the database was down"
    assert any(r[1] == "503" for r in writes.results if down_at <= r[0])
    for _, status, code, retry_after in tokens.results + writes.results:
        if status == "503":
            assert code == "temporarily_unavailable"
            assert retry_after is not None and int(retry_after) > 0
    # after recovery: every request succeeds
    assert tokens.outcomes(steady) == {"200"}
    assert writes.outcomes(steady) == {"201"}
    # no admin write answered 2xx was lost
    with psycopg.connect(url) as conn:
        stored = {row[0] for row in conn.execute("SELECT id FROM organizations")}
        used = conn.execute("SELECT last_used_at FROM clients WHERE client_id = %s",
                            (client.client_id,)).fetchone()
    assert writes.created and set(writes.created) <= stored
    # last-use times noted during the outage were kept and written once it was back
    assert used is not None and used[0] is not None
