#!/usr/bin/env bash
# authserver benchmark: token endpoint (RS256, ES256; CLI-created and DCR-registered client),
# JWKS and forward-auth decisions (API key; bearer JWT, RS256 and ES256) under wrk, plus profiles.
# Run by hand, not by CI:  bash bench/run.sh      (see bench/README.md)
#
# The server runs pinned to one core (SERVER_CPU), wrk and the profilers to another (LOAD_CPU).
# Everything listens on and talks to 127.0.0.1 only. Temporary data (config, SQLite, keys) lives
# in a mktemp directory that is removed on exit, with the server processes.
#
# Knobs (environment): RUNS=5 DURATION=10 WARMUP=5 CONNECTIONS=16 SERVER_CPU=0 LOAD_CPU=1
#                      PROFILE=1 (py-spy and perf profiles if installed; 0 skips)
#                      PROFILE_SECONDS=8 BASELINE=1 (bare-Starlette reference run; 0 skips)
#                      COMPONENTS=1 (in-process layer costs, bench/components.py; 0 skips)
#                      SCENARIOS="token-RS256 token-RS256-dcr jwks token-ES256 baseline-static
#                        forward-auth-key forward-auth-jwt-RS256 forward-auth-jwt-ES256"
#                        (the default: all; a subset runs only those, e.g.
#                        SCENARIOS="token-RS256 token-RS256-dcr" for CLI vs DCR client)
#                      MAX_OTHERS=0.1 (each run waits, up to QUIET_WAIT=900 s, until the machine
#                        has been that quiet for QUIET_SECONDS=3; a run during which other work
#                        took more than this many cores' worth of CPU is made again, up to 5
#                        times; 0: keep every run)
#                      PYTHON=/path/to/venv/bin/python (else $VIRTUAL_ENV, ./.venv, python3)
#                      WORKERS=1 (uvicorn worker processes of the server, as `authserver serve
#                        --workers N`; with 2 on a 2-core machine give them both cores and let
#                        wrk share: SERVER_CPU=0,1 LOAD_CPU=0,1)
#                      DATABASE=sqlite (or postgres: each server gets a fresh database on
#                        POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/postgres, dropped on
#                        exit)
#                      CLIENTS="10 10000 100000" (unset: skipped) POST /token, ES256, with N
#                        registered clients each (a server of its own per N; bench/seed_clients.py
#                        creates them): one hot client, and requests spread over a sample of
#                        min(N, 1000) clients (scenarios clients-N-hot, clients-N-spread)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
# Measure the authserver of the tree this script lives in, whatever is installed.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT"
RUNS=${RUNS:-5}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-5}
CONNECTIONS=${CONNECTIONS:-16}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PROFILE=${PROFILE:-1}
PROFILE_SECONDS=${PROFILE_SECONDS:-8}
BASELINE=${BASELINE:-1}
COMPONENTS=${COMPONENTS:-1}
MAX_OTHERS=${MAX_OTHERS:-0.1}
QUIET_WAIT=${QUIET_WAIT:-900}
QUIET_SECONDS=${QUIET_SECONDS:-3}
WORKERS=${WORKERS:-1}
DATABASE=${DATABASE:-sqlite}
POSTGRES_URL=${POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
CLIENTS=${CLIENTS:-}
for n in $CLIENTS; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "bench: CLIENTS holds counts (e.g. \"10 10000\")" >&2; exit 2; }
done
case "$DATABASE" in sqlite|postgres) ;; *) echo "bench: DATABASE is sqlite or postgres" >&2; exit 2 ;; esac
ALL_SCENARIOS="token-RS256 token-RS256-dcr jwks token-ES256 baseline-static forward-auth-key
 forward-auth-jwt-RS256 forward-auth-jwt-ES256"
ALL_SCENARIOS=$(echo $ALL_SCENARIOS)  # one line
SCENARIOS=${SCENARIOS:-$ALL_SCENARIOS}

die() { echo "bench: $*" >&2; exit 2; }

# selected SCENARIO: is it in $SCENARIOS (baseline-static also needs BASELINE=1)?
selected() {
  [ "$1" != baseline-static ] || [ "$BASELINE" = 1 ] || return 1
  case " $SCENARIOS " in *" $1 "*) return 0 ;; esac
  return 1
}
for scenario in $SCENARIOS; do
  case " $ALL_SCENARIOS " in *" $scenario "*) ;;
    *) die "unknown scenario '$scenario' in SCENARIOS (known: $ALL_SCENARIOS)" ;; esac
