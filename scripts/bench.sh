#!/usr/bin/env bash
# make bench: the hot-SKU flash sale against `orderd serve` in its default
# durable configuration (embedded NATS, NATS_SYNC=always), RUNS times (3),
# each on a fresh database bench_<n>, a fresh NATS store and a fresh
# REDIS_PREFIX, then the medians.
#
#   scripts/bench.sh                      # S=5000 N=20000 C=256, 3 runs (about 75 s each here)
#   S=1000 N=5000 C=64 RUNS=1 scripts/bench.sh
#
# Environment: S, N, C, RUNS; BENCH_DIR (results, default /tmp/orderd-bench);
# PG_URL (a database on the server where the bench_<n> databases are
# created; default the test server of scripts/deps.sh); REDIS_URL;
# BENCH_HTTP_PORT (18080), BENCH_NATS_PORT (14222), BENCH_METRICS_PORT
# (19090), away from a developer's orderd on :8080; JWT_SECRET; KEEP=1 keeps
# the databases and NATS stores; FB_TIMEOUT (flashbench --timeout, 300s).
#
# Each run's flashbench JSON line, with orderd's peak RSS (VmHWM of
# /proc/<pid>/status at the end of the run) and the load average added, is
# appended to $BENCH_DIR/bench-<time>.jsonl; the medians go to
# $BENCH_DIR/bench-median.json and are printed. If $BENCH_DIR/peer.json
# exists (make bench-peer), our ratio to the peer is printed too.
set -euo pipefail

cd "$(dirname "$0")/.."
S="${S:-5000}"
N="${N:-20000}"
C="${C:-256}"
RUNS="${RUNS:-3}"
BENCH_DIR="${BENCH_DIR:-/tmp/orderd-bench}"
PG_URL="${PG_URL:-postgres://orderd:orderd@127.0.0.1:5432/orderd?sslmode=disable}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
HTTP_PORT="${BENCH_HTTP_PORT:-18080}"
NATS_PORT="${BENCH_NATS_PORT:-14222}"
METRICS_PORT="${BENCH_METRICS_PORT:-19090}"
JWT_SECRET="${JWT_SECRET:-dev-only-secret-change-me-0123456789abcdef}"
KEEP="${KEEP:-0}"
# How long flashbench waits for decisions after the load: long enough that
# every decision is seen by a waiter, not found by the final sweep (whose
# decisions do not count in decided/s).
FB_TIMEOUT="${FB_TIMEOUT:-300s}"

log() { echo "bench: $*" >&2; }

mkdir -p "$BENCH_DIR"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
results="$BENCH_DIR/bench-$stamp.jsonl"
: >"$results"

log "building bin/orderd and bin/flashbench"
go build -trimpath -o bin/orderd ./cmd/orderd
go build -trimpath -o bin/flashbench ./cmd/flashbench

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

