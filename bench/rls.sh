#!/usr/bin/env bash
# floodwall's Envoy RateLimitService beside Limitador's, in one run, under the anchors' rls-load
# (a closed-loop tonic client: 64 callers over 4 HTTP/2 connections, 10 000 remote_address
# descriptors, one limit per address that is never reached): both on their memory stores, then
# both on one redis-server started here. One JSON line per case: calls/s, p50/p99/p999 in ms.
#
#   bench/rls.sh [SECONDS=10] [CONCURRENCY=64]     # run it alone on the machine
set -euo pipefail
cd "$(dirname "$0")/.."
anchors=$(cd "${ANCHORS:-../shared/bench-anchors}" && pwd)
secs=${1:-10}; conc=${2:-64}
target=${RLS_LOAD_TARGET:-${TMPDIR:-/tmp}/rls-load-target}   # the anchors' directory may be read-only
load="$target/release/rls-load"
[ -x "$load" ] || (cd "$anchors/rls-load" && CARGO_TARGET_DIR="$target" cargo build --release -q)
cargo build -q --release -p floodwall-server
port=${RLS_PORT:-18591}; http=${RLS_HTTP_PORT:-18590}; rport=${REDIS_PORT:-16591}
dir=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
stop_last() { kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; }
# shellcheck source=bench/lib/wrk.sh
. bench/lib/wrk.sh
# shellcheck source=bench/lib/rls.sh
. bench/lib/rls.sh

# Runs the load against the server `$2` (a pid) and adds its CPU time per call to the line.
run_load() {
  local before line
  before=$(cpu_ticks "$2")
  line=$("$load" --addr "http://127.0.0.1:$port" --domain edge --key remote_address --keys 10000 \
    --concurrency "$conc" --connections 4 --duration "$secs" --label "$1")
  with_cpu_per_call "$line" $(( $(cpu_ticks "$2") - before ))
}

floodwall() {
  rls_config "$1" > "$dir/floodwall.toml"
  RUST_LOG=warn target/release/floodwall serve --config "$dir/floodwall.toml" > "$dir/floodwall.log" 2>&1 &
  pids+=($!)
  wait_port "$port"
  run_load "$2" "${pids[-1]}"
  stop_last
}

limitador() {
  "$anchors/bin/limitador-server" -b 127.0.0.1 -p "$port" -B 127.0.0.1 -P "$http" \
    "$anchors/limitador-limits.yaml" "$@" > "$dir/limitador.log" 2>&1 &
  pids+=($!)
  wait_port "$port"
  run_load "limitador-${1}" "${pids[-1]}"
  stop_last
}

floodwall memory:// floodwall-memory
limitador memory

redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no > "$dir/redis.log" 2>&1 &
pids+=($!)
wait_port "$rport"
floodwall "redis://127.0.0.1:$rport" floodwall-redis
redis-cli -p "$rport" FLUSHALL > /dev/null
limitador redis "redis://127.0.0.1:$rport"
