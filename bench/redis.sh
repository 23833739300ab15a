#!/usr/bin/env bash
# RedisStore beside the anchors, on one redis-server started here, in one run.
#
#   bench/redis.sh [ROUNDS=2]     # about 4 minutes a round on 2 cores; run it alone
#
# Each round runs, against the same fresh server:
#   1. floodwall: 64 concurrent callers, 10 000 random keys, every algorithm (ops/s, p50, p99,
#      Redis usec_per_call of our script, Redis bytes per tracked client at 100 000 keys);
#   2. redis-benchmark -P16 of the anchors' plain GCRA script (Redis's ceiling for that script);
#   3. node rate-limiter-flexible, 64 concurrent consume() (if ../shared/bench-anchors/setup.sh ran);
#   4. Python limits async, 64 tasks (idem);
#   5. floodwall: one hot key across 4 stores, 64 callers, prefetch off / 10 / 100 / 1000 (ops/s,
#      p50, p99, Redis script calls and Redis CPU per decision).
# Prerequisite for 3 and 4: ../shared/bench-anchors/setup.sh (pip and npm installs under /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
anchors=$(cd "${ANCHORS:-../shared/bench-anchors}" && pwd)
rounds=${1:-2}
port=${REDIS_PORT:-6391}
dir=$(mktemp -d)
export RESULTS_DIR=$dir/anchor-results   # the anchors' scripts append their JSON here, not in shared/
mkdir -p "$RESULTS_DIR/raw"

redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir"
trap 'kill "$(cat "$dir/redis.pid")" 2>/dev/null || true; rm -rf "$dir"' EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done

cargo bench -q -p floodwall --bench redis_throughput --bench redis_hot_key --no-run 2>/dev/null
for round in $(seq 1 "$rounds"); do
  echo "# round $round"
  REDIS_URL="redis://127.0.0.1:$port" cargo bench -q -p floodwall --bench redis_throughput 2>/dev/null

  redis-cli -p "$port" FLUSHALL >/dev/null
  sha=$(redis-cli -p "$port" SCRIPT LOAD "$(cat "$anchors/lua/gcra.lua")")
  redis-benchmark -p "$port" -c 50 -r 10000 -P 16 -n 800000 --csv \
    EVALSHA "$sha" 1 rl:g:__rand_int__ 1000 1000000 | tail -1 |
    awk -F'"' '{printf "{\"bench\": \"redis-benchmark\", \"case\": \"EVALSHA_gcra -P16\", \"ops_per_s\": %s, \"p50_ms\": %s, \"p99_ms\": %s}\n", $4, $10, $14}'

  if [ -d /tmp/anchors-node/node_modules ]; then
    redis-cli -p "$port" FLUSHALL >/dev/null
    REDIS_PORT=$port NODE_PATH=/tmp/anchors-node/node_modules \
      node "$anchors/node_rlf_bench.js" --rep "$round" --duration 5 --only rlf-redis-c64 2>/dev/null | grep '"ops_per_s"' || true
  fi
  if [ -x /tmp/anchors-venv/bin/python ]; then
    redis-cli -p "$port" FLUSHALL >/dev/null
    REDIS_PORT=$port /tmp/anchors-venv/bin/python "$anchors/py_limits_bench.py" --rep "$round" --duration 5 \
      --no-sync --only async-fixed-redispy 2>/dev/null | grep '"ops_per_s"' || true
  fi
  redis-cli -p "$port" FLUSHALL >/dev/null
  REDIS_URL="redis://127.0.0.1:$port" cargo bench -q -p floodwall --bench redis_hot_key 2>/dev/null
done