pid="" db="" natsdir="" prefix=""
cleanup() {
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  pid=""
  if [[ "$KEEP" != 1 ]]; then
    if [[ -n "$db" ]]; then
      psql "$PG_URL" -qAt -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    [[ -n "$natsdir" ]] && rm -rf "$natsdir"
    [[ -n "$prefix" ]] && redis_clean "$prefix"
  fi
  db="" natsdir="" prefix=""
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "bench: $(nproc) cores, shared by orderd, PostgreSQL, Redis and the load generator; uptime before:"
uptime
echo "bench: hot-sku S=$S N=$N C=$C, $RUNS runs, orderd serve with embedded NATS, NATS_SYNC=always; results in $results"

for i in $(seq 1 "$RUNS"); do
  db="bench_$(date +%s)_$i"
  natsdir=$(mktemp -d "${TMPDIR:-/tmp}/orderd-bench-nats.XXXXXX")
  prefix="bench:$db:"
  psql "$PG_URL" -qAt -v ON_ERROR_STOP=1 -c "CREATE DATABASE $db" >/dev/null
  DATABASE_URL=$(db_url "$db")
  DATABASE_URL="$DATABASE_URL" REDIS_URL="$REDIS_URL" REDIS_PREFIX="$prefix" \
    NATS_URL="" NATS_STORE_DIR="$natsdir" NATS_SYNC=always NATS_EMBEDDED_ADDR="127.0.0.1:$NATS_PORT" \
    HTTP_ADDR="127.0.0.1:$HTTP_PORT" METRICS_ADDR="127.0.0.1:$METRICS_PORT" JWT_SECRET="$JWT_SECRET" \
    LOG_LEVEL=warn bin/orderd serve 2>"$BENCH_DIR/orderd-$stamp-$i.log" &
  pid=$!
  ready=0
  for _ in $(seq 1 300); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$HTTP_PORT/readyz" 2>/dev/null; then ready=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if [[ "$ready" != 1 ]]; then
    log "orderd did not become ready; its log:"; tail -20 "$BENCH_DIR/orderd-$stamp-$i.log" >&2
    exit 1
  fi
  log "run $i/$RUNS: database $db, orderd pid $pid; load avg $(cut -d' ' -f1-3 /proc/loadavg)"
  rc=0
  line=$(bin/flashbench hot-sku --url "http://127.0.0.1:$HTTP_PORT" --jwt-secret "$JWT_SECRET" \
    --stock "$S" --buyers "$N" --concurrency "$C" --timeout "$FB_TIMEOUT" \
    --database-url "$DATABASE_URL" --nats-url "nats://127.0.0.1:$NATS_PORT" --json-only) || rc=$?
  rss_kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
  load=$(cut -d' ' -f1 /proc/loadavg)
  if [[ -z "$line" ]]; then
    log "run $i: flashbench printed nothing (exit $rc)"; exit 1
  fi
  [[ "$rc" != 0 ]] && log "run $i: flashbench exit $rc (a check failed: see \"checks\")"
  line=$(jq -c --argjson rss "${rss_kb:-0}" --argjson load "$load" --argjson run "$i" --argjson rc "$rc" \
    '. + {orderd_peak_rss_mb: (($rss / 1024 * 10 | round) / 10), load1_after: $load, bench_run: $run, flashbench_exit: $rc}' <<<"$line")
  echo "$line" >>"$results"
  jq -r '"bench: run \(.bench_run): accepted/s \(.accept_per_s) decided/s \(.decided_per_s) accept p50/p99 \(.accept_p50_ms)/\(.accept_p99_ms) ms decide p50/p99 \(.decide_p50_ms)/\(.decide_p99_ms) ms RSS \(.orderd_peak_rss_mb) MB confirmed \(.confirmed) rejected \(.rejected) lost \(.lost) errors \(.errors) oversold \(.oversold) load1 \(.load1_after) checks \([.checks[] | select(startswith("FAILED"))] | if length == 0 then "ok" else "FAILED" end)"' <<<"$line"
  cleanup
done

keys=accept_per_s,decided_per_s,accept_p50_ms,accept_p99_ms,decide_p50_ms,decide_p99_ms,orderd_peak_rss_mb,accepted,confirmed,rejected,lost,errors,oversold,decided_after_timeout,sellout_s,load1_after
bin/flashbench median --keys "$keys" "$results" >"$BENCH_DIR/bench-median.json"
jq -c --argjson S "$S" --argjson N "$N" --argjson C "$C" '. + {S: $S, N: $N, C: $C}' "$BENCH_DIR/bench-median.json" >"$BENCH_DIR/bench-median.json.tmp"
mv "$BENCH_DIR/bench-median.json.tmp" "$BENCH_DIR/bench-median.json"
echo "bench: uptime after:"
uptime
echo "bench: medians of $RUNS runs (hot-sku S=$S N=$N C=$C):"
jq -r '"  accepted/s        \(.accept_per_s)
  decided/s         \(.decided_per_s)
  accept p50/p99    \(.accept_p50_ms) / \(.accept_p99_ms) ms
  decide p50/p99    \(.decide_p50_ms) / \(.decide_p99_ms) ms
  orderd peak RSS   \(.orderd_peak_rss_mb) MB
  load1 after runs  \(.load1_after)"' "$BENCH_DIR/bench-median.json"
cat "$BENCH_DIR/bench-median.json"

peer="$BENCH_DIR/peer.json"
if [[ -s "$peer" ]]; then
  jq -r --slurpfile ours "$BENCH_DIR/bench-median.json" '
    . as $p | $ours[0] as $o |
    "bench: peer (django-seed, S=\($p.S // "?") N=\($p.N // "?") C=\($p.C // "?")) orders_per_s_selling \($p.orders_per_s_selling)",
    "bench: ours/peer: accepted/s \(($o.accept_per_s / $p.orders_per_s_selling * 100 | round) / 100)x, decided/s \(($o.decided_per_s / $p.orders_per_s_selling * 100 | round) / 100)x"' "$peer"
else
  echo "bench: no peer result in $peer (make bench-peer writes it)"
fi
