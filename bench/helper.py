"""Helpers for bench/run.sh (stdlib plus the authserver virtualenv; talks only to 127.0.0.1).

    helper.py freeport                    print a free TCP port on 127.0.0.1
    helper.py config DIR PORT ALG [CIDR]  write DIR/authserver.toml (SQLite and keys in DIR);
                                          CIDR: `[server] trusted_proxies = [CIDR]`
    helper.py basic CLIENT_JSON           print base64(client_id:client_secret) for Basic auth
    helper.py register PORT               register a client through RFC 7591 (POST /register,
                                          open registration) and print the client information
                                          (JSON, with client_id and client_secret)
    helper.py wait PORT [SECONDS]         wait until the server answers the JWKS
    helper.py check PORT BASIC ALG        get one token and verify it against the JWKS
    helper.py field JSON NAME             print one field of a JSON object (CLI output)
    helper.py token PORT BASIC            print an access token (POST /token, client_credentials)
    helper.py check-forward PORT HEADERS EXPECT_HEADER
                                          one forward-auth check with HEADERS (lines "Name:
                                          value") must be 200 with EXPECT_HEADER ("name:
                                          substring") and RateLimit-* headers; the same check
                                          for DELETE must be 403 insufficient_permissions
    helper.py tokens PORT FILE            every Basic credential of FILE (one a line) gets a
                                          token (POST /token, client_credentials)
    helper.py cache PORT                  print "HITS MISSES" of the client cache (GET /metrics,
                                          allowed from loopback by default)
    helper.py metered PID OUT -- CMD...   run CMD (wrk) with its output to OUT; print its BENCH
                                          line with the CPU others used meanwhile added
    helper.py quiet MAX_LOAD [SECONDS] [TIMEOUT]
                                          wait until the machine (the server idle) has had at
                                          most MAX_LOAD cores busy for SECONDS (3) in a row;
                                          print the seconds waited beyond that (TIMEOUT 900:
                                          then go on anyway)
    helper.py summarize OUT_DIR           medians of the BENCH lines in OUT_DIR/*.jsonl
    helper.py compare OUT_DIR A B         scenario B against scenario A, run by run (markdown)
    helper.py median FILE.jsonl           median req/s of one scenario (0 when absent)
    helper.py machine                     nproc, CPU, Python and package versions (markdown)
    helper.py profile RAW_FILE            categorise a `py-spy record -f raw` profile
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

HOST = "127.0.0.1"

# scenario -> (label, minimum req/s, maximum p99 in ms or None)
TARGETS: dict[str, tuple[str, float | None, float | None]] = {
    "token-RS256": ("POST /token, RS256", 2400, 15.0),
    "token-RS256-dcr": ("POST /token, RS256, client registered through DCR", 2400, 15.0),
    "token-ES256": ("POST /token, ES256", 6000, 8.0),
    "jwks": ("GET /.well-known/jwks.json", 22000, None),
    "forward-auth-key": ("GET /forward-auth, API key (x-api-key, cached)", 8000, None),
    "forward-auth-jwt-RS256": ("GET /forward-auth, bearer JWT, RS256", None, None),
    "forward-auth-jwt-ES256": ("GET /forward-auth, bearer JWT, ES256", None, None),
    "baseline-static": ("reference: bare Starlette, static bytes", None, None),
}


def cmd_freeport() -> None:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        print(sock.getsockname()[1])


def cmd_config(directory: str, port: str, alg: str, trusted_proxy: str = "") -> None:
    root = Path(directory)
    (root / "data").mkdir(parents=True, exist_ok=True)
    # Forward-auth answers trusted proxies only; the token servers keep no trusted proxy, so
    # their numbers stay comparable with the earlier ones (client_address's proxy branch).
    server = f'\n[server]\ntrusted_proxies = ["{trusted_proxy}"]\n' if trusted_proxy else ""
    # BENCH_DATABASE_URL (bench/run.sh DATABASE=postgres): a PostgreSQL database of this server
    database = os.environ.get("BENCH_DATABASE_URL", "")
    (root / "authserver.toml").write_text(
        f'issuer = "http://{HOST}:{int(port)}"\n'
        + (f'database_url = "{database}"\n' if database else "") +
        f'data_dir = "{root / "data"}"\n'
        f'keys_dir = "{root / "keys"}"\n'
        "\n[logging]\n"
        'level = "WARNING"\n'
        "\n[signing]\n"
        f'algorithm = "{alg}"\n'
        # Open registration (the default policy) may grant the CLI client's scopes, so the DCR
        # client of `helper.py register` is its twin; one registration per server, far below
        # the limit. Scopes need no catalog entry (only api_key_only ones are refused).
        "\n[registration]\n"
        'open_scopes = ["read", "write"]\n'
        'rate_limit = "1000/minute"\n'
        # The limits are checked on every request, as in production, but set far above what
        # one client from one address reaches here (the defaults would refuse the load).
        "\n[rate_limits]\n"
        'client_hourly = "1000000000/hour"\n'
        'client_burst = "100000000/minute"\n'
        'organization_hourly = "1000000000/hour"\n'
        'address = "100000000/minute"\n'
        'api_key_hourly = "1000000000/hour"\n'
        'api_key_burst = "100000000/minute"\n' + server,
        encoding="utf-8",
    )


def cmd_basic(client_json: str) -> None:
    data = json.loads(client_json)
    # RFC 6749 §2.3.1 form-encodes both parts first; ids and secrets here are URL-safe already.
    raw = f"{data['client_id']}:{data['client_secret']}".encode()
    print(base64.b64encode(raw).decode())


# The twin of `authserver clients create --name bench --scope "read write"` (run.sh).
DCR_METADATA = {"client_name": "bench-dcr", "grant_types": ["client_credentials"],
                "token_endpoint_auth_method": "client_secret_basic", "scope": "read write"}


def cmd_register(port: str) -> None:
    req = urllib.request.Request(
        f"http://{HOST}:{int(port)}/register", data=json.dumps(DCR_METADATA).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, body = resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        sys.exit(f"POST /register answered {exc.code}: {exc.read().decode(errors='replace')}")
    expected = {"grant_types": ["client_credentials"], "scope": "read write",
                "token_endpoint_auth_method": "client_secret_basic"}
    wrong = {k: body.get(k) for k, v in expected.items() if body.get(k) != v}
    if status != 201 or wrong or not body.get("client_id") or not body.get("client_secret"):
        sys.exit(f"POST /register: status {status}, unexpected {wrong or 'credentials'} "
                 "(is [registration] open_scopes set in the config?)")
    print(json.dumps(body))


def _get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=timeout) as resp:
        return resp.status, resp.read()


def cmd_wait(port: str, seconds: str = "30") -> None:
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        try:
            status, _ = _get(int(port), "/.well-known/jwks.json", 1.0)
            if status == 200:
                return
        except (TimeoutError, urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)
    sys.exit(f"server on port {port} did not become ready in {seconds} s")


def cmd_check(port: str, basic: str, alg: str) -> None:
    from joserfc import jwt
    from joserfc.jwk import KeySet

    req = urllib.request.Request(
        f"http://{HOST}:{int(port)}/token", data=b"grant_type=client_credentials",
        headers={"Authorization": f"Basic {basic}",
                 "Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        body = json.loads(resp.read())
    _, jwks = _get(int(port), "/.well-known/jwks.json")
    token = jwt.decode(body["access_token"], KeySet.import_key_set(json.loads(jwks)),
                       algorithms=[alg])
    if token.header.get("alg") != alg or token.header.get("typ") != "at+jwt":
        sys.exit(f"unexpected token header {token.header}")
    print(f"ok: {alg} token verified against the JWKS, scope={body.get('scope')!r}, "
          f"{len(body['access_token'])} bytes")


def cmd_field(data: str, name: str) -> None:
    print(json.loads(data)[name])


def cmd_token(port: str, basic: str) -> None:
    req = urllib.request.Request(
        f"http://{HOST}:{int(port)}/token", data=b"grant_type=client_credentials",
        headers={"Authorization": f"Basic {basic}",
                 "Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        print(json.loads(resp.read())["access_token"])


def _forward(port: int, headers: dict[str, str], method: str) -> tuple[int, dict[str, str],
                                                                         bytes]:
    sent = {**headers, "X-Forwarded-Method": method}
    req = urllib.request.Request(f"http://{HOST}:{port}/forward-auth", headers=sent)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def cmd_check_forward(port: str, header_lines: str, expect_header: str) -> None:
    """The forward-auth scenario's request is allowed for the right reason: 200 with the
    identity header, RateLimit-* (the limits are checked), and the same credential is refused
    a method its permission or scope does not cover."""
    headers = dict((name.strip(), value.strip()) for name, _, value in
                   (line.partition(":") for line in header_lines.splitlines() if line.strip()))
    method = headers.pop("X-Forwarded-Method", "GET")
    status, got, body = _forward(int(port), headers, method)
    name, _, wanted = expect_header.partition(":")
    name, wanted = name.strip().lower(), wanted.strip()
    if status != 200 or wanted not in got.get(name, ""):
        sys.exit(f"forward-auth: {status}, {name}={got.get(name)!r} (wanted {wanted!r}): "
                 f"{body[:300]!r}")
    if not got.get("ratelimit-limit") or not got.get("ratelimit-remaining"):
        sys.exit("forward-auth: no RateLimit-* headers (are the rate limits checked?)")
    status, _, body = _forward(int(port), headers, "DELETE")
    if status != 403 or b"insufficient_permissions" not in body:
        sys.exit(f"forward-auth: DELETE answered {status}, not 403: {body[:300]!r}")
    print(f"ok: forward-auth GET {headers.get('X-Forwarded-Uri')} allowed ({name}: "
          f"{got[name]!r}, ratelimit-limit {got['ratelimit-limit']}, remaining "
          f"{got['ratelimit-remaining']}); DELETE refused 403 insufficient_permissions")


def cmd_tokens(port: str, path: str) -> None:
    lines = Path(path).read_text(encoding="ascii").split()
    for basic in lines:
        req = urllib.request.Request(
            f"http://{HOST}:{int(port)}/token", data=b"grant_type=client_credentials",
            headers={"Authorization": f"Basic {basic}",
                     "Content-Type": "application/x-www-form-urlencoded"},
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                if "access_token" not in json.loads(resp.read()):
                    sys.exit(f"POST /token: no access_token for line {lines.index(basic) + 1}")
        except urllib.error.HTTPError as exc:
            sys.exit(f"POST /token answered {exc.code} for line {lines.index(basic) + 1} of "
                     f"{path}: {exc.read()[:200]!r}")
    print(f"ok: all {len(lines)} sampled clients got a token")


def cmd_cache(port: str) -> None:
    _, body = _get(int(port), "/metrics", 5.0)
    counts = {"hits": "?", "misses": "?"}
    for line in body.decode().splitlines():
        for kind in counts:
            if line.startswith(f'authserver_cache_{kind}_total{{cache="clients"}}'):
                counts[kind] = str(int(float(line.split()[-1])))
    print(counts["hits"], counts["misses"])


def _process_cpu(pid: int) -> float:
    """CPU seconds of process `pid` and its descendants (uvicorn's workers under `WORKERS`),
    all their threads (utime + stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for child in children.read_text().split() if children.exists() else ():
        with contextlib.suppress(FileNotFoundError):  # gone meanwhile
            total += _process_cpu(int(child))
    return total


def cmd_metered(server_pid: str, out_file: str, *command: str) -> None:
    """Run the load generator and print its BENCH line with `others`: the cores' worth of CPU
    that anything but the server, the load generator and this process took meanwhile (other
    processes such as a test suite, interrupts, the hypervisor's steal time). On a quiet
    machine that is the kernel's share of the loopback traffic not charged to either process
    (softirq), a few hundredths of a core (bench/README.md)."""
    import resource

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import quiet

    if command[:1] == ("--",):
        command = command[1:]
    pid = int(server_pid)
    busy, server, own = quiet.busy_seconds(), _process_cpu(pid), time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.PIPE, check=False)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    server = _process_cpu(pid) - server
    others = quiet.busy_seconds() - busy - server - load - (time.process_time() - own)
    Path(out_file).write_bytes(result.stdout)
    if result.returncode != 0:
        sys.exit(f"{command[0]} exited {result.returncode} (see {out_file})")
    line = next((text[6:] for text in result.stdout.decode().splitlines()
                 if text.startswith("BENCH ")), None)
    if line is None:
        sys.exit(f"no BENCH line in {out_file}")
    data = json.loads(line)
    data.update(others=round(max(0.0, others) / wall, 3), server_cores=round(server / wall, 3),
                load_cores=round(load / wall, 3))
    print(json.dumps(data))


def cmd_quiet(max_load: str, seconds: str = "3", timeout: str = "900") -> None:
    """A test suite has pauses (between files, in sleeps): one quiet instant is not enough."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import quiet

    started = time.monotonic()
    quiet_since = started
    while time.monotonic() - started < float(timeout):
        with quiet.Meter() as meter:
            time.sleep(0.5)
        if meter.load > float(max_load):
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= float(seconds):
            break
    print(f"{max(0.0, quiet_since - started):.0f}")


def _runs(path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def cmd_summarize(out_dir: str) -> None:
    rows = []
    failed = False
    order = list(TARGETS)  # the table's order; unknown scenarios after, by name
    for path in sorted(Path(out_dir).glob("*.jsonl"), key=lambda p: (
            order.index(p.stem) if p.stem in order else len(order), p.stem)):
        scenario = path.stem
        runs = _runs(path)
        if not runs:
            continue
        label, min_rps, max_p99 = TARGETS.get(scenario, (scenario, None, None))
        rps = statistics.median(r["rps"] for r in runs)
        p50 = statistics.median(r["lat_p50_us"] for r in runs) / 1000
        p99 = statistics.median(r["lat_p99_us"] for r in runs) / 1000
        bad = sum(r["non200"] + r["badbody"] + r["socket_errors"] + r["timeouts"] for r in runs)
        total = sum(r["requests"] for r in runs)
        verdicts = []
        if min_rps is not None:
            verdicts.append("met" if rps >= min_rps else "MISSED")
        if max_p99 is not None:
            verdicts.append("met" if p99 <= max_p99 else "MISSED")
        if bad:
            verdicts.append(f"{bad} FAILED RESPONSES")
        failed = failed or "MISSED" in verdicts or bad > 0
        target = " / ".join(t for t in (
            f">= {min_rps:,.0f} req/s" if min_rps is not None else "",
            f"p99 <= {max_p99:g} ms" if max_p99 is not None else "") if t) or "-"
        spread = f"{min(r['rps'] for r in runs):,.0f}-{max(r['rps'] for r in runs):,.0f}"
        others = [r["others"] for r in runs if "others" in r]
        quiet_note = (f"{max(others):.2f} / {sum(int(r.get('redone', 0)) for r in runs)}"
                      if others else "-")
        rows.append(f"| {label} | {rps:,.0f} | {spread} | {p50:.2f} | {p99:.2f} | "
                    f"{len(runs)} | {total:,} / {bad} | {target} | {', '.join(verdicts) or '-'} "
                    f"| {quiet_note} |")
    print("| scenario | req/s (median) | req/s (min-max) | p50 ms | p99 ms | runs | "
          "requests / non-200 or errors | target | verdict | others' CPU, cores (max of "
          "kept runs) / runs made again |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|---:|")
    print("\n".join(rows))
    if failed:
        print("\nAt least one target was missed or a response failed (see verdict).")


def cmd_compare(out_dir: str, first: str, second: str) -> None:
    """Two scenarios measured interleaved on one server: run-by-run req/s and the ratios, and
    the medians side by side, so a difference can be held against the run-to-run spread."""
    a, b = (_runs(Path(out_dir) / f"{name}.jsonl") for name in (first, second))
    if not a or len(a) != len(b):
        sys.exit(f"compare: {first} and {second} need the same number of runs")
    label_a, label_b = (TARGETS.get(n, (n, None, None))[0] for n in (first, second))
    print(f"Interleaved on one server: run i of `{first}` and run i of `{second}` back to back "
          "(the order alternating), after one warm-up each.\n")
    print(f"| run | {first} req/s | {second} req/s | {second} / {first} |\n|---:|---:|---:|---:|")
    ratios = []
    for i, (ra, rb) in enumerate(zip(a, b, strict=True), 1):
        ratios.append(rb["rps"] / ra["rps"])
        print(f"| {i} | {ra['rps']:,.0f} | {rb['rps']:,.0f} | {ratios[-1]:.3f} |")
    print(f"\n| medians | {label_a} | {label_b} | difference |\n|---|---:|---:|---:|")
    for key, name, scale, fmt in (("rps", "req/s", 1, "{:,.0f}"),
                                  ("lat_p50_us", "p50 ms", 1000, "{:.2f}"),
                                  ("lat_p99_us", "p99 ms", 1000, "{:.2f}")):
        ma = statistics.median(r[key] for r in a) / scale
        mb = statistics.median(r[key] for r in b) / scale
        print(f"| {name} | {fmt.format(ma)} | {fmt.format(mb)} | {100 * (mb / ma - 1):+.1f} % |")
    spread = max((max(r["rps"] for r in runs) / min(r["rps"] for r in runs) - 1) * 100
                 for runs in (a, b))
    print(f"\nPer-run ratio {second}/{first}: median {statistics.median(ratios):.3f}, "
          f"range {min(ratios):.3f}-{max(ratios):.3f}; largest run-to-run req/s spread within "
          f"one scenario: {spread:.1f} %.")


def cmd_median(path: str) -> None:
    file = Path(path)
    runs = _runs(file) if file.exists() else []
    print(f"{statistics.median(r['rps'] for r in runs):.1f}" if runs else "0")


def measured_tree(root: Path) -> str:
    """Markdown lines: this machine (`machine`) and the revision of `root`'s authserver/
    measured, flagging uncommitted changes (BENCH_REVISION names an exported tree)."""
    machine = subprocess.run([sys.executable, str(Path(__file__).resolve()), "machine"],
                             capture_output=True, text=True, check=False).stdout.strip()
    revision = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=False).stdout.strip()
    dirty = bool(revision) and subprocess.run(
        ["git", "-C", str(root), "diff", "--quiet", "HEAD", "--", "authserver"],
        check=False).returncode != 0
    revision = revision or os.environ.get("BENCH_REVISION", "unknown (set BENCH_REVISION)")
    return (f"{machine}\n- authserver from: {root}, git {revision}"
            f"{' + uncommitted changes in authserver/' if dirty else ''}")


def cmd_machine() -> None:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    packages = []
    for name in ("authserver", "starlette", "uvicorn", "uvloop", "httptools", "joserfc",
                 "cryptography", "orjson", "sqlalchemy", "pydantic"):
        try:
            packages.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            packages.append(f"{name} (not installed)")
    print(f"- nproc: {os.cpu_count()}; CPU: {cpu}")
    print(f"- kernel: {platform.release()}")
    print(f"- Python: {platform.python_implementation()} {platform.python_version()}")
    print(f"- packages: {', '.join(packages)}")


# -- profile ------------------------------------------------------------------------------------

# Stack frames are walked from the leaf up; the first rule that matches names the category.
# Frames of modules listed in PASS_THROUGH are charged to their caller.
PASS_THROUGH = ("base64.py", "<frozen abc>", "<string>", "_collections_abc", "typing.py",
                "enum.py", "copy.py", "functools.py", "dataclasses.py", "contextlib.py",
                "re/__init__.py", "urllib/parse.py", "hmac.py", "hashlib.py")
CATEGORIES: tuple[tuple[str, Callable[[str, str], bool]], ...] = (
    # (category, predicate on (function, file))
    ("signing: RSA/ECDSA in OpenSSL (cryptography)",
     lambda fn, f: ("jws_algs.py" in f and fn.endswith(".sign")) or "cryptography/" in f),
    ("os.urandom (jti, request id)", lambda fn, f: f.endswith(("random.py", "secrets.py"))),
    ("JSON (stdlib json, in joserfc)", lambda fn, f: "json/" in f),
    ("joserfc: JWT/JWS assembly (headers, base64url, registry checks)",
     lambda fn, f: "joserfc/" in f),
    ("form parsing and body read (authserver.web.forms)", lambda fn, f: "web/forms.py" in f),
    ("authserver: request id middleware", lambda fn, f: "web/middleware.py" in f),
    ("authserver: other (endpoint, token service, client auth, keyring, tokens)",
     lambda fn, f: "authserver/" in f),
    ("Starlette (middleware stack, routing, Request/Response)",
     lambda fn, f: "starlette/" in f),
    ("uvicorn (httptools protocol, transport writes)", lambda fn, f: "uvicorn/" in f),
    ("uvloop native (epoll, socket syscalls, httptools parser)",
     lambda fn, f: fn == "Runner.run" and f.endswith("asyncio/runners.py")),
    ("anyio", lambda fn, f: "anyio/" in f),
)
IDLE_LEAVES = ("Condition.wait", "Thread.join", "Event.wait", "Queue.get", "select", "poll")
# (function, file substring) whose inclusive share is reported
INCLUSIVE = (
    ("HttpToolsProtocol.data_received", "uvicorn/"), ("RequestResponseCycle.send", "uvicorn/"),
    ("RequestIdMiddleware.__call__", "authserver/"), ("Router.__call__", "starlette/"),
    ("OAuthEndpoints.token", "authserver/"), ("read_body", "authserver/"),
    ("parse_form", "authserver/"), ("TokenService.issue", "authserver/"),
    ("extract_credentials", "authserver/"), ("ClientAuthenticator.authenticate", "authserver/"),
    ("mint_access_token", "authserver/"), ("SigningKey.sign", "authserver/"),
    ("encode", "joserfc/jwt.py"), ("WellKnown.jwks", "authserver/"),
    ("Response.__init__", "starlette/"),
)


def _frame(text: str) -> tuple[str, str]:
    name, _, where = text.strip().rpartition(" (")
    return name, where.rstrip(")").rpartition(":")[0]


def cmd_profile(raw_file: str) -> None:
    samples: list[tuple[list[tuple[str, str]], int]] = []
    idle = 0
    for line in Path(raw_file).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [_frame(f) for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        if frames[-1][0].startswith(IDLE_LEAVES) or frames[0][0] == "Thread._bootstrap":
            idle += int(count)  # worker threads parked, or the event-poll thread
            continue
        samples.append((frames, int(count)))
    total = sum(n for _, n in samples)
    if not total:
        sys.exit("no samples")
    by_category: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for frames, n in samples:
        leaf = frames[-1]
        self_time[f"{leaf[0]} ({leaf[1].split('site-packages/')[-1]})"] += n
        for name, where in INCLUSIVE:
            if any(fn == name and where in f for fn, f in frames):
                inclusive[f"{name} ({where.rstrip('/')})"] += n
        category = None
        for fn, f in reversed(frames):
            if f.endswith(PASS_THROUGH):
                continue
            category = next((c for c, test in CATEGORIES if test(fn, f)), None)
            if category is None:
                category = f"other: {f.split('site-packages/')[-1]}"
            break
        by_category[category or "other"] += n
    print(f"{total} samples of the event-loop thread ({idle} samples of other/idle threads "
          "left out). py-spy stops the process to sample and, on this kind of VM, over-weights "
          "frames that just made a system call (os.urandom, transport.write, the bare event "
          "loop); the in-process budget and perf are the better guide to those.\n")
    print("| where the time goes (by innermost frame) | share |\n|---|---:|")
    for category, n in by_category.most_common():
        print(f"| {category} | {100 * n / total:.1f}% |")
    print("\n| inclusive (function and everything it calls) | share |\n|---|---:|")
    for name, n in inclusive.most_common():
        print(f"| `{name}` | {100 * n / total:.1f}% |")
    print("\n| top self time (innermost frame) | share |\n|---|---:|")
    for name, n in self_time.most_common(15):
        print(f"| `{name}` | {100 * n / total:.1f}% |")


def main() -> None:
    commands: dict[str, Callable[..., None]] = {
        "freeport": cmd_freeport, "median": cmd_median, "machine": cmd_machine,
        "config": cmd_config, "basic": cmd_basic, "wait": cmd_wait, "check": cmd_check,
        "summarize": cmd_summarize, "profile": cmd_profile, "register": cmd_register,
        "compare": cmd_compare, "field": cmd_field, "token": cmd_token,
        "check-forward": cmd_check_forward, "metered": cmd_metered, "quiet": cmd_quiet,
        "cache": cmd_cache, "tokens": cmd_tokens,
    }
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](*sys.argv[2:])


if __name__ == "__main__":
    main()
