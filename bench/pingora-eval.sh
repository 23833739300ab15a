#!/usr/bin/env bash
# The evaluation of pingora-proxy for floodwall's proxied routes, in one run, wrk -t2 -c64 on
# loopback, every proxy in front of the same trivial upstream (nginx `return 200`):
#   upstream        the upstream alone
#   nginx-ip-high   nginx limit_req per IP (the anchors' configuration), nothing denied
#   floodwall       floodwall's proxied route: gcra per IP, memory store, nothing denied
#   pingora         bench/pingora-eval: the same check on pingora-proxy, nothing denied
#   pingora-per-core  the same on pingora's thread-per-core runtime (no work stealing)
# Each line gives the proxy's own CPU time per request (for nginx: its workers, which also serve
# the upstream).
#
#   bench/pingora-eval.sh [ROUNDS=2] [SECONDS=6]    # run it alone; needs nginx, wrk and cmake
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
seconds=${2:-6}
anchors=$(cd "${ANCHORS:-../shared/bench-anchors}" && pwd)
dir=$(mktemp -d)
nginx_port=${NGINX_PORT:-8390}
upstream_port=${UPSTREAM_PORT:-8391}
floodwall_port=${FLOODWALL_PORT:-8392}
pingora_port=${PINGORA_PORT:-8394}
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$dir/nginx.pid" ] && kill -QUIT "$(cat "$dir/nginx.pid")" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

mkdir -p "$dir/tmp"
sed -e "s#@NGINX_DIR@#$dir#g" -e "s#@NGINX_PORT@#$nginx_port#g" -e "s#@UPSTREAM_PORT@#$upstream_port#g" \
  "$anchors/nginx/nginx.conf.tmpl" > "$dir/nginx.conf"
nginx -p "$dir" -c "$dir/nginx.conf" -g 'error_log stderr crit;'
until curl -fsS "http://127.0.0.1:$upstream_port/" >/dev/null 2>&1; do sleep 0.1; done

cargo build -q --release -p floodwall-server
(cd bench/pingora-eval && cargo build -q --release)
cat > "$dir/floodwall.toml" <<TOML
[server]
listen = "127.0.0.1:$floodwall_port"
[[policy]]
name = "high"
algorithm = "gcra"
limit = 1000000000
period = "1s"
[[route]]
match = "GET /*"
key = "ip"
policies = ["high"]
upstream = "http://127.0.0.1:$upstream_port"
TOML
RUST_LOG=warn target/release/floodwall serve --config "$dir/floodwall.toml" > "$dir/floodwall.log" 2>&1 &
floodwall_pid=$!
pids+=("$floodwall_pid")
bench/pingora-eval/target/release/pingora-eval "127.0.0.1:$pingora_port" "127.0.0.1:$upstream_port" \
  > "$dir/pingora.log" 2>&1 &
pingora_pid=$!
pids+=("$pingora_pid")
until curl -fsS -o /dev/null "http://127.0.0.1:$floodwall_port/x" && curl -fsS -o /dev/null "http://127.0.0.1:$pingora_port/x"; do
  sleep 0.1
done

# shellcheck source=bench/lib/wrk.sh
. bench/lib/wrk.sh
measure() { # name url "pids"
  wrk_measure "\"bench\": \"pingora-eval\", \"round\": $round, \"case\": \"$1\"" "$2" "$3" \
    -s "$anchors/nginx/random_key.lua"
}

nginx_workers=$(pgrep -P "$(cat "$dir/nginx.pid")" | tr '\n' ' ')
for round in $(seq 1 "$rounds"); do
  measure upstream "http://127.0.0.1:$upstream_port/" "$nginx_workers"
  measure nginx-ip-high "http://127.0.0.1:$nginx_port/ip-high" "$nginx_workers"
  measure floodwall "http://127.0.0.1:$floodwall_port/proxied" "$floodwall_pid"
  measure pingora "http://127.0.0.1:$pingora_port/proxied" "$pingora_pid"
done
# pingora again on its thread-per-core runtime (no work stealing).
kill "$pingora_pid"; wait "$pingora_pid" 2>/dev/null || true
PINGORA_WORK_STEALING=0 bench/pingora-eval/target/release/pingora-eval "127.0.0.1:$pingora_port" \
  "127.0.0.1:$upstream_port" > "$dir/pingora.log" 2>&1 &
pingora_pid=$!
pids+=("$pingora_pid")
until curl -fsS -o /dev/null "http://127.0.0.1:$pingora_port/x"; do sleep 0.1; done
for round in $(seq 1 "$rounds"); do
  measure pingora-per-core "http://127.0.0.1:$pingora_port/proxied" "$pingora_pid"
done
