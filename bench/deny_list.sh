#!/usr/bin/env bash
# A limited route with 0, 1 000 and 10 000 deny-listed networks, in one run, with wrk -t2 -c64
# on loopback: every request is screened against the deny list (its client is in none of the
# networks, so every request is answered 200), so the figures show what the list's size costs
# each request. The networks are listed through the admin API, as an operator would list them
# (the configuration file takes at most half the bound).
#
#   bench/deny_list.sh [ROUNDS=2] [SECONDS=6]    # run it alone; needs wrk (a Debian package)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
seconds=${2:-6}
command -v wrk >/dev/null || { echo "bench/deny_list.sh needs wrk (apt-get install -y wrk)" >&2; exit 1; }
dir=$(mktemp -d)
port=${FLOODWALL_PORT:-8394}
admin_port=${ADMIN_PORT:-8395}
fpid=
cleanup() {
  [ -n "$fpid" ] && kill "$fpid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

cargo build -q --release -p floodwall-server
cat > "$dir/floodwall.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[admin]
listen = "127.0.0.1:$admin_port"
[[policy]]
name = "high"
algorithm = "gcra"
limit = 1000000000
period = "1s"
[[route]]
match = "GET /"
key = "ip"
policies = ["high"]
respond = { status = 200, json = { message = "hello" } }
TOML

# Lists `count` distinct networks (a third each /24, /28 and /32, all in 10.0.0.0/8) over one
# keep-alive connection.
list_networks() {
  python3 - "$admin_port" "$1" <<'PY'
import http.client, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
connection = http.client.HTTPConnection("127.0.0.1", port)
for i in range(count):
    high, low = i // 256, i % 256
    network = [
        f"10.{1 + high}.{low}.0%2F24",
        f"10.{100 + high}.{low}.7",
        f"10.{150 + high}.{low}.16%2F28",
    ][i % 3]
    connection.request("PUT", f"/v1/lists/deny/{network}")
    answer = connection.getresponse()
    answer.read()
    if answer.status != 200:
        sys.exit(f"listing {network}: {answer.status}")
PY
}

# shellcheck source=bench/lib/wrk.sh
. bench/lib/wrk.sh
for round in $(seq 1 "$rounds"); do
  for networks in 0 1000 10000; do
    RUST_LOG=warn target/release/floodwall serve --config "$dir/floodwall.toml" > "$dir/floodwall.log" 2>&1 &
    fpid=$!
    until curl -s -o /dev/null "http://127.0.0.1:$port/healthz"; do sleep 0.1; done
    list_networks "$networks"
    listed=$(curl -s "http://127.0.0.1:$admin_port/v1/lists" | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["deny"]))')
    [ "$listed" = "$networks" ] || { echo "listed $listed networks, not $networks" >&2; exit 1; }
    wrk_measure "\"bench\": \"deny_list\", \"round\": $round, \"networks\": $networks" \
      "http://127.0.0.1:$port/" "$fpid"
    kill "$fpid"; wait "$fpid" 2>/dev/null || true
    fpid=
  done
done