done

# -- which Python: one with authserver's dependencies and the uvicorn extras --------------------
find_python() {
  local candidate
  for candidate in "${PYTHON:-}" "${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}" \
                   "$ROOT/.venv/bin/python" "$(command -v python3 || true)"; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    if "$candidate" -c 'import authserver, uvicorn, uvloop, httptools, starlette' 2>/dev/null
    then echo "$candidate"; return 0; fi
  done
  return 1
}
PY=$(find_python) || die "no Python with authserver installed; set PYTHON=/path/to/venv/bin/python"
command -v wrk >/dev/null || die "wrk is missing (Debian/Ubuntu: apt-get install -y wrk)"
command -v taskset >/dev/null || die "taskset is missing (util-linux)"
[ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs (server and load generator on separate cores)"
PYSPY=$(dirname "$PY")/py-spy
[ -x "$PYSPY" ] || PYSPY=$(command -v py-spy || true)
PERF=$(command -v perf || true)

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$HERE/out/$STAMP"
mkdir -p "$OUT"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/authserver-bench.XXXXXX")
SERVER_PID=""
SEED=0        # start_server: clients to create besides the CLI one (bench/seed_clients.py)
BASIC_FILE="" # wrk_command: Basic credentials, one a line, picked at random per request
DATABASES=""  # PostgreSQL databases this run made (DATABASE=postgres), dropped on exit

stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}
cleanup() {
  local status=$?
  stop_server
  # wrk and profilers started in the background by this script (never anything else)
  local job
  for job in $(jobs -p); do kill -TERM "$job" 2>/dev/null || true; done
  local name
  for name in $DATABASES; do pg_admin "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" || true; done
  rm -rf "$TMP"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "== $*" >&2; }
helper() { "$PY" "$HERE/helper.py" "$@"; }
# pg_admin SQL: one statement on POSTGRES_URL, autocommit (CREATE/DROP DATABASE)
pg_admin() { "$PY" -c 'import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as conn: conn.execute(sys.argv[2])' \
  "$POSTGRES_URL" "$1"; }

