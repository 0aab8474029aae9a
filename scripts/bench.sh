#!/usr/bin/env bash
# make bench: the hot-SKU flash sale against `orderd serve` in its default
# durable configuration (embedded NATS, NATS_SYNC=always), RUNS times (3),
# each on a fresh database bench_<n>, a fresh NATS store and a fresh
# REDIS_PREFIX, then the medians.
#
#   scripts/bench.sh                      # S=5000 N=20000 C=256, 3 runs
#   S=10000 N=50000 scripts/bench.sh      # the issue's target size
#   S=1000 N=5000 C=64 RUNS=1 scripts/bench.sh
#   SCENARIO=cart-mix S=2000 N=10000 RUNS=1 scripts/bench.sh
#
# Environment: S, N, C, RUNS; SCENARIO (a flashbench scenario that sells:
# hot-sku, the default, sold-out or cart-mix); BENCH_DIR (results, default /tmp/orderd-bench);
# PG_URL (a database on the server where the bench_<n> databases are
# created; default the test server of scripts/deps.sh); REDIS_URL;
# BENCH_HTTP_PORT (18080), BENCH_NATS_PORT (14222), BENCH_METRICS_PORT
# (19090), away from a developer's orderd on :8080; JWT_SECRET; KEEP=1 keeps
# the databases and NATS stores; FB_TIMEOUT (flashbench --timeout, 300s);
# NATS=separate runs a nats-server of its own (bin/nats-server, JetStream,
# sync_interval always, on BENCH_NATS_PORT) that orderd serve connects to
# instead of its embedded one, so that the server CPU per order shows NATS
# apart.
#
# Each run's flashbench JSON line, with orderd's peak RSS (VmHWM of
# /proc/<pid>/status at the end of the run) and the load average added, is
# appended to $BENCH_DIR/bench-<time>.jsonl; the medians go to
# $BENCH_DIR/bench-median.json and are printed. If $BENCH_DIR/peer.json
# exists (make bench-peer), our ratio to the peer is printed too.
#
# The server CPU per order (server_cpu_us_per_order, SPEC 7) counts the
# processes named by server_pids (bench-lib.sh): this orderd, its
# nats-server, and the Redis and PostgreSQL servers of REDIS_URL and PG_URL
# when they run on this machine, with all their clients: on a shared
# machine, other work on those servers counts too.
set -euo pipefail

cd "$(dirname "$0")/.."
S="${S:-5000}"
N="${N:-20000}"
SCENARIO="${SCENARIO:-hot-sku}"
C="${C:-256}"
RUNS="${RUNS:-3}"
. scripts/bench-lib.sh
# How long flashbench waits for decisions after the load: long enough that
# every decision is seen by a waiter, not found by the final sweep (whose
# decisions do not count in decided/s).
FB_TIMEOUT="${FB_TIMEOUT:-300s}"

log() { echo "bench: $*" >&2; }

stamp=$(date -u +%Y%m%dT%H%M%SZ)
results="$BENCH_DIR/bench-$stamp.jsonl"
: >"$results"

log "building bin/orderd and bin/flashbench"
go build -trimpath -o bin/orderd ./cmd/orderd
go build -trimpath -o bin/flashbench ./cmd/flashbench
if [[ "$NATS" == separate ]]; then
  log "building bin/nats-server"
  go build -trimpath -o bin/nats-server github.com/nats-io/nats-server/v2
fi

echo "bench: $(nproc) cores, shared by orderd, PostgreSQL, Redis and the load generator; uptime before:"
uptime
nats_desc="embedded NATS, NATS_SYNC=always"
[[ "$NATS" == separate ]] && nats_desc="a separate nats-server (sync_interval always)"
echo "bench: $SCENARIO S=$S N=$N C=$C, $RUNS runs, orderd serve with $nats_desc; results in $results"

