"""Revocation latency: from the commit of a change on the authorization server to the first
rejection of the affected token by resource-server verifiers that follow the revocation feed.

    python bench/revocation_latency.py [--workers 6] [--verifiers-per-worker 1] [--changes 100]
        [--poll-interval 1.0] [--check-interval 0.01] [--gap-min 0.05] [--gap-max 0.4]
        [--cutoff-clients 8] [--settle-timeout 15] [--server-cpu 0] [--worker-cpu 1]
        [--alg RS256] [--out DIR]

What it does (bench/README.md has the details):

1. A temporary directory with a config (SQLite, keys; `helper.py config`), clients made with
   the CLI: one for RFC 7009 revocations, `--cutoff-clients` for client changes, one holding
   the feed scope `revocation-feed`. The real server (`bench/serve.py`) on 127.0.0.1.
2. `--workers` subprocesses (this file with `--worker`), each with `--verifiers-per-worker`
   `authserver.resource.Verifier`s (own receiver name, own HTTP client, own background poll
   every `--poll-interval` s).
3. `--changes` changes, one after another with a random gap: a fresh token is fetched, every
   verifier must accept it (`await verify(token)`), then the change is made and its commit time
   taken (`time.time()` when the call returned). Changes: `POST /revoke` of that token (RFC
   7009, with its client's credentials), and client changes that set a cutoff, through the
   CLI's own entry point called in this process (`authserver.cli.main`, the code of
   `authserver clients update --scope ... / --ip-allow ... / disable`; no HTTP admin API
   exists). Every verifier calls `await verify(token)` on each watched token every
   `--check-interval` s and reports the wall-clock time of the first rejection.
4. Latency = first rejection - commit, for every (change, verifier) pair: p50/p90/p99/max and the
   pairs that never rejected within `--settle-timeout` s after the last change (must be 0).

Everything is stopped and the temporary directory removed at the end (also on failure or
Ctrl-C). Only 127.0.0.1 is contacted. Results: OUT/summary.md and OUT/pairs.jsonl
(OUT defaults to bench/out/<UTC stamp>-revocation/).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import math
import os
import queue
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Measure the authserver of the tree this file lives in (also in this process: the CLI calls),
# whatever is installed; the subprocesses get it first on PYTHONPATH.
sys.path[:0] = [str(ROOT), str(HERE)]
from helper import measured_tree  # noqa: E402

HOST = "127.0.0.1"
TARGET_P99 = 2.0  # seconds, with a 1 s poll interval
REVOKED = "The token has been revoked"
CUT_OFF = "The token was issued before its client was changed or revoked"


# -- worker: verifiers in a subprocess -----------------------------------------------------------

def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _worker(config: dict[str, Any]) -> None:
    from authserver.resource import Settings, TokenError, Verifier

    class TimedVerifier(Verifier):
        """Records when each feed poll started and how long it took (behaviour unchanged)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.polls: list[tuple[float, float]] = []

        async def poll_feed(self) -> int:
            started = time.time()
            try:
                return await super().poll_feed()
            finally:
                self.polls.append((started, time.time() - started))

    settings = Settings(
        issuer=config["issuer"], audience=config["audience"],
        feed_client_id=config["feed_client_id"],
        feed_client_secret=config["feed_client_secret"],
        poll_interval=config["poll_interval"],
    )
    verifiers = [TimedVerifier(settings) for _ in range(config["verifiers"])]
    await asyncio.gather(*(v.start() for v in verifiers))
    _emit({"ready": True, "verifiers": len(verifiers)})

    # change id -> (token, indexes of the verifiers that have not rejected it yet)
    watched: dict[int, tuple[str, set[int]]] = {}
    stop = asyncio.Event()
    interval = config["check_interval"]

    async def check() -> None:
        while not stop.is_set():
            for change, (token, pending) in list(watched.items()):
                for index in sorted(pending):
                    try:
                        await verifiers[index].verify(token)
                    except TokenError as error:
                        at = time.time()
                        pending.discard(index)
                        _emit({"rejected": change, "verifier": index, "at": at,
                               "reason": error.description})
                if not pending:
                    watched.pop(change, None)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def commands() -> None:
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            message = json.loads(line)
            if message["cmd"] == "watch":
                change, token = message["id"], message["token"]
                refused: dict[int, str] = {}
                for index, verifier in enumerate(verifiers):
                    try:
                        await verifier.verify(token)
                    except TokenError as error:
                        refused[index] = error.description
                if not refused:
                    watched[change] = (token, set(range(len(verifiers))))
                _emit({"watch": change, "refused": refused})
            elif message["cmd"] == "unwatch":
                watched.pop(message["id"], None)
            elif message["cmd"] == "quit":
                break
        stop.set()

    checker = asyncio.create_task(check())
    try:
        await commands()
    finally:
        stop.set()
        await checker
        _emit({"stats": [{"polls": len(v.polls), "poll_seconds": [d for _, d in v.polls],
                          "poll_starts": [s for s, _ in v.polls]} for v in verifiers]})
        await asyncio.gather(*(v.aclose() for v in verifiers))


