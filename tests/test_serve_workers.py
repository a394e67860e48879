"""`authserver serve --workers N`: N processes, each with its own app, caches and event
follower (docs/deploy.md "Workers")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests import factories
from tests.conftest import serve_config

POLL = 0.5  # cache.event_poll_interval of every worker
WORKERS = 2


def children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


def worker_pids(pid: int) -> set[int]:
    """The server processes under the supervisor (multiprocessing's resource tracker aside)."""
    found = set()
    for child in children(pid):
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"spawn_main" in cmdline:
            found.add(child)
    return found


def test_workers_serve_follow_the_log_and_stop_on_sigterm(tmp_path: Path) -> None:
    config, url = serve_config(
        tmp_path, f"shutdown_timeout = 5\n[cache]\nevent_poll_interval = {POLL}\n")
    env = {**os.environ, "AUTHSERVER_CONFIG": str(config)}
    cli = [sys.executable, "-m", "authserver.cli"]
    made = subprocess.run([*cli, "--json", "clients", "create", "--name", "w", "--scope",
                           "read"], env=env, capture_output=True, text=True, timeout=60,
                          check=True)
    created = json.loads(made.stdout)
    auth = factories.basic_auth(created["client_id"], factories.remember(
        created["client_secret"]) or "")
    server = subprocess.Popen([*cli, "serve", "--workers", str(WORKERS)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while len(worker_pids(server.pid)) < WORKERS or not _up(url):
            assert server.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.1)
        workers = worker_pids(server.pid)
        assert len(workers) == WORKERS

        def token_status() -> int:  # a new connection each time: the kernel spreads them
            answer = httpx.post(url + "/token", data={"grant_type": "client_credentials"},
                                headers={**auth, "connection": "close"}, timeout=10)
            if answer.status_code == 200:
                factories.remember(answer.json()["access_token"])
            return answer.status_code

        assert {token_status() for _ in range(20)} == {200}  # every worker has it cached
        # Disabled by another process (the CLI): every worker follows the log by itself.
        subprocess.run([*cli, "clients", "disable", created["client_id"]], env=env,
                       capture_output=True, timeout=60, check=True)
        time.sleep(POLL + 1.0)
        assert {token_status() for _ in range(20)} == {401}

        server.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        code = server.wait(timeout=30)
        stopped_in = time.monotonic() - stopping
        stderr = server.stderr.read() if server.stderr else ""
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if server.stderr:
            server.stderr.close()
    assert code == 0, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    assert stopped_in < 10
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/.well-known/jwks.json", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
