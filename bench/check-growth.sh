#!/usr/bin/env bash
# How the check API's cost grows with the policies in one check: POST /v1/check of 1, 4 and 16
# policies (gcra, never reached) for one of 10 000 random keys, wrk -t2 -c64 on loopback, on the
# memory store. One line per case: requests/s, p50/p99, and the server's CPU time per request
# (a check of N policies decides N policy checks).
#
#   bench/check-growth.sh [SECONDS=6]     # run it alone; needs wrk
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-6}
port=${FLOODWALL_PORT:-8394}
command -v wrk >/dev/null || { echo "bench/check-growth.sh needs wrk (apt-get install -y wrk)" >&2; exit 1; }
cargo build -q --release -p floodwall-server
dir=$(mktemp -d)
{
  printf '[server]\nlisten = "127.0.0.1:%s"\n[storage]\nurl = "memory://"\n' "$port"
  for i in $(seq 16); do
    printf '[[policy]]\nname = "p%s"\nalgorithm = "gcra"\nlimit = 1000000000\nperiod = "1s"\n' "$i"
  done
} > "$dir/floodwall.toml"
RUST_LOG=warn target/release/floodwall serve --config "$dir/floodwall.toml" > "$dir/floodwall.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done

seconds=$secs
# shellcheck source=bench/lib/wrk.sh
. bench/lib/wrk.sh
for policies in 1 4 16; do
  POLICIES=$policies wrk_measure "\"bench\": \"check-policies\", \"policies\": $policies" \
    "http://127.0.0.1:$port/v1/check" "$server" -s bench/wrk/check_policies.lua
done
