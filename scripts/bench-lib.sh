# bench-lib.sh: what scripts/bench.sh and scripts/bench-limits.sh share,
# sourced by both: the settings of the service under test, and starting and
# stopping one `orderd serve` on fresh state (a new database, NATS store and
# Redis prefix), cleaned up afterwards.
#
# Environment: BENCH_DIR (/tmp/orderd-bench); PG_URL (the server's
# maintenance database), REDIS_URL, JWT_SECRET; BENCH_HTTP_PORT (18080),
# BENCH_NATS_PORT (14222), BENCH_METRICS_PORT (19090); KEEP=1 keeps the
# database, store and keys of a run; NATS=embedded (the default: orderd
# serve's own NATS server) or NATS=separate (bin/nats-server with
# JetStream, sync_interval always, on BENCH_NATS_PORT, and orderd serve
# with NATS_URL pointing to it, so that its CPU is measured apart).

BENCH_DIR="${BENCH_DIR:-/tmp/orderd-bench}"
PG_URL="${PG_URL:-postgres://orderd:orderd@127.0.0.1:5432/orderd?sslmode=disable}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
HTTP_PORT="${BENCH_HTTP_PORT:-18080}"
NATS_PORT="${BENCH_NATS_PORT:-14222}"
METRICS_PORT="${BENCH_METRICS_PORT:-19090}"
JWT_SECRET="${JWT_SECRET:-dev-only-secret-change-me-0123456789abcdef}"
KEEP="${KEEP:-0}"
NATS="${NATS:-embedded}"
case "$NATS" in
  embedded | separate) ;;
  *) echo "NATS must be embedded or separate, not $NATS" >&2; exit 2 ;;
esac
mkdir -p "$BENCH_DIR"

# db_url NAME: PG_URL with its database replaced by NAME.
db_url() { sed -E "s#(postgres(ql)?://[^/]*)/[^?]*#\1/$1#" <<<"$PG_URL"; }