for i in $(seq 1 "$RUNS"); do
  start_orderd "bench_$(date +%s)_$i" "$BENCH_DIR/orderd-$stamp-$i.log"
  spids=$(server_pids)
  log "run $i/$RUNS: database $db, orderd pid $pid; server CPU of pids $spids; load avg $(cut -d' ' -f1-3 /proc/loadavg)"
  rc=0
  line=$(bin/flashbench "$SCENARIO" --url "http://127.0.0.1:$HTTP_PORT" --jwt-secret "$JWT_SECRET" \
    --stock "$S" --buyers "$N" --concurrency "$C" --timeout "$FB_TIMEOUT" \
    --database-url "$DATABASE_URL" --nats-url "nats://127.0.0.1:$NATS_PORT" --server-pids "$spids" --json-only) || rc=$?
  rss_kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
  load=$(cut -d' ' -f1 /proc/loadavg)
  if [[ -z "$line" ]]; then
    log "run $i: flashbench printed nothing (exit $rc)"; exit 1
  fi
  [[ "$rc" != 0 ]] && log "run $i: flashbench exit $rc (a check failed: see \"checks\")"
  line=$(jq -c --argjson rss "${rss_kb:-0}" --argjson load "$load" --argjson run "$i" --argjson rc "$rc" --arg nats "$NATS" \
    '. + {orderd_peak_rss_mb: (($rss / 1024 * 10 | round) / 10), load1_after: $load, bench_run: $run, flashbench_exit: $rc, nats: $nats}' <<<"$line")
  echo "$line" >>"$results"
  jq -r '"bench: run \(.bench_run): accepted/s \(.accept_per_s) decided/s \(.decided_per_s) accept p50/p99 \(.accept_p50_ms)/\(.accept_p99_ms) ms decide p50/p99 \(.decide_p50_ms)/\(.decide_p99_ms) ms RSS \(.orderd_peak_rss_mb) MB confirmed \(.confirmed) rejected \(.rejected) lost \(.lost) errors \(.errors) oversold \(.oversold) load1 \(.load1_after) checks \([.checks[] | select(startswith("FAILED"))] | if length == 0 then "ok" else "FAILED" end)",
    "bench: run \(.bench_run): server CPU " + (if .server_cpu_us_per_order == null then (.server_cpu_note // "not measured")
      else "\(.server_cpu_us_per_order) µs per order (\(.server_cpu_us_per_order_split | to_entries | map("\(.key) \(.value)") | join(", "))), \(.server_cpu_s) s in \(.server_cpu_window_s) s" + (if .server_cpu_note then "; \(.server_cpu_note)" else "" end) end)' <<<"$line"
  stop_server
done

# The server CPU keys end in "?": missing when the server runs elsewhere
# (nats only with NATS=separate).
cpu_keys=server_cpu_us_per_order?,server_cpu_s?,server_cpu_window_s?
for k in orderd postgres redis nats; do cpu_keys+=",server_cpu_us_per_order_split.$k?"; done
keys=accept_per_s,decided_per_s,accept_p50_ms,accept_p99_ms,decide_p50_ms,decide_p99_ms,$cpu_keys,orderd_peak_rss_mb,accepted,confirmed,rejected,lost,errors,oversold,decided_after_timeout,sellout_s,load1_after
bin/flashbench median --keys "$keys" "$results" >"$BENCH_DIR/bench-median.json"
jq -c --argjson S "$S" --argjson N "$N" --argjson C "$C" --arg sc "$SCENARIO" --arg nats "$NATS" '. + {scenario: $sc, S: $S, N: $N, C: $C, nats: $nats}' "$BENCH_DIR/bench-median.json" >"$BENCH_DIR/bench-median.json.tmp"
mv "$BENCH_DIR/bench-median.json.tmp" "$BENCH_DIR/bench-median.json"
echo "bench: uptime after:"
uptime
echo "bench: medians of $RUNS runs ($SCENARIO S=$S N=$N C=$C):"
jq -r '"  accepted/s        \(.accept_per_s)
  decided/s         \(.decided_per_s)
  accept p50/p99    \(.accept_p50_ms) / \(.accept_p99_ms) ms
  decide p50/p99    \(.decide_p50_ms) / \(.decide_p99_ms) ms
  server CPU/order  \(if .server_cpu_us_per_order == null then "not measured (see server_cpu_note in the runs)" else "\(.server_cpu_us_per_order) µs (\([to_entries[] | select(.key | startswith("server_cpu_us_per_order_split.")) | "\(.key | ltrimstr("server_cpu_us_per_order_split.")) \(.value)"] | join(", ")))" end)
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
