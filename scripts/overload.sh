#!/usr/bin/env bash
# make overload: does orderd shed load it cannot take, quickly, without
# growing queues, and recover when the load falls?
#
#   scripts/overload.sh                       # measures the capacity first
#   CAPACITY=1500 scripts/overload.sh         # decided/s from make bench
#   HIGH_S=60 LOW_S=30 scripts/overload.sh
#
# One `orderd serve` in its default configuration (durable embedded NATS,
# MAX_INFLIGHT_CHECKOUTS 4096, per-user limits) on fresh state, started by
# bench-lib.sh. Three phases against it, each a flashbench hot-sku run on a
# SKU of its own (stock for every buyer, so the sale never sells out and
# every admitted checkout costs a stock write), each verified in PostgreSQL
# and ORDER_EVENTS (0 lost, 0 oversold, one decision per order):
#
#   capacity  unless CAPACITY is given: closed loop, S=N=CAP_N buyers, C=256;
#             its decided/s is the capacity and its latencies are "normal"
#   high      open model at 2 x CAPACITY arrivals/s for HIGH_S (60) seconds
#   low       open model at CAPACITY / 2 arrivals/s for LOW_S (30) seconds,
#             started once the high phase's backlog has drained
#
# Buyers answered 429 or 503 come back after Retry-After, as flashbench's
# client does (for up to 2 minutes): the attempts exceed the arrivals.
# flashbench's "shed" object counts every checkout attempt by answer and
# times the 429/503 (how fast shedding is) and the 202 answers. Between the
# phases the script reads orderd's /metrics: the partitions' pending
# commands and the outbox must be back to 0 (the backlog drained).
#
# Output: $BENCH_DIR/overload-<time>.jsonl (one line per phase, with
# orderd's VmRSS after it and the load average) and a summary on stdout
# (also in $BENCH_DIR/overload-<time>.txt). Exit 1 if a check failed.
#
# Environment: CAPACITY, CAP_N (20000), HIGH_S (60), LOW_S (30),
# FB_C (generator's buyers in flight at most, 12000: a shed buyer holds
# its slot while it waits for Retry-After, so it must be above the
# server's cap of 4096 for the arrivals to stay on schedule (flashbench
# reports "late" when it is not), and each may hold a keep-alive
# connection: orderd has 20000 file descriptors here, shared with its
# embedded NATS server, and 100000 exhausted them; flashbench sets up at
# most 1024 buyers at once whatever FB_C),
# FB_WAITERS (2048), and bench-lib.sh's BENCH_DIR, PG_URL, REDIS_URL,
# ports (here 18480, 14622, 19490 by default), JWT_SECRET, KEEP.
set -euo pipefail

cd "$(dirname "$0")/.."
# Ports of their own, so that a make bench beside it does not collide.
export BENCH_HTTP_PORT="${BENCH_HTTP_PORT:-18480}" BENCH_NATS_PORT="${BENCH_NATS_PORT:-14622}" BENCH_METRICS_PORT="${BENCH_METRICS_PORT:-19490}"
. scripts/bench-lib.sh
CAPACITY="${CAPACITY:-}"
CAP_N="${CAP_N:-20000}"
HIGH_S="${HIGH_S:-60}"
LOW_S="${LOW_S:-30}"
FB_C="${FB_C:-12000}"
FB_WAITERS="${FB_WAITERS:-2048}"

log() { echo "overload: $*" >&2; }

stamp=$(date -u +%Y%m%dT%H%M%SZ)
results="$BENCH_DIR/overload-$stamp.jsonl"
report="$BENCH_DIR/overload-$stamp.txt"
: >"$results"

log "building bin/orderd and bin/flashbench"
go build -trimpath -o bin/orderd ./cmd/orderd
go build -trimpath -o bin/flashbench ./cmd/flashbench

start_orderd "overload_$(date +%s)" "$BENCH_DIR/orderd-overload-$stamp.log"
log "orderd pid $pid, database $db; $(nproc) cores shared with PostgreSQL, Redis and flashbench; load avg $(cut -d' ' -f1-3 /proc/loadavg)"