def worker_main() -> None:
    config = json.loads(os.environ["BENCH_WORKER_CONFIG"])
    asyncio.run(_worker(config))


# -- driver ---------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _pinned(cpu: int | None) -> list[str]:
    if cpu is None or shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return []
    return ["taskset", "-c", str(cpu)]


def cli(config: Path, *args: str) -> dict[str, Any]:
    """`authserver --config CONFIG --json ARGS...` through the CLI's entry point, in process:
    the call returns right after the CLI's transaction committed (a subprocess would add the
    interpreter's exit to the measured time)."""
    from authserver.cli import main

    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        status = main(["--config", str(config), "--json", *args])
    if status != 0:
        raise RuntimeError(f"authserver {' '.join(args)}: exit status {status}")
    result: dict[str, Any] = json.loads(captured.getvalue())
    return result


@dataclass
class Client:
    client_id: str
    secret: str
    scopes: str = "read write"
    ip_allow: bool = False
    disabled: bool = False

    @property
    def basic(self) -> str:
        raw = f"{self.client_id}:{self.secret}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def _post(port: int, path: str, form: dict[str, str], authorization: str) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"http://{HOST}:{port}{path}", data=urllib.parse.urlencode(form).encode(),
        headers={"Authorization": authorization,
                 "Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def get_token(port: int, client: Client, patience: float = 10.0) -> str:
    """An access token for `client`; retried while the server's client cache still holds an
    older state of the client (a re-enabled client, for up to `cache.event_poll_interval`)."""
    deadline = time.monotonic() + patience
    while True:
        status, body = _post(port, "/token", {"grant_type": "client_credentials"}, client.basic)
        if status == 200:
            token: str = json.loads(body)["access_token"]
            return token
        if time.monotonic() > deadline:
            raise RuntimeError(f"POST /token for {client.client_id}: {status} {body[:200]!r}")
        time.sleep(0.2)


@dataclass
class Change:
    id: int
    kind: str  # revoke | scope | ip | disable
    client_id: str
    started: float = 0.0
    committed: float = 0.0
    rejected: dict[str, tuple[float, str]] = field(default_factory=dict)


class Fleet:
    """The verifier subprocesses and what they report."""

    def __init__(self, per_worker: int) -> None:
        self.messages: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
        self.procs: list[subprocess.Popen[str]] = []
        self.per_worker = per_worker
        self.acks: dict[int, dict[int, dict[str, str]]] = {}
        self.watching: dict[int, Change] = {}  # watch id -> change
        self.last_watch = 0
        self.stats: dict[int, list[dict[str, Any]]] = {}
        self.unexpected: list[str] = []

    def start(self, count: int, config: dict[str, Any], cpu: int | None,
              env: dict[str, str]) -> None:
        """Start `count` worker processes and wait until every verifier has started."""
        env = {**env, "BENCH_WORKER_CONFIG": json.dumps(config)}
        for index in range(count):
            proc = subprocess.Popen(
                [*_pinned(cpu), sys.executable, str(Path(__file__).resolve()), "--worker"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                start_new_session=True)
            self.procs.append(proc)
            threading.Thread(target=self._read, args=(index, proc), daemon=True).start()
        ready = 0
        deadline = time.monotonic() + 60.0
        while ready < count:
            try:
                worker, message = self.messages.get(
                    timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError("the verifier workers did not start in 60 s") from None
            if message.get("eof"):
                raise RuntimeError(f"verifier worker {worker} exited at start "
                                   f"(status {self.procs[worker].wait()})")
            if message.get("ready"):
                ready += 1
            else:
                self._dispatch(worker, message)

    @property
    def size(self) -> int:
        return len(self.procs) * self.per_worker

    def _read(self, worker: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.messages.put((worker, json.loads(line)))
        self.messages.put((worker, {"eof": True}))

    def _dispatch(self, worker: int, message: dict[str, Any]) -> None:
        if "watch" in message:
            self.acks.setdefault(message["watch"], {})[worker] = message["refused"]
        elif "rejected" in message:
            change = self.watching.get(message["rejected"])
            if change is not None:  # else: a refused watch, dropped
                name = f"w{worker}v{message['verifier']}"
                change.rejected[name] = (message["at"], message["reason"])
        elif "stats" in message:
            self.stats[worker] = message["stats"]
        else:
            self.unexpected.append(json.dumps(message))

    def pump(self, timeout: float = 0.0) -> None:
        """Handle every message that arrives within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                worker, message = self.messages.get(
                    timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return
            if message.get("eof"):
                raise RuntimeError(f"verifier worker {worker} exited early")
            self._dispatch(worker, message)

    def send(self, message: dict[str, Any]) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(message) + "\n")
            proc.stdin.flush()

    def watch(self, change: Change, token: str) -> dict[str, str]:
        """Every verifier checks the token now and, if all accept it, keeps checking it for
        `change`; returns the refusals (empty: all accepted, the token is watched)."""
        self.last_watch += 1
        watch = self.last_watch
        self.watching[watch] = change
        self.send({"cmd": "watch", "id": watch, "token": token})
        deadline = time.monotonic() + 10.0
        while len(self.acks.get(watch, {})) < len(self.procs):
            if time.monotonic() > deadline:
                raise RuntimeError(f"change {change.id}: verifiers did not answer the watch")
            self.pump(0.05)
        refused = {f"w{w}v{v}": reason for w, refusals in self.acks.pop(watch).items()
                   for v, reason in refusals.items()}
        if refused:
            self.send({"cmd": "unwatch", "id": watch})
            del self.watching[watch]
        return refused

    def finish(self) -> None:
        """Ask the workers to stop and collect their statistics."""
        with contextlib.suppress(BrokenPipeError, OSError):
            self.send({"cmd": "quit"})
        deadline = time.monotonic() + 15.0
        done = 0
        while done < len(self.procs) and time.monotonic() < deadline:
            try:
                worker, message = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if message.get("eof"):
                done += 1
            else:
                self._dispatch(worker, message)

    def kill(self) -> None:
        for proc in self.procs:
            _stop(proc)


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process `pid` so far; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class OthersMeter:
    """CPU that processes other than ours (driver, server, verifier workers) used on the
    machine between `start()` and `stop()`, in cores: a busy machine shifts the numbers."""

    def __init__(self, pids: list[int]) -> None:
        import quiet  # bench/quiet.py

        self._busy = quiet.busy_seconds
        self.pids = pids
        self.load = 0.0

    def _ours(self) -> float:
        return time.process_time() + sum(_process_cpu(pid) for pid in self.pids)

    def start(self) -> None:
        self._start = (self._busy(None), self._ours(), time.monotonic())

    def stop(self) -> None:
        busy, ours, started = self._start
        wall = time.monotonic() - started
        others = (self._busy(None) - busy) - (self._ours() - ours)
        self.load = max(0.0, others / wall) if wall > 0 else 0.0


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(5)


def _schedule(count: int) -> list[str]:
    """Half RFC 7009 revocations, half client changes that set a cutoff (scope narrowed or
    widened, IP allowlist set or cleared, client disabled), interleaved."""
    pattern = ("revoke", "scope", "revoke", "ip", "revoke", "disable", "revoke", "scope",
               "revoke", "ip")
    return [pattern[i % len(pattern)] for i in range(count)]


def apply_change(config: Path, port: int, change: Change, client: Client, token: str) -> None:
    """Make the change; `started` and `committed` are the wall-clock times around the call."""
    change.started = time.time()
    if change.kind == "revoke":
        status, body = _post(port, "/revoke", {"token": token, "token_type_hint": "access_token"},
                             client.basic)
        change.committed = time.time()
        if status != 200:
            raise RuntimeError(f"POST /revoke: {status} {body[:200]!r}")
        return
    if change.kind == "scope":
        client.scopes = "read" if client.scopes == "read write" else "read write"
        cli(config, "clients", "update", client.client_id, "--scope", client.scopes)
    elif change.kind == "ip":
        client.ip_allow = not client.ip_allow
        cli(config, "clients", "update", client.client_id,
            *(("--ip-allow", "127.0.0.0/8") if client.ip_allow else ("--clear-ip-allow",)))
    elif change.kind == "disable":
        cli(config, "clients", "disable", client.client_id)
        client.disabled = True
    else:
        raise ValueError(change.kind)
    change.committed = time.time()


def percentile(values: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p % of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summarize(args: argparse.Namespace, changes: list[Change], fleet: Fleet,
              machine: str, wall: float, others: float) -> tuple[str, bool]:
    names = [f"w{w}v{v}" for w in range(len(fleet.procs)) for v in range(fleet.per_worker)]
    latencies: list[float] = []
    by_kind: dict[str, list[float]] = {}
    missing: list[str] = []
    wrong_reason: list[str] = []
    early: list[str] = []
    for change in changes:
        expected = REVOKED if change.kind == "revoke" else CUT_OFF
        for name in names:
            if name not in change.rejected:
                missing.append(f"change {change.id} ({change.kind}) at {name}")
                continue
            at, reason = change.rejected[name]
            delay = at - change.committed
            latencies.append(delay)
            by_kind.setdefault("RFC 7009 revocation" if change.kind == "revoke"
                               else "client change (cutoff)", []).append(delay)
            if reason != expected:
                wrong_reason.append(f"change {change.id} ({change.kind}) at {name}: {reason}")
            if at < change.started:
                early.append(f"change {change.id} at {name}")
    calls: dict[str, list[float]] = {}
    for change in changes:
        calls.setdefault("POST /revoke" if change.kind == "revoke"
                         else "CLI (in process)", []).append(change.committed - change.started)
    polls = [d for stats in fleet.stats.values() for s in stats for d in s["poll_seconds"]]
    periods = [b - a for stats in fleet.stats.values() for s in stats
               for a, b in zip(s["poll_starts"], s["poll_starts"][1:], strict=False)]

    def row(label: str, values: list[float]) -> str:
        return (f"| {label} | {len(values)} | {statistics.median(values):.3f} | "
                f"{percentile(values, 90):.3f} | {percentile(values, 99):.3f} | "
                f"{max(values):.3f} | {min(values):.3f} |")

    p99 = percentile(latencies, 99) if latencies else math.inf
    kinds = ", ".join(f"{kind}: {sum(c.kind == kind for c in changes)}"
                      for kind in ("revoke", "scope", "ip", "disable"))
    met = bool(latencies) and not missing and p99 <= TARGET_P99
    lines = [
        f"# Revocation latency, {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}", "",
        machine,
        f"- command: `{' '.join(sys.argv)}`" if sys.argv[0] else "",
        f"- {len(fleet.procs)} verifier processes x {fleet.per_worker} verifier(s) = "
        f"{fleet.size} verifiers, `poll_interval={args.poll_interval}`, verify() every "
        f"{args.check_interval * 1000:g} ms per watched token; server `{args.alg}`, SQLite, "
        f"server on core {args.server_cpu}, verifiers on core {args.worker_cpu}",
        f"- {len(changes)} changes ({kinds}), gap {args.gap_min}-{args.gap_max} s; "
        f"wall time {wall:.0f} s",
        f"- other work on the machine while the changes ran (not ours: not the driver, server "
        f"or verifiers): {others:.2f} cores", "",
        "Latency = the verifier's first rejecting `verify()` minus the commit time (when the "
        "call that made the change returned), in seconds; percentiles by nearest rank.", "",
        "| (change, verifier) pairs | n | p50 s | p90 s | p99 s | max s | min s |",
        "|---|---:|---:|---:|---:|---:|---:|",
        row("all", latencies) if latencies else "| all | 0 | - | - | - | - | - |",
        *(row(kind, values) for kind, values in sorted(by_kind.items())), "",
        f"Never rejected (within {args.settle_timeout:g} s after the last change): "
        f"**{len(missing)}** of {len(changes) * len(names)} pairs. "
        f"Rejected for another reason than expected: {len(wrong_reason)}. "
        f"Rejected before the change call started: {len(early)}.", "",
        f"Target p99 <= {TARGET_P99:g} s with a 1 s poll interval, none missed: "
        f"**{'met' if met else 'MISSED'}** (p99 {p99:.3f} s).", "",
        "| change call (start to return) | n | median ms | max ms |", "|---|---:|---:|---:|",
        *(f"| {label} | {len(v)} | {statistics.median(v) * 1000:.1f} | {max(v) * 1000:.1f} |"
          for label, v in sorted(calls.items())), "",
    ]
    if polls:
        lines += [
            f"Feed polls by the verifiers: {len(polls)}; duration median "
            f"{statistics.median(polls) * 1000:.1f} ms, p99 {percentile(polls, 99) * 1000:.1f} "
            f"ms, max {max(polls) * 1000:.1f} ms" + (
                f"; start-to-start period median {statistics.median(periods):.3f} s, max "
                f"{max(periods):.3f} s." if periods else "."), ""]
    for title, items in (("Never rejected", missing), ("Unexpected reason", wrong_reason),
                         ("Early", early), ("Unexpected worker output", fleet.unexpected)):
        if items:
            lines += [f"{title}:", *(f"- {item}" for item in items[:20]), ""]
    return "\n".join(lines), met and not wrong_reason and not early


def _machine() -> str:
    return measured_tree(ROOT)


def run(args: argparse.Namespace) -> int:
    import helper  # bench/helper.py: the config run.sh uses

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = Path(args.out) if args.out else HERE / "out" / f"{stamp}-revocation"
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="authserver-revbench."))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    server: subprocess.Popen[bytes] | None = None
    fleet: Fleet | None = None
    began = time.monotonic()
    try:
        port = _free_port()
        helper.cmd_config(str(tmp), str(port), args.alg)
        config = tmp / "authserver.toml"
        with config.open("a", encoding="utf-8") as file:
            file.write(f"\n[cache]\nevent_poll_interval = {args.event_poll_interval}\n")

        def create(name: str, scope: str) -> Client:
            data = cli(config, "clients", "create", "--name", name, "--scope", scope)
            return Client(data["client_id"], data["client_secret"], scope)

        revoker = create("rev-bench", "read write")
        cut = [create(f"cut-bench-{i}", "read write") for i in range(args.cutoff_clients)]
        feed = create("feed-bench", "revocation-feed")
        log_file = (tmp / "server.log").open("wb")
        server = subprocess.Popen(
            [*_pinned(args.server_cpu), sys.executable, str(HERE / "serve.py"),
             "--config", str(config), "--port", str(port)],
            stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        helper.cmd_wait(str(port), "30")
        issuer = f"http://{HOST}:{port}"
        print(f"== server on {issuer} (pid {server.pid}), data in {tmp}", file=sys.stderr)
        fleet = Fleet(args.verifiers_per_worker)
        fleet.start(args.workers, {
            "issuer": issuer, "audience": issuer, "feed_client_id": feed.client_id,
            "feed_client_secret": feed.secret, "poll_interval": args.poll_interval,
            "check_interval": args.check_interval, "verifiers": args.verifiers_per_worker,
        }, args.worker_cpu, env)
        print(f"== {fleet.size} verifiers ready in {args.workers} processes", file=sys.stderr)

        rng = secrets.SystemRandom()
        meter = OthersMeter([server.pid, *(proc.pid for proc in fleet.procs)])
        meter.start()
        changes: list[Change] = []
        turn = 0
        for number, kind in enumerate(_schedule(args.changes)):
            if kind == "revoke":
                client = revoker
            else:
                client = cut[turn % len(cut)]
                turn += 1
                if client.disabled:  # disabled by its previous change: back on, no cutoff
                    cli(config, "clients", "enable", client.client_id)
                    client.disabled = False
            change = Change(number, kind, client.client_id)
            for attempt in range(10):
                token = get_token(port, client)
                refused = fleet.watch(change, token)
                if not refused:
                    break
                # A token issued before the server's client cache saw this client's previous
                # cutoff is dead on arrival; take a new one once the cache caught up.
                if attempt == 9:
                    raise RuntimeError(f"change {number}: verifiers keep refusing the fresh "
                                       f"token: {refused}")
                time.sleep(0.5)
            apply_change(config, port, change, client, token)
            changes.append(change)
            fleet.pump(rng.uniform(args.gap_min, args.gap_max))
            if (number + 1) % 20 == 0:
                print(f"== {number + 1}/{args.changes} changes", file=sys.stderr)

        deadline = time.monotonic() + args.settle_timeout
        while time.monotonic() < deadline and any(
                len(c.rejected) < fleet.size for c in changes):
            fleet.pump(0.1)
        meter.stop()
        fleet.finish()
        summary, ok = summarize(args, changes, fleet, _machine(), time.monotonic() - began,
                                meter.load)
        (out / "summary.md").write_text(summary + "\n", encoding="utf-8")
        with (out / "pairs.jsonl").open("w", encoding="utf-8") as file:
            for change in changes:
                for name, (at, reason) in sorted(change.rejected.items()):
                    file.write(json.dumps({
                        "change": change.id, "kind": change.kind, "verifier": name,
                        "started": change.started, "committed": change.committed,
                        "rejected": at, "latency": at - change.committed,
                        "reason": reason}) + "\n")
        print(summary)
        print(f"== results in {out}", file=sys.stderr)
        return 0 if ok else 1
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt) or (
            isinstance(exc, SystemExit) and exc.code == 143)
        if not interrupted and (tmp / "server.log").exists():
            tail = (tmp / "server.log").read_text(errors="replace").splitlines()[-30:]
            print("== server log (tail):\n" + "\n".join(tail), file=sys.stderr)
        raise
    finally:
        if fleet is not None:
            fleet.kill()
        if server is not None:
            _stop(server)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=6, help="verifier processes (6)")
    parser.add_argument("--verifiers-per-worker", type=int, default=1,
                        help="Verifier instances per process (1)")
    parser.add_argument("--changes", type=int, default=100, help="changes made (100)")
    parser.add_argument("--poll-interval", type=float, default=1.0,
                        help="Settings.poll_interval of every verifier, seconds (1.0)")
    parser.add_argument("--check-interval", type=float, default=0.01,
                        help="seconds between verify() calls on a watched token (0.01)")
    parser.add_argument("--gap-min", type=float, default=0.05,
                        help="shortest pause after a change, seconds (0.05)")
    parser.add_argument("--gap-max", type=float, default=0.4,
                        help="longest pause after a change, seconds (0.4)")
    parser.add_argument("--cutoff-clients", type=int, default=8,
                        help="clients taking turns for the client changes (8)")
    parser.add_argument("--settle-timeout", type=float, default=15.0,
                        help="seconds to wait after the last change for rejections (15)")
    parser.add_argument("--event-poll-interval", type=float, default=1.0,
                        help="the server's cache.event_poll_interval, seconds (1.0, default)")
    parser.add_argument("--server-cpu", type=int, default=0, help="core of the server (0)")
    parser.add_argument("--worker-cpu", type=int, default=1,
                        help="core of the verifier processes (1)")
    parser.add_argument("--alg", default="RS256", help="the server's signing.algorithm (RS256)")
    parser.add_argument("--out", help="results directory (bench/out/<stamp>-revocation)")
    args = parser.parse_args()
    if args.worker:
        worker_main()
        return 0
    # Ctrl-C or SIGTERM: unwind through run()'s cleanup.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
