#!/usr/bin/env bash
# floodwall's Python package beside Python `limits` and Flask-Limiter, in one run.
#
#   bench/python.sh [SECONDS=5]     # about 6 minutes on 2 cores; run it alone
#
# 1. Decisions/s from Python (bench/python/decisions.py): floodwall memory and Redis with 1
#    thread, 8 threads and asyncio (64 in flight), then limits 5.x fixed and moving windows on
#    memory and Redis (sync, 8 threads, limits.aio with 64 tasks); 10 000 random keys.
# 2. A Flask route under gunicorn (2 workers x 8 threads) with wrk -t2 -c64 and a random
#    X-Api-Key of 10 000: unlimited, floodwall memory, floodwall Redis, Flask-Limiter Redis,
#    and unlimited again.
# It builds the package (release) into its own virtual environment, target/bench-py-venv, with
# limits, Flask-Limiter, Flask and gunicorn from PyPI, and starts its own redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
for tool in redis-server wrk; do
  command -v "$tool" >/dev/null || { echo "bench/python.sh needs $tool (apt-get install -y redis-server wrk)" >&2; exit 1; }
done
venv=target/bench-py-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check \
  maturin==1.16.0 'limits[redis,async-redis]==5.8.0' hiredis flask==3.1.3 flask-limiter==4.1.1 gunicorn==27.0.1
(cd crates/floodwall-py && VIRTUAL_ENV="$PWD/../../$venv" "../../$venv/bin/maturin" develop -q --release)

port=${REDIS_PORT:-6394}
http_port=${HTTP_PORT:-8394}
dir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir"
gunicorn_pid=
cleanup() {
  [ -n "$gunicorn_pid" ] && kill "$gunicorn_pid" 2>/dev/null || true
  kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
redis_url="redis://127.0.0.1:$port/0"

echo "# decisions per second"
"$venv/bin/python" bench/python/decisions.py --redis "$redis_url" --duration "$seconds"

echo "# Flask route, gunicorn -w 2 --threads 8, wrk -t2 -c64 -d10s"
# The unlimited route runs first and last: its two figures show how much the machine drifted
# over the section. The flush is synchronous and followed by a pause, so that freeing the
# decisions' millions of keys does not run beside the first route.
for mode in none floodwall-memory floodwall-redis flask-limiter none; do
  redis-cli -p "$port" FLUSHALL SYNC >/dev/null
  sleep 2
  BENCH_LIMITER=$mode BENCH_REDIS=$redis_url "$venv/bin/gunicorn" --log-level warning -w 2 -k gthread --threads 8 \
    -b "127.0.0.1:$http_port" --chdir bench/python flask_app:app &
  gunicorn_pid=$!
  until curl -s -o /dev/null "http://127.0.0.1:$http_port/"; do sleep 0.2; done
  wrk -t2 -c64 -d3s -s bench/wrk/api_key.lua "http://127.0.0.1:$http_port/" >/dev/null
  wrk -t2 -c64 -d10s --latency -s bench/wrk/api_key.lua "http://127.0.0.1:$http_port/" > "$dir/wrk.txt"
  rps=$(awk '/Requests\/sec/ {print $2}' "$dir/wrk.txt")
  p50=$(awk '$1 == "50%" {print $2}' "$dir/wrk.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$dir/wrk.txt")
  non2xx=$(awk '/Non-2xx/ {print $5}' "$dir/wrk.txt")
  echo "{\"bench\": \"python-flask\", \"case\": \"$mode\", \"requests_per_s\": $rps, \"p50\": \"$p50\", \"p99\": \"$p99\", \"non_2xx\": ${non2xx:-0}}"
  kill "$gunicorn_pid"; wait "$gunicorn_pid" 2>/dev/null || true; gunicorn_pid=
done