# redis_clean PREFIX: delete the run's keys (SCAN with a large COUNT: the
# server may hold many other keys).
redis_clean() {
  command -v redis-cli >/dev/null || return 0
  local c=0 r
  while :; do
    mapfile -t r < <(redis-cli -u "$REDIS_URL" SCAN "$c" MATCH "$1*" COUNT 10000 2>/dev/null)
    [[ ${#r[@]} -gt 0 ]] || return 0
    c=${r[0]}
    if [[ ${#r[@]} -gt 1 ]]; then redis-cli -u "$REDIS_URL" DEL "${r[@]:1}" >/dev/null 2>&1 || true; fi
    [[ "$c" == 0 ]] && return 0
  done
}

# The server under test (pid), the separate nats-server (natspid) and
# their state (db, natsdir, prefix).
pid="" natspid="" db="" natsdir="" prefix=""

# stop_pid PID: TERM, then KILL after 20 s.
stop_pid() {
  if [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; then
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$1" 2>/dev/null && kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
  fi
}

# stop_server: stop the server, then its nats-server, and, unless KEEP=1,
# drop its database, NATS store and Redis keys.
stop_server() {
  stop_pid "$pid"
  stop_pid "$natspid"
  pid="" natspid=""
  if [[ "$KEEP" != 1 ]]; then
    [[ -n "$db" ]] && { psql "$PG_URL" -qAt -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; }
    [[ -n "$natsdir" ]] && rm -rf "$natsdir"
    [[ -n "$prefix" ]] && redis_clean "$prefix"
  fi
  db="" natsdir="" prefix=""
}
trap stop_server EXIT
trap 'exit 130' INT TERM

# wait_ready URL: wait until URL answers 2xx while the server lives.
wait_ready() {
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}

# start_nats LOG: start bin/nats-server (NATS=separate) with JetStream,
# sync_interval always (as deploy/nats.conf), its store in $natsdir, on
# NATS_PORT, logging to LOG, and wait until it is ready.
start_nats() {
  local conf="$natsdir/nats.conf"
  printf 'server_name: orderd-bench\nlisten: 127.0.0.1:%s\nmax_payload: 8MB\njetstream {\n  store_dir: "%s"\n  sync_interval: always\n}\n' \
    "$NATS_PORT" "$natsdir/store" >"$conf"
  bin/nats-server -c "$conf" 2>"$1" &
  natspid=$!
  for _ in $(seq 1 300); do
    grep -q "Server is ready" "$1" 2>/dev/null && return 0
    kill -0 "$natspid" 2>/dev/null || break
    sleep 0.2
  done
  echo "nats-server did not become ready; its log:" >&2
  tail -20 "$1" >&2
  exit 1
}

# start_orderd NAME LOG: start bin/orderd serve in its default durable
# configuration (embedded NATS, NATS_SYNC=always; development mode, which
# takes the development secrets; with NATS=separate a
# nats-server of its own, started first, logging to LOG.nats) on a new
# database NAME, a new NATS store and Redis prefix, logging to LOG, and
# wait for /readyz. Sets DATABASE_URL to the run's database.
start_orderd() {
  db=$1
  natsdir=$(mktemp -d "${TMPDIR:-/tmp}/orderd-bench-nats.XXXXXX")
  prefix="bench:$db:"
  psql "$PG_URL" -qAt -v ON_ERROR_STOP=1 -c "CREATE DATABASE $db" >/dev/null
  DATABASE_URL=$(db_url "$db")
  local nats_url=""
  if [[ "$NATS" == separate ]]; then
    start_nats "$2.nats"
    nats_url="nats://127.0.0.1:$NATS_PORT"
  fi
  DATABASE_URL="$DATABASE_URL" REDIS_URL="$REDIS_URL" REDIS_PREFIX="$prefix" \
    NATS_URL="$nats_url" NATS_STORE_DIR="$natsdir" NATS_SYNC=always NATS_EMBEDDED_ADDR="127.0.0.1:$NATS_PORT" \
    HTTP_ADDR="127.0.0.1:$HTTP_PORT" METRICS_ADDR="127.0.0.1:$METRICS_PORT" JWT_SECRET="$JWT_SECRET" \
    ORDERD_DEV=true LOG_LEVEL=warn bin/orderd serve 2>"$2" &
  pid=$!
  if ! wait_ready "http://127.0.0.1:$HTTP_PORT/readyz"; then
    echo "orderd did not become ready; its log:" >&2
    tail -20 "$2" >&2
    exit 1
  fi
}

# local_pid_of_port PORT: the pid of the process listening on 127.0.0.1 or
# any address at PORT on this machine, if ss shows it (root or its owner).
local_pid_of_port() {
  command -v ss >/dev/null || return 0
  ss -ltnpH "( sport = :$1 )" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2
}

# server_pids: the server's processes for flashbench --server-pids, comma
# separated: orderd, the separate nats-server, the Redis server of
# REDIS_URL (INFO's process_id) and the postmaster of PG_URL (the listener
# of its port; its backends are its children), each if it runs on this
# machine. Naming them, rather than every process called postgres or
# redis-server, leaves out another PostgreSQL cluster or Redis on the
# machine (not the other clients of these servers).
server_pids() {
  local pids=("$pid") p host port
  [[ -n "$natspid" ]] && pids+=("$natspid")
  p=$(redis-cli -u "$REDIS_URL" INFO server 2>/dev/null | tr -d '\r' | awk -F: '$1 == "process_id" {print $2}')
  [[ -n "$p" && "$(cat "/proc/$p/comm" 2>/dev/null)" == redis-server ]] && pids+=("$p")
  host=$(sed -E 's#^[a-z]+://([^@/]*@)?([^/?]*).*#\2#' <<<"$PG_URL")
  port=5432
  [[ "$host" == *:* ]] && port=${host##*:}
  case "${host%:*}" in
    127.0.0.1 | localhost | "") p=$(local_pid_of_port "$port") ;;
    *) p="" ;;
  esac
  [[ -n "$p" && "$(cat "/proc/$p/comm" 2>/dev/null)" == postgres ]] && pids+=("$p")
  local IFS=,
  echo "${pids[*]}"
}
