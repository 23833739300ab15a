#!/usr/bin/env bash
# How floodwall's RateLimitService cost grows with the descriptors in a call: 1, 4 and 16
# `remote_address` descriptors a call (random among 10 000 addresses, one limit never reached),
# 64 callers over 4 HTTP/2 connections, on the memory store. One JSON line per case: calls/s,
# descriptors/s, p50/p99, and the server's CPU time per call.
#
#   bench/rls-growth.sh [SECONDS=10]     # run it alone on the machine
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
port=${RLS_PORT:-18593}; http=${RLS_HTTP_PORT:-18592}
cargo build -q --release -p floodwall-server
cargo bench -q -p floodwall-server --bench rls_descriptors --no-run 2>/dev/null
load=$(ls -t target/release/deps/rls_descriptors-* | grep -v '\.d$' | head -1)
dir=$(mktemp -d)
# shellcheck source=bench/lib/wrk.sh
. bench/lib/wrk.sh
# shellcheck source=bench/lib/rls.sh
. bench/lib/rls.sh
rls_config memory:// > "$dir/floodwall.toml"
RUST_LOG=warn target/release/floodwall serve --config "$dir/floodwall.toml" > "$dir/floodwall.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$dir"' EXIT
wait_port "$port"

for descriptors in 1 4 16; do
  before=$(cpu_ticks $server)
  line=$("$load" --addr "http://127.0.0.1:$port" --descriptors "$descriptors" --duration "$secs")
  with_cpu_per_call "$line" $(( $(cpu_ticks $server) - before ))
done
