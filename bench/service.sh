#!/usr/bin/env bash
# The floodwall service beside nginx limit_req, in one run, with wrk -t2 -c64 on loopback:
#   check     POST /v1/check, 10 000 random keys, nothing denied
#   proxied   a route proxied to a trivial upstream, limited per IP, nothing denied
#   denied    the same kind of route limited to 1/min per random X-Api-Key: nearly all 429
#   nginx-*   nginx limit_req in front of the same upstream (the anchors' configuration)
#   upstream  the trivial upstream alone
# Each line also gives the server's own CPU time per request. nginx serves the upstream in the
# same workers, so its proxy alone costs its nginx-ip-high figure less its upstream figure.
# for the memory store, then for a redis-server started here.
#
#   bench/service.sh [ROUNDS=2] [SECONDS=6]    # run it alone; needs nginx and wrk (Debian packages)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
seconds=${2:-6}
anchors=$(cd "${ANCHORS:-../shared/bench-anchors}" && pwd)
for tool in nginx wrk redis-server; do
  command -v "$tool" >/dev/null || { echo "bench/service.sh needs $tool (apt-get install -y nginx wrk redis-server)" >&2; exit 1; }
done
dir=$(mktemp -d)
nginx_port=${NGINX_PORT:-8390}
upstream_port=${UPSTREAM_PORT:-8391}
floodwall_port=${FLOODWALL_PORT:-8392}
redis_port=${REDIS_PORT:-6393}
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$dir/nginx.pid" ] && kill -QUIT "$(cat "$dir/nginx.pid")" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

# nginx: the rate-limiting proxy and the trivial upstream, exactly as the anchors run them.
mkdir -p "$dir/tmp"
sed -e "s#@NGINX_DIR@#$dir#g" -e "s#@NGINX_PORT@#$nginx_port#g" -e "s#@UPSTREAM_PORT@#$upstream_port#g" \
  "$anchors/nginx/nginx.conf.tmpl" > "$dir/nginx.conf"
nginx -p "$dir" -c "$dir/nginx.conf" -g 'error_log stderr crit;'
until curl -fsS "http://127.0.0.1:$upstream_port/" >/dev/null 2>&1; do sleep 0.1; done

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  --logfile "$dir/redis.log" --dir "$dir" &
pids+=($!)
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.1; done

cargo build -q --release -p floodwall-server
config() {
  cat <<TOML
[server]
listen = "127.0.0.1:$floodwall_port"
[storage]
url = "$1"
[[policy]]
name = "high"
algorithm = "gcra"
limit = 1000000000
period = "1s"
[[policy]]
name = "key-low"
algorithm = "fixed_window"
limit = 1
period = "1m"
[[route]]
match = "GET /proxied"
key = "ip"
policies = ["high"]
upstream = "http://127.0.0.1:$upstream_port"
[[route]]
match = "GET /denied"
key = "header:x-api-key"
policies = ["key-low"]
upstream = "http://127.0.0.1:$upstream_port"
TOML
}

# shellcheck source=bench/lib/wrk.sh
. bench/lib/wrk.sh
measure() { # name url "server pids" [wrk args...]
  local name=$1 url=$2 servers=$3; shift 3
  wrk_measure "\"bench\": \"service\", \"round\": $round, \"store\": \"$store\", \"case\": \"$name\"" "$url" "$servers" "$@"
}

nginx_workers=$(pgrep -P "$(cat "$dir/nginx.pid")" | tr '\n' ' ')
for round in $(seq 1 "$rounds"); do
  store=none
  measure upstream "http://127.0.0.1:$upstream_port/" "$nginx_workers"
  measure nginx-ip-high "http://127.0.0.1:$nginx_port/ip-high" "$nginx_workers" -s "$anchors/nginx/random_key.lua"
  measure nginx-key-low "http://127.0.0.1:$nginx_port/key-low" "$nginx_workers" -s "$anchors/nginx/random_key.lua"
  for store in memory redis; do
    if [ "$store" = memory ]; then url="memory://"; else url="redis://127.0.0.1:$redis_port"; fi
    config "$url" > "$dir/floodwall.toml"
    RUST_LOG=warn target/release/floodwall serve --config "$dir/floodwall.toml" > "$dir/floodwall.log" 2>&1 &
    fpid=$!
    until curl -s -o /dev/null "http://127.0.0.1:$floodwall_port/healthz"; do sleep 0.1; done
    measure check "http://127.0.0.1:$floodwall_port/v1/check" "$fpid" -s bench/wrk/check.lua
    measure proxied "http://127.0.0.1:$floodwall_port/proxied" "$fpid" -s "$anchors/nginx/random_key.lua"
    measure denied "http://127.0.0.1:$floodwall_port/denied" "$fpid" -s "$anchors/nginx/random_key.lua"
    kill "$fpid"; wait "$fpid" 2>/dev/null || true
    redis-cli -p "$redis_port" FLUSHALL >/dev/null
  done
done
