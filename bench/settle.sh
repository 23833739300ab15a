#!/usr/bin/env bash
# What a settle costs beside a check, in one run: the memory store, then one redis-server
# started here, 64 callers on 10 000 random keys (check, debit, reserve+settle, and a
# reservation kept in the store and settled by its id, as the check API does).
#
#   bench/settle.sh [ROUNDS=2]     # about 1 minute a round on 2 cores; run it alone
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
port=${REDIS_PORT:-6393}
dir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir"
trap 'kill "$(cat "$dir/redis.pid")" 2>/dev/null || true; rm -rf "$dir"' EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
cargo bench -q -p floodwall --bench settle --no-run 2>/dev/null
for round in $(seq 1 "$rounds"); do
  echo "# round $round"
  redis-cli -p "$port" FLUSHALL >/dev/null
  REDIS_URL="redis://127.0.0.1:$port" cargo bench -q -p floodwall --bench settle 2>/dev/null
done
