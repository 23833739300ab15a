#!/usr/bin/env bash
# What the dashboard and the operator controls cost the check API, in one run, alternating
# within each round (wrk -t2 -c64 on loopback, POST /v1/check, 10 000 random keys, memory store):
#   unwatched   the admin listener up, nobody looking
#   watched     the dashboard open in headless Chromium, polling once a second
#   controls    nobody looking, one block and one deny-list entry in force (for other keys), so
#               every check is screened
# Each line gives the server's own CPU per request; "browser_cpu_s" is what Chromium spent.
#
#   bench/dashboard.sh [ROUNDS=3] [SECONDS=6]   # run it alone; needs wrk, chromium, and
#                                               # tests/browser's node_modules (scripts/test)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
seconds=${2:-6}
chromium=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
for tool in wrk node "$chromium"; do
  command -v "$tool" >/dev/null || { echo "bench/dashboard.sh needs wrk, node and chromium" >&2; exit 1; }
done
[ -d tests/browser/node_modules/playwright-core ] || npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
port=${FLOODWALL_PORT:-8394}
admin_port=${ADMIN_PORT:-8395}
token=bench-token
dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

cargo build -q --release -p floodwall-server
cat > "$dir/floodwall.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[admin]
listen = "127.0.0.1:$admin_port"
token_env = "BENCH_ADMIN_TOKEN"
[[policy]]
name = "high"
algorithm = "gcra"
limit = 1000000000
period = "1s"
TOML
BENCH_ADMIN_TOKEN=$token RUST_LOG=warn target/release/floodwall serve --config "$dir/floodwall.toml" \
  > "$dir/floodwall.log" 2>&1 &
fpid=$!
pids+=("$fpid")
until curl -s -o /dev/null "http://127.0.0.1:$port/healthz"; do sleep 0.1; done
admin() { curl -fsS -o /dev/null -X "$1" -H "authorization: Bearer $token" -H 'content-type: application/json' \
  ${3:+--data "$3"} "http://127.0.0.1:$admin_port$2"; }

# shellcheck source=bench/lib/wrk.sh
. bench/lib/wrk.sh
measure() { # case [extra fields]
  wrk_measure "\"bench\": \"dashboard\", \"round\": $round, \"case\": \"$1\"${2:-}" \
    "http://127.0.0.1:$port/v1/check" "$fpid" -s bench/wrk/check.lua
}

for round in $(seq 1 "$rounds"); do
  measure unwatched

  CHROMIUM=$chromium node tests/browser/watch.mjs "http://127.0.0.1:$admin_port/" "$token" > "$dir/watch.log" 2>&1 &
  wpid=$!
  pids+=("$wpid")
  until grep -q watching "$dir/watch.log" 2>/dev/null; do sleep 0.1; done
  browser_pids=$(pgrep -d ' ' -f "chromium.*--headless" || true)
  # shellcheck disable=SC2086 # pid lists are split on purpose
  browser_before=$(cpu_ticks $browser_pids)
  line=$(measure watched)
  # shellcheck disable=SC2086
  browser_after=$(cpu_ticks $browser_pids 2>/dev/null || echo "$browser_before")
  echo "${line%\}}, \"browser_cpu_s\": $(awk -v t=$((browser_after - browser_before)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }')}"
  kill "$wpid"; wait "$wpid" 2>/dev/null || true

  admin PUT /v1/blocks/high/someone-else '{"duration": "1h"}'
  admin PUT /v1/lists/deny/203.0.113.0%2F24
  measure controls
  admin DELETE /v1/blocks/high/someone-else
  admin DELETE /v1/lists/deny/203.0.113.0%2F24
done
