"""`authserver serve` drains in-flight requests on SIGTERM (server.shutdown_timeout)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests import factories
from tests.conftest import serve_config


def test_sigterm_lets_an_in_flight_request_finish_then_exits_0(tmp_path: Path) -> None:
    config, url = serve_config(
        tmp_path, "shutdown_timeout = 20\n[feed]\nlong_poll_timeout = 3.0\n")
    env = {**os.environ, "AUTHSERVER_CONFIG": str(config)}
    cli = [sys.executable, "-m", "authserver.cli"]
    made = subprocess.run([*cli, "--json", "clients", "create", "--name", "rs", "--scope",
                           "revocation-feed"], env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    created = json.loads(made.stdout)
    client_id = created["client_id"]
    secret = factories.remember(created["client_secret"])
    assert secret
    server = subprocess.Popen([*cli, "serve"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(url + "/.well-known/jwks.json", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.1)

        answers: list[httpx.Response | Exception] = []

        def long_poll() -> None:  # waits feed.long_poll_timeout (3 s) for events
            try:
                auth = factories.basic_auth(client_id, secret)["authorization"]
                answers.append(httpx.post(url + "/sets/poll", json={}, timeout=15,
                                          headers={"authorization": auth}))
            except httpx.HTTPError as exc:
                answers.append(exc)

        poller = threading.Thread(target=long_poll)
        started = time.monotonic()
        poller.start()
        time.sleep(1.0)  # the poll is in flight
        server.send_signal(signal.SIGTERM)
        poller.join(timeout=20)
        code = server.wait(timeout=20)
        stderr = server.stderr.read() if server.stderr else ""
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if server.stderr:
            server.stderr.close()
    assert len(answers) == 1 and isinstance(answers[0], httpx.Response), answers
    assert answers[0].status_code == 200, answers[0].text
    assert time.monotonic() - started >= 2.5  # it ran its course, it was not cut short
    assert code == 0, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