# start_server NAME ALG [TRUSTED_PROXY] [SCOPE]: config, one client (scopes "read write", or
# SCOPE), the server on SERVER_CPU; sets PORT, BASIC and CONFIG
start_server() {
  local name=$1 alg=$2 proxy=${3:-} scope=${4:-read write} dir="$TMP/$1"
  PORT=$(helper freeport)
  CONFIG="$dir/authserver.toml"
  if [ "$DATABASE" = postgres ]; then
    local db="authserver_bench_${STAMP,,}_${name,,}"
    db=${db//[^a-z0-9_]/_}
    pg_admin "CREATE DATABASE \"$db\""
    DATABASES="$DATABASES $db"
    BENCH_DATABASE_URL="${POSTGRES_URL%/*}/$db" helper config "$dir" "$PORT" "$alg" "$proxy"
    "$PY" -m authserver.cli --config "$CONFIG" migrate >/dev/null
  else
    helper config "$dir" "$PORT" "$alg" "$proxy"
  fi
  local client
  client=$("$PY" -m authserver.cli --config "$CONFIG" --json \
           clients create --name bench --scope "$scope")
  BASIC=$(helper basic "$client")
  if [ "$SEED" -gt 0 ]; then
    # the CLI client is one of the sample: min(N, 1000) in all, N = SEED + 1
    local keep=$(( SEED + 1 < 1000 ? SEED : 999 ))
    log "$name: creating $SEED more clients (bench/seed_clients.py)"
    "$PY" "$HERE/seed_clients.py" --config "$CONFIG" --count "$SEED" --keep "$keep" \
      --out "$dir/basic.txt" 2>&1 | tee "$OUT/$name.seed.txt" | tail -1 >&2
    echo "$BASIC" >>"$dir/basic.txt"
  fi
  log "$name: server on 127.0.0.1:$PORT (cores $SERVER_CPU, $WORKERS worker(s)), $alg, $DATABASE"
  taskset -c "$SERVER_CPU" "$PY" "$HERE/serve.py" --config "$dir/authserver.toml" \
    --port "$PORT" --workers "$WORKERS" >"$OUT/$name.server.log" 2>&1 &
  SERVER_PID=$!
  helper wait "$PORT" 30
  helper check "$PORT" "$BASIC" "$alg" | tee -a "$OUT/checks.txt" >&2
}

# wrk_command SECONDS PATH [BASIC] [EXPECT] [HEADERS] [EXPECT_HEADER]: sets WRK_CMD, the wrk
# command line (see wrk.lua for what the arguments do)
wrk_command() {
  local seconds=$1 path=$2 basic=${3:-} expect=${4:-} headers=${5:-} expect_header=${6:-}
  WRK_CMD=(env "BENCH_BASIC=$basic" "BENCH_BASIC_FILE=$BASIC_FILE" "BENCH_EXPECT=$expect"
           "BENCH_HEADERS=$headers"
           "BENCH_EXPECT_HEADER=$expect_header" taskset -c "$LOAD_CPU"
           wrk -t1 -c"$CONNECTIONS" -d"${seconds}s" --latency -s "$HERE/wrk.lua"
           "http://127.0.0.1:$PORT$path")
}

# wrk_once SECONDS PATH [BASIC] [EXPECT] [HEADERS] [EXPECT_HEADER] -> wrk's output on stdout
wrk_once() {
  wrk_command "$@"
  "${WRK_CMD[@]}"
}

# wait_quiet WHAT: with MAX_OTHERS set, wait (up to QUIET_WAIT s) until other work has stopped
wait_quiet() {
  [ "$MAX_OTHERS" != 0 ] || return 0
  local waited
  waited=$(helper quiet "$MAX_OTHERS" "$QUIET_SECONDS" "$QUIET_WAIT")
  [ "$waited" = 0 ] || log "$1: waited ${waited}s for other work to end"
}

# run_once SCENARIO I PATH [BASIC] [EXPECT] [HEADERS] [EXPECT_HEADER]: run I of SCENARIO,
# appended to OUT/SCENARIO.jsonl. `helper.py metered` adds the CPU other work took meanwhile;
# above MAX_OTHERS the run is made again after a pause (up to 5 times). A run with any failed
# response (not 200, wrong body or header, socket error, timeout) stops the benchmark.
run_once() {
  local scenario=$1 i=$2 line others attempt; shift 2
  wrk_command "$DURATION" "$@"
  for attempt in 0 1 2 3 4 5; do
    wait_quiet "$scenario run $i"
    line=$(helper metered "$SERVER_PID" "$OUT/$scenario.run$i.txt" -- "${WRK_CMD[@]}") ||
      die "$scenario run $i: no result (see $OUT/$scenario.run$i.txt)"
    others=$("$PY" -c 'import json, sys; print(json.loads(sys.argv[1])["others"])' "$line")
    if [ "$attempt" = 5 ] || "$PY" -c 'import sys; limit, others = map(float, sys.argv[1:])
sys.exit(not (limit <= 0 or others <= limit))' "$MAX_OTHERS" "$others"; then
      break
    fi
    log "$scenario run $i: others took $others cores meanwhile; made again"
    cp "$OUT/$scenario.run$i.txt" "$OUT/$scenario.run$i.disturbed$attempt.txt"
    echo "$line" >>"$OUT/$scenario.disturbed.txt"
    sleep 2
  done
  line=$("$PY" -c 'import json, sys; d = json.loads(sys.argv[1]); d["redone"] = int(sys.argv[2])
print(json.dumps(d))' "$line" "$attempt")
  echo "$line" >>"$OUT/$scenario.jsonl"
  log "$scenario run $i/$RUNS: $line"
  "$PY" -c 'import json, sys; d = json.loads(sys.argv[1]); sys.exit(
    d["non200"] + d["badbody"] + d["socket_errors"] + d["timeouts"] > 0)' "$line" ||
    die "$scenario run $i: failed responses (first: see $OUT/$scenario.run$i.txt)"
}

# measure SCENARIO PATH [BASIC] [EXPECT] [HEADERS] [EXPECT_HEADER]: warm-up, then RUNS runs into
# OUT/SCENARIO.jsonl
measure() {
  local scenario=$1; shift
  log "$scenario: warm-up ${WARMUP}s"
  wrk_once "$WARMUP" "$@" >"$OUT/$scenario.warmup.txt"
  : >"$OUT/$scenario.jsonl"
  local i
  for i in $(seq "$RUNS"); do run_once "$scenario" "$i" "$@"; done
}

# measure_pair PATH EXPECT A BASIC_A B BASIC_B: two scenarios on the running server, interleaved
# so that drift of the machine hits both alike: a warm-up each, then run i of A and of B back to
# back, A first in odd runs and B first in even ones.
measure_pair() {
  local path=$1 expect=$2 a=$3 basic_a=$4 b=$5 basic_b=$6 i
  log "$a: warm-up ${WARMUP}s"
  wrk_once "$WARMUP" "$path" "$basic_a" "$expect" >"$OUT/$a.warmup.txt"
  log "$b: warm-up ${WARMUP}s"
  wrk_once "$WARMUP" "$path" "$basic_b" "$expect" >"$OUT/$b.warmup.txt"
  : >"$OUT/$a.jsonl"
  : >"$OUT/$b.jsonl"
  for i in $(seq "$RUNS"); do
    if [ $((i % 2)) = 1 ]; then
      run_once "$a" "$i" "$path" "$basic_a" "$expect"
      run_once "$b" "$i" "$path" "$basic_b" "$expect"
    else
      run_once "$b" "$i" "$path" "$basic_b" "$expect"
      run_once "$a" "$i" "$path" "$basic_a" "$expect"
    fi
  done
}

# profile SCENARIO PATH [BASIC] [EXPECT] [HEADERS] [EXPECT_HEADER]: py-spy (Python stacks) and perf (native, by DSO)
profile() {
  [ "$PROFILE" = 1 ] || return 0
  local scenario=$1; shift
  wait_quiet "$scenario profile"
  if [ -n "$PYSPY" ]; then
    log "$scenario: py-spy record ${PROFILE_SECONDS}s under load"
    wrk_once $((PROFILE_SECONDS + 3)) "$@" >"$OUT/$scenario.pyspy-load.txt" &
    local load=$!
    sleep 1
    if taskset -c "$LOAD_CPU" "$PYSPY" record --pid "$SERVER_PID" --duration "$PROFILE_SECONDS" \
         --rate 250 --format raw --output "$OUT/$scenario.pyspy.txt" >/dev/null 2>&1; then
      helper profile "$OUT/$scenario.pyspy.txt" >"$OUT/$scenario.pyspy-summary.md"
    else
      echo "py-spy failed (needs ptrace permission)" >"$OUT/$scenario.pyspy-summary.md"
    fi
    wait "$load" || true
  fi
  if [ -n "$PERF" ]; then
    log "$scenario: perf record ${PROFILE_SECONDS}s under load"
    wrk_once $((PROFILE_SECONDS + 3)) "$@" >"$OUT/$scenario.perf-load.txt" &
    local load=$!
    sleep 1
    if taskset -c "$LOAD_CPU" "$PERF" record -F 999 -p "$SERVER_PID" -o "$TMP/perf.data" \
         -- sleep "$PROFILE_SECONDS" >/dev/null 2>&1; then
      "$PERF" report -i "$TMP/perf.data" --sort dso --stdio 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | head -12 >"$OUT/$scenario.perf-dso.txt" || true
      "$PERF" report -i "$TMP/perf.data" --sort dso,sym --stdio 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | head -30 >"$OUT/$scenario.perf-sym.txt" || true
    else
      echo "perf failed (perf_event_paranoid?)" >"$OUT/$scenario.perf-dso.txt"
    fi
    wait "$load" || true
  fi
}

{
  echo "# authserver benchmark $STAMP"
  echo
  helper machine
  echo "- wrk: $(wrk -v 2>&1 | head -1 | awk '{print $2}')"
  echo "- command: \`RUNS=$RUNS DURATION=$DURATION WARMUP=$WARMUP CONNECTIONS=$CONNECTIONS" \
       "PROFILE=$PROFILE BASELINE=$BASELINE COMPONENTS=$COMPONENTS WORKERS=$WORKERS" \
       "DATABASE=$DATABASE SERVER_CPU=$SERVER_CPU LOAD_CPU=$LOAD_CPU" \
       "$([ -z "$CLIENTS" ] || echo "CLIENTS=\"$CLIENTS\" ")$(
         [ "$SCENARIOS" = "$ALL_SCENARIOS" ] || echo "SCENARIOS=\"$SCENARIOS\" ")bash" \
       "bench/run.sh\` (server on core $SERVER_CPU, wrk -t1 -c$CONNECTIONS on core $LOAD_CPU)"
  echo "- authserver from: $ROOT, git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null ||
        echo "${BENCH_REVISION:-unknown (set BENCH_REVISION)}")$(
        [ -d "$ROOT/.git" ] && ! git -C "$ROOT" diff --quiet HEAD -- authserver 2>/dev/null &&
        echo ' + uncommitted changes in authserver/')"
} >"$OUT/machine.md"

# -- RS256: token endpoint (CLI-created and DCR-registered client), JWKS -------------------------
RS_BASIC="" ES_BASIC="" FA_KEY="" FA_TOKEN_RS256="" FA_TOKEN_ES256=""
if selected token-RS256 || selected token-RS256-dcr || selected jwks ||
   selected baseline-static; then
  start_server RS256 RS256
  RS_BASIC=$BASIC
  curl_jwks() { "$PY" -c 'import sys, urllib.request as u; sys.stdout.buffer.write(
    u.urlopen(f"http://127.0.0.1:{sys.argv[1]}/.well-known/jwks.json", timeout=5).read())' "$1"; }
  curl_jwks "$PORT" >"$TMP/jwks.json"
  if selected token-RS256-dcr; then
    # The same server and settings; a client registered over HTTP (RFC 7591, open registration)
    # with the CLI client's grant type, auth method and scopes.
    dcr_client=$(helper register "$PORT")
    DCR_BASIC=$(helper basic "$dcr_client")
    log "token-RS256-dcr: registered $("$PY" -c 'import json, sys
print(json.loads(sys.argv[1])["client_id"])' "$dcr_client") through POST /register"
    helper check "$PORT" "$DCR_BASIC" RS256 | sed 's/^ok:/ok (DCR client):/' |
      tee -a "$OUT/checks.txt" >&2
  fi
  if selected token-RS256 && selected token-RS256-dcr; then
    measure_pair /token '"access_token"' token-RS256 "$BASIC" token-RS256-dcr "$DCR_BASIC"
  elif selected token-RS256; then
    measure token-RS256 /token "$BASIC" '"access_token"'
  elif selected token-RS256-dcr; then
    measure token-RS256-dcr /token "$DCR_BASIC" '"access_token"'
  fi
  if selected jwks; then measure jwks /.well-known/jwks.json "" '"keys"'; fi
  if selected token-RS256; then profile token-RS256 /token "$BASIC" '"access_token"'; fi
  if selected jwks; then profile jwks /.well-known/jwks.json "" '"keys"'; fi
  stop_server
fi

# -- ES256: token endpoint -----------------------------------------------------------------------
if selected token-ES256; then
  start_server ES256 ES256
  ES_BASIC=$BASIC
  measure token-ES256 /token "$BASIC" '"access_token"'
  profile token-ES256 /token "$BASIC" '"access_token"'
  stop_server
fi

# -- client scaling: POST /token, ES256, with N registered clients -------------------------------
# measure_clients SCENARIO BASIC: as `measure`, and the client cache's hits and misses during the
# measured runs (after the warm-up) to OUT/clients-cache.txt
measure_clients() {
  local scenario=$1 basic=$2 before after i
  log "$scenario: warm-up ${WARMUP}s"
  wrk_once "$WARMUP" /token "$basic" '"access_token"' >"$OUT/$scenario.warmup.txt"
  : >"$OUT/$scenario.jsonl"
  before=$(helper cache "$PORT")
  for i in $(seq "$RUNS"); do run_once "$scenario" "$i" /token "$basic" '"access_token"'; done
  after=$(helper cache "$PORT")
  "$PY" -c 'import sys; name, b, a = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
print(f"{name}: client cache during the runs: {int(a[0]) - int(b[0])} hits, "
      f"{int(a[1]) - int(b[1])} misses")' "$scenario" "$before" "$after" \
    | tee -a "$OUT/clients-cache.txt" >&2
}

# A server per N with N clients: the CLI one and N-1 made by bench/seed_clients.py through the
# same domain call (create_client). Two traffic shapes: the CLI client on every request (hot),
# and each request with a client picked at random from a sample of min(N, 1000) (spread; the
# client cache holds up to 100,000 records, so after the warm-up they are all cached). The
# client cache's hits and misses (GET /metrics) during the runs go to OUT/clients-cache.txt;
# after the server stops, bench/client_lookup.py times a miss in process (any COMPONENTS).
for n in $CLIENTS; do
  SEED=$((n - 1))
  start_server "clients-$n" ES256
  SEED=0
  [ -f "$TMP/clients-$n/basic.txt" ] || echo "$BASIC" >"$TMP/clients-$n/basic.txt"
  # every sampled client must get a token (seeded clients authenticate as CLI-created ones)
  helper tokens "$PORT" "$TMP/clients-$n/basic.txt" | tee -a "$OUT/checks.txt" >&2
  measure_clients "clients-$n-hot" "$BASIC"
  BASIC_FILE="$TMP/clients-$n/basic.txt"
  measure_clients "clients-$n-spread" ""
  BASIC_FILE=""
  stop_server
  wait_quiet "clients-$n, in-process client lookup"
  taskset -c "$SERVER_CPU" "$PY" "$HERE/client_lookup.py" --config "$CONFIG" \
    --basic-file "$TMP/clients-$n/basic.txt" >>"$OUT/client-lookup.md"
done

# -- forward-auth decisions: an API key, a bearer JWT (RS256 and ES256) --------------------------
# As a gateway calls it (docs/forward-auth.md): GET /forward-auth from a trusted proxy
# (`[server] trusted_proxies = ["127.0.0.1/32"]`), the original request in X-Forwarded-Method,
# -Uri and -For, the caller's credential as it came. The organisation "bench" holds an API key
# with the permission invoices.read and a client with the scope invoices.read (its token from
# POST /token). The rate limits are checked on every decision (config: far above the load).
FA_REQUEST=$'X-Forwarded-Method: GET\nX-Forwarded-Uri: /api/v1/invoices/42\nX-Forwarded-For: 198.51.100.7'
for alg in RS256 ES256; do
  key_here=0
  if [ "$alg" = RS256 ] && selected forward-auth-key; then key_here=1; fi
  [ "$key_here" = 1 ] || selected "forward-auth-jwt-$alg" || continue
  start_server "forward-auth-$alg" "$alg" 127.0.0.1/32
  cli() { "$PY" -m authserver.cli --config "$CONFIG" --json "$@"; }
  org=$(helper field "$(cli orgs create --name bench)" id)
  if [ "$key_here" = 1 ]; then
    FA_KEY=$(helper field "$(cli api-keys create --org "$org" --name bench \
                             --permission invoices.read)" key)
    headers="x-api-key: $FA_KEY"$'\n'"$FA_REQUEST"
    helper check-forward "$PORT" "$headers" "x-auth-permissions: invoices.read" |
      sed 's/^ok:/ok (API key):/' | tee -a "$OUT/checks.txt" >&2
    measure forward-auth-key /forward-auth "" "" "$headers" "x-auth-permissions: invoices.read"
    profile forward-auth-key /forward-auth "" "" "$headers" "x-auth-permissions: invoices.read"
  fi
  if selected "forward-auth-jwt-$alg"; then
    jwt_client=$(cli clients create --name bench-jwt --org "$org" --scope invoices.read)
    token=$(helper token "$PORT" "$(helper basic "$jwt_client")")
    printf -v "FA_TOKEN_$alg" '%s' "$token"
    headers="Authorization: Bearer $token"$'\n'"$FA_REQUEST"
    helper check-forward "$PORT" "$headers" "x-auth-scopes: invoices.read" |
      sed "s/^ok:/ok (JWT, $alg):/" | tee -a "$OUT/checks.txt" >&2
    measure "forward-auth-jwt-$alg" /forward-auth "" "" "$headers" "x-auth-scopes: invoices.read"
    profile "forward-auth-jwt-$alg" /forward-auth "" "" "$headers" "x-auth-scopes: invoices.read"
  fi
  stop_server
done

# -- reference: bare Starlette serving the same JWKS bytes ---------------------------------------
if selected baseline-static; then
  PORT=$(helper freeport)
  log "baseline-static: bare Starlette on 127.0.0.1:$PORT (core $SERVER_CPU)"
  taskset -c "$SERVER_CPU" "$PY" "$HERE/serve.py" --static "$TMP/jwks.json" --port "$PORT" \
    >"$OUT/baseline.server.log" 2>&1 &
  SERVER_PID=$!
  helper wait "$PORT" 30
  measure baseline-static /.well-known/jwks.json "" '"keys"'
  stop_server
fi

# -- in-process layer costs (no server running; pinned to the server core) ---------------------
COMPONENT_ALGS=""
if [ "$COMPONENTS" = 1 ]; then
  [ -z "$RS_BASIC" ] || COMPONENT_ALGS="RS256"
  [ -z "$ES_BASIC" ] || COMPONENT_ALGS="$COMPONENT_ALGS ES256"
fi
[ -z "$COMPONENT_ALGS" ] || log "in-process layer costs"
for alg in $COMPONENT_ALGS; do
  wait_quiet "in-process layer costs, $alg"
  basic=$RS_BASIC; [ "$alg" = ES256 ] && basic=$ES_BASIC
  taskset -c "$SERVER_CPU" "$PY" "$HERE/components.py" --config "$TMP/$alg/authserver.toml" \
    --basic "$basic" --rps-token "$(helper median "$OUT/token-$alg.jsonl")" \
    --rps-jwks "$(helper median "$OUT/jwks.jsonl")" >"$OUT/components-$alg.md"
done

# forward-auth: the steps of a decision on the forward-auth servers' data (API key; JWT RS256,
# ES256), with the budget from the measured decisions/s
FA_COMPONENTS=""
for alg in RS256 ES256; do
  [ "$COMPONENTS" = 1 ] && [ -f "$TMP/forward-auth-$alg/authserver.toml" ] || continue
  token_var="FA_TOKEN_$alg"
  fa_args=()
  [ "$alg" != RS256 ] || [ -z "$FA_KEY" ] ||
    fa_args+=(--key "$FA_KEY" --rps-key "$(helper median "$OUT/forward-auth-key.jsonl")")
  [ -z "${!token_var}" ] || fa_args+=(--token "${!token_var}"
    --rps-jwt "$(helper median "$OUT/forward-auth-jwt-$alg.jsonl")")
  [ "${#fa_args[@]}" -gt 0 ] || continue
  wait_quiet "forward-auth, in-process step costs ($alg server)"
  log "forward-auth, in-process step costs ($alg server)"
  taskset -c "$SERVER_CPU" "$PY" "$HERE/forward_auth_components.py" \
    --config "$TMP/forward-auth-$alg/authserver.toml" "${fa_args[@]}" \
    >"$OUT/forward-auth-components-$alg.md"
  FA_COMPONENTS="$FA_COMPONENTS $alg"
done

# -- summary -------------------------------------------------------------------------------------
{
  cat "$OUT/machine.md"
  echo
  echo "## Medians of $RUNS × ${DURATION}s runs (after a ${WARMUP}s warm-up), $CONNECTIONS connections"
  echo
  helper summarize "$OUT"
  if [ -s "$OUT/token-RS256.jsonl" ] && [ -s "$OUT/token-RS256-dcr.jsonl" ]; then
    echo; echo "## Token endpoint, RS256: CLI-created client vs DCR-registered client"; echo
    helper compare "$OUT" token-RS256 token-RS256-dcr
  fi
  if [ -s "$OUT/client-lookup.md" ]; then
    echo; echo "## Client lookup in process, $DATABASE (µs: median | p99)"; echo
    echo "| stored clients | sample | read (median, p99) | | miss (median, p99) | | hit (median, p99) | | event poll (median, p99) | |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    cat "$OUT/client-lookup.md"
    echo; sed 's/$/  /' "$OUT/clients-cache.txt"
  fi
  for alg in $COMPONENT_ALGS; do
    echo; echo "## In-process layer costs, $alg key"; echo
    cat "$OUT/components-$alg.md"
  done
  for alg in $FA_COMPONENTS; do
    echo; echo "## Forward-auth, in-process step costs ($alg server)"; echo
    cat "$OUT/forward-auth-components-$alg.md"
  done
  for scenario in token-RS256 token-ES256 jwks forward-auth-key forward-auth-jwt-RS256 \
                  forward-auth-jwt-ES256; do
    if [ -f "$OUT/$scenario.pyspy-summary.md" ]; then
      echo; echo "## py-spy profile: $scenario"; echo
      cat "$OUT/$scenario.pyspy-summary.md"
    fi
    if [ -f "$OUT/$scenario.perf-dso.txt" ]; then
      echo; echo "## perf, share of server-core samples by library: $scenario"; echo
      echo '```'; cat "$OUT/$scenario.perf-dso.txt"; echo '```'
    fi
  done
} >"$OUT/summary.md"
cat "$OUT/summary.md"
log "results in $OUT/summary.md"
