#!/usr/bin/env bash
# make bench-limits: the ceilings the checkout pipeline sits on, measured in
# one run on this machine, printed as one table (ceiling, value, command):
#
#   bare HTTP      benchlimits http (JWT check, strict decode, 202; no NATS,
#                  Redis or PostgreSQL) driven by flashbench raw-accept
#   orderd accept  flashbench raw-accept against orderd serve (durable
#                  defaults): the accept path without decisions awaited
#   JetStream      BenchmarkCommandPublish sync=always, batch=1 and 256:
#                  durable command writes per second as the ingress issues them
#   PostgreSQL     BenchmarkApplyBatch, batches of 1, 100, 500 checkouts of one
#                  hot SKU through DB.ApplyBatch: orders per second
#
# Environment: S, N, C (the raw-accept load: default 5000 20000 256);
# BENCH_DIR (/tmp/orderd-bench); PG_URL, REDIS_URL, JWT_SECRET and the
# BENCH_*_PORT of scripts/bench.sh; PUB_N1 and PUB_N256 (commands per
# JetStream benchmark, 3000 and 20000); APPLY_TIME (-benchtime of
# BenchmarkApplyBatch, 3s). The table is also written to
# $BENCH_DIR/limits.json (one JSON object per ceiling).
set -euo pipefail

cd "$(dirname "$0")/.."
S="${S:-5000}"
N="${N:-20000}"
C="${C:-256}"
. scripts/bench-lib.sh
BARE_PORT="${BENCH_BARE_PORT:-18079}"
PUB_N1="${PUB_N1:-3000}"
PUB_N256="${PUB_N256:-20000}"
APPLY_TIME="${APPLY_TIME:-3s}"

log() { echo "bench-limits: $*" >&2; }
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="$BENCH_DIR/limits-$stamp.jsonl"
: >"$out"

log "building bin/orderd, bin/flashbench, bin/benchlimits"
go build -trimpath -o bin/orderd ./cmd/orderd
go build -trimpath -o bin/flashbench ./cmd/flashbench
go build -trimpath -o bin/benchlimits ./cmd/benchlimits

# record NAME VALUE UNIT COMMAND
record() {
  jq -nc --arg name "$1" --argjson value "$2" --arg unit "$3" --arg cmd "$4" --arg load "$(cut -d' ' -f1 /proc/loadavg)" \
    '{ceiling: $name, value: $value, unit: $unit, command: $cmd, load1: ($load | tonumber)}' >>"$out"
  log "$1: $2 $3 (load1 $(cut -d' ' -f1 /proc/loadavg))"
}

echo "bench-limits: $(nproc) cores, shared with the load generator; uptime before:"
uptime

# (a) bare HTTP: the same JWT check and strict decode, 202, nothing behind.
raw="bin/flashbench raw-accept --stock $S --buyers $N --concurrency $C --json-only"
bin/benchlimits http --addr "127.0.0.1:$BARE_PORT" --jwt-secret "$JWT_SECRET" 2>"$BENCH_DIR/benchlimits-$stamp.log" &
pid=$!
wait_ready "http://127.0.0.1:$BARE_PORT/readyz" || { log "benchlimits did not start"; exit 1; }
line=$($raw --url "http://127.0.0.1:$BARE_PORT" --jwt-secret "$JWT_SECRET")
echo "$line" >"$BENCH_DIR/raw-bare-$stamp.json"
record "bare HTTP (JWT + strict decode + 202)" "$(jq .accept_per_s <<<"$line")" "202/s" \
  "benchlimits http & $raw --url http://127.0.0.1:$BARE_PORT"
stop_server

# (a') the real accept path: orderd serve, durable defaults, no decisions awaited.
start_orderd "bench_limits_$(date +%s)" "$BENCH_DIR/orderd-limits-$stamp.log"
line=$($raw --url "http://127.0.0.1:$HTTP_PORT" --jwt-secret "$JWT_SECRET")
echo "$line" >"$BENCH_DIR/raw-orderd-$stamp.json"
record "orderd accept path (raw-accept, NATS_SYNC=always)" "$(jq .accept_per_s <<<"$line")" "202/s" \
  "orderd serve & $raw --url http://127.0.0.1:$HTTP_PORT"
stop_server

# (b) JetStream durable command writes, as the ingress issues them.
# gobench PATTERN: the value before UNIT on the benchmark line matching PATTERN.
gobench() { awk -v pat="$1" -v unit="$2" '$1 ~ pat { for (i = 2; i <= NF; i++) if ($i == unit) print $(i-1) }' | tail -1; }
for spec in "1 $PUB_N1" "256 $PUB_N256"; do
  read -r batch n <<<"$spec"
  cmd="go test -run '^\$' -bench 'CommandPublish/sync=always/batch=$batch\$' -benchtime ${n}x ./pkg/natsbus/"
  res=$(eval "$cmd" 2>&1) || { echo "$res" >&2; exit 1; }
  v=$(gobench "batch=$batch(-[0-9]+)?$" commands/s <<<"$res")
  [[ -n "$v" ]] || { echo "$res" >&2; log "no commands/s in the output"; exit 1; }
  record "JetStream durable writes, sync=always, batch=$batch" "$v" "commands/s" "$cmd"
done

# (c) PostgreSQL: the workers' batched transaction.
cmd="go test -run '^\$' -bench 'ApplyBatch' -benchtime $APPLY_TIME ./pkg/postgres/"
res=$(eval "$cmd" 2>&1) || { echo "$res" >&2; exit 1; }
for batch in 1 100 500; do
  v=$(gobench "ApplyBatch/batch=$batch(-[0-9]+)?$" orders/s <<<"$res")
  [[ -n "$v" ]] || { echo "$res" >&2; log "no orders/s for batch=$batch"; exit 1; }
  record "PostgreSQL ApplyBatch, batch=$batch, one hot SKU" "$v" "orders/s" "$cmd"
done

cp "$out" "$BENCH_DIR/limits.json"
echo "bench-limits: uptime after:"
uptime
echo
jq -rs '(["ceiling", "value", "unit", "load1", "command"] | @tsv), (.[] | [.ceiling, (.value | floor | tostring), .unit, (.load1 | tostring), .command] | @tsv)' "$out" |
  column -t -s $'\t'
echo
echo "bench-limits: results in $out"
