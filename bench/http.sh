#!/usr/bin/env bash
# The HTTP layer's overhead: wrk against the Hello-API route without the layer, with it on the
# memory store, and with it on a redis-server started here, interleaved in one run.
#
#   bench/http.sh [ROUNDS=3] [SECONDS=10]     # run it alone: server, wrk and Redis share 2 cores
#
# The limit (GCRA, 10^9 per second per client IP) is never reached, so every request is checked,
# counted and passed on: the cost measured is the layer's, not a 429's.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
seconds=${2:-10}
port=${HTTP_PORT:-3100}
redis_port=${REDIS_PORT:-6392}
command -v wrk >/dev/null || { echo "bench/http.sh needs wrk: apt-get install -y wrk" >&2; exit 1; }
dir=$(mktemp -d)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir"
trap 'kill "$(cat "$dir/redis.pid")" 2>/dev/null || true; kill "$(cat "$dir/app.pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$dir"' EXIT
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.1; done

cargo build -q --release -p floodwall-http --example overhead
app=target/release/examples/overhead

run() {
  local mode=$1
  MODE=$mode REDIS_URL="redis://127.0.0.1:$redis_port" LISTEN="127.0.0.1:$port" "$app" &
  echo $! > "$dir/app.pid"
  until curl -s -o /dev/null "http://127.0.0.1:$port/"; do sleep 0.1; done
  local out
  out=$(wrk -t2 -c64 -d"${seconds}s" --latency "http://127.0.0.1:$port/")
  kill "$(cat "$dir/app.pid")"; wait "$(cat "$dir/app.pid")" 2>/dev/null || true
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  echo "{\"bench\": \"http\", \"round\": $round, \"mode\": \"$mode\", \"requests_per_s\": $rps, \"p50\": \"$p50\", \"p99\": \"$p99\"}"
}

for round in $(seq 1 "$rounds"); do
  for mode in none memory redis; do
    run "$mode"
  done
done