metrics() { curl -fsS "http://127.0.0.1:$HTTP_PORT/metrics" 2>/dev/null || true; }
# metric_sum NAME: the sum of a metric's samples.
metric_sum() { metrics | awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%d", s }'; }
rss_kb() { awk "/^$1:/ {print \$2}" "/proc/$pid/status" 2>/dev/null || echo 0; }
# cpu_ticks: orderd's user + system CPU time so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK)

# server_q BEFORE AFTER STATUS Q: from two scrapes of /metrics, the upper
# bound (le, seconds) of the latency histogram bucket holding quantile Q of
# the POST /v1/orders answers of STATUS in between, as orderd measured them
# (from the handler's start: no connection set-up, no generator).
server_q() {
  awk -v st="$3" -v q="$4" '
    index($0, "orderd_http_request_duration_seconds_bucket{") == 1 && index($0, "route=\"POST /v1/orders\"") && index($0, "status=\"" st "\"") {
      match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5)
      if (FILENAME == ARGV[1]) before[le] = $NF; else { after[le] = $NF; order[++n] = le }
    }
    END {
      total = after["+Inf"] - before["+Inf"]
      if (total <= 0) { print "null"; exit }
      for (i = 1; i <= n; i++) { le = order[i]; if (after[le] - before[le] >= q * total) { print (le == "+Inf" ? "\"+Inf\"" : le); exit } }
    }' "$1" "$2"
}

# phase NAME ARGS...: one flashbench hot-sku run; its JSON line, with the
# phase name, orderd's RSS and the load average, goes to $results.
phase() {
  local name=$1 rc=0 line cpu0
  shift
  cpu0=$(cpu_ticks)
  log "phase $name: flashbench hot-sku $*; load avg $(cut -d' ' -f1-3 /proc/loadavg)"
  # orderd's CPU is counted from the end of flashbench's setup (its
  # "setup done" line on stderr: buyers' addresses are not the load).
  local cpufile="$BENCH_DIR/overload-$stamp-$name.cpu0" fblog="$BENCH_DIR/overload-$stamp-$name.stderr"
  local m0="$BENCH_DIR/overload-$stamp-$name.metrics0" m1="$BENCH_DIR/overload-$stamp-$name.metrics1"
  rm -f "$cpufile"
  metrics >"$m0"
  line=$(bin/flashbench hot-sku --url "http://127.0.0.1:$HTTP_PORT" --jwt-secret "$JWT_SECRET" \
    --database-url "$DATABASE_URL" --nats-url "nats://127.0.0.1:$NATS_PORT" "$@" \
    2> >(while IFS= read -r l; do [[ "$l" == *"setup done"* ]] && cpu_ticks >"$cpufile"; echo "$l" >>"$fblog"; done)) || rc=$?
  sleep 0.5
  [[ -s "$cpufile" ]] && cpu0=$(cat "$cpufile")
  metrics >"$m1"
  if [[ -z "$line" ]]; then log "phase $name: flashbench printed nothing (exit $rc)"; exit 1; fi
  line=$(jq -c --arg phase "$name" --argjson rc "$rc" --argjson rss "$(rss_kb VmRSS)" --argjson load "$(cut -d' ' -f1 /proc/loadavg)" \
    --argjson cpu "$(( $(cpu_ticks) - cpu0 ))" --argjson hz "$HZ" \
    --argjson s503p50 "$(server_q "$m0" "$m1" 503 0.5)" --argjson s503p99 "$(server_q "$m0" "$m1" 503 0.99)" \
    --argjson s202p50 "$(server_q "$m0" "$m1" 202 0.5)" --argjson s202p99 "$(server_q "$m0" "$m1" 202 0.99)" \
    '{phase: $phase} + . + {flashbench_exit: $rc, orderd_rss_mb: (($rss / 1024 * 10 | round) / 10), load1_after: $load,
      server_503_p50_le_s: $s503p50, server_503_p99_le_s: $s503p99, server_202_p50_le_s: $s202p50, server_202_p99_le_s: $s202p99,
      orderd_cpu_s: ($cpu / $hz), orderd_cpu_ms_per_accepted: (if .accepted > 0 then ($cpu / $hz * 1000 / .accepted * 100 | round) / 100 else null end)}' <<<"$line")
  echo "$line" >>"$results"
  # drained: every partition's pending commands, acks and the outbox at 0
  # (the workers publish their gauges every few seconds: wait for them).
  local pending=-1 ackp=-1 outbox=-1 t0=$SECONDS
  for _ in $(seq 1 60); do
    pending=$(metric_sum orderd_partition_pending)
    ackp=$(metric_sum orderd_partition_ack_pending)
    outbox=$(metric_sum orderd_outbox_pending_rows)
    [[ "$pending" == 0 && "$ackp" == 0 && "$outbox" == 0 ]] && break
    sleep 1
  done
  log "phase $name: after it, partitions pending $pending, ack pending $ackp, outbox $outbox ($((SECONDS - t0)) s after flashbench returned)"
  echo "{\"phase\":\"$name-drained\",\"partition_pending\":$pending,\"ack_pending\":$ackp,\"outbox_pending\":$outbox}" >>"$results"
}

if [[ -z "$CAPACITY" ]]; then
  phase capacity --stock "$CAP_N" --buyers "$CAP_N" --concurrency 256 --timeout 120s
  CAPACITY=$(jq -r 'select(.phase == "capacity") | .decided_per_s | floor' "$results")
  log "capacity: $CAPACITY decided/s (closed loop, C=256)"
fi
high_rate=$((2 * CAPACITY))
low_rate=$(((CAPACITY + 1) / 2))
high_n=$((high_rate * HIGH_S))
low_n=$((low_rate * LOW_S))
phase high --rate "$high_rate" --duration "${HIGH_S}s" --stock "$high_n" --buyers "$high_n" \
  --concurrency "$FB_C" --waiters "$FB_WAITERS" --timeout 120s --late-after 100ms
phase low --rate "$low_rate" --duration "${LOW_S}s" --stock "$low_n" --buyers "$low_n" \
  --concurrency "$FB_C" --waiters "$FB_WAITERS" --timeout 120s --late-after 100ms
hwm_kb=$(rss_kb VmHWM)
refused=$(metrics | grep '^orderd_checkout_refused_total' || true)
stop_server

{
  echo "overload $stamp: orderd serve (defaults: NATS_SYNC=always, MAX_INFLIGHT_CHECKOUTS=4096), $(nproc) cores shared; load avg now $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "capacity $CAPACITY decided/s; high phase ${high_rate}/s for ${HIGH_S}s; low phase ${low_rate}/s for ${LOW_S}s"
  jq -r 'select(.scenario) | "\(.phase): arrivals/s \(.rate) sent \(.sent) late \(.late) accepted \(.accepted) accepted/s \(.accept_per_s) decided/s \(.decided_per_s) | accept p50/p99 \(.accept_p50_ms)/\(.accept_p99_ms) ms (per buyer, retries included) | decide p50/p99 \(.decide_p50_ms)/\(.decide_p99_ms) ms | drain \((.duration_s - .load_s) * 10 | round / 10) s | attempts \(.shed.checkout_attempts): 202 \(.shed.answers_202) (p50/p99 \(.shed.attempt_202_p50_ms)/\(.shed.attempt_202_p99_ms) ms), 429 \(.shed.answers_429), 503 \(.shed.answers_503), shed share \(.shed.shed_share), shed p50/p99/max \(.shed.shed_p50_ms)/\(.shed.shed_p99_ms)/\(.shed.shed_max_ms) ms at the client; in orderd 503 p50/p99 ≤ \(.server_503_p50_le_s)/\(.server_503_p99_le_s) s, 202 p50/p99 ≤ \(.server_202_p50_le_s)/\(.server_202_p99_le_s) s, other \(.shed.other_answers) | lost \(.lost) oversold \(.oversold) errors \(.errors) | checks \([.checks[] | select(startswith("FAILED"))] | if length == 0 then "ok" else "FAILED" end) | orderd CPU \(.orderd_cpu_s) s = \(.orderd_cpu_ms_per_accepted) ms per accepted order, RSS \(.orderd_rss_mb) MB, load1 \(.load1_after)"' "$results"
  jq -r 'select(.phase | endswith("-drained")) | "\(.phase): partition pending \(.partition_pending), ack pending \(.ack_pending), outbox \(.outbox_pending)"' "$results"
  echo "orderd peak RSS (VmHWM): $((hwm_kb / 1024)) MB"
  echo "refused by the ingress (orderd_checkout_refused_total):"
  echo "${refused:-  none}" | sed 's/^/  /'
} | tee "$report"

failed=$(jq -s '[.[] | select(.scenario) | select(.flashbench_exit != 0 or .lost != 0 or .oversold != 0)] | length' "$results")
undrained=$(jq -s '[.[] | select(.phase | endswith("-drained")) | select(.partition_pending != 0 or .ack_pending != 0 or .outbox_pending != 0)] | length' "$results")
if [[ "$failed" != 0 || "$undrained" != 0 ]]; then
  echo "overload: FAILED: $failed phase(s) with a failed check, $undrained not drained" | tee -a "$report"
  exit 1
fi
echo "overload: ok (results $results)" | tee -a "$report"
