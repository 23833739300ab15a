#!/usr/bin/env bash
# What OpenTelemetry costs the service: the check API (one gcra policy, never reached, one of
# 10 000 random keys, wrk -t2 -c64 on loopback, memory store) with [telemetry] absent, then
# exporting to a collector (benches/otlp_sink.rs, which counts and drops) at sampling 0
# (metrics only), 1 % and 100 %. One JSON line per case: requests/s, p50/p99, the server's CPU
# per request, and the spans the collector received.
#
#   bench/telemetry.sh [SECONDS=6]     # run it alone; needs wrk
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-6}
port=${FLOODWALL_PORT:-8395}; sink_port=${OTLP_PORT:-14317}
command -v wrk >/dev/null || { echo "bench/telemetry.sh needs wrk (apt-get install -y wrk)" >&2; exit 1; }
cargo build -q --release -p floodwall-server
cargo bench -q -p floodwall-server --bench otlp_sink --no-run 2>/dev/null
sink_binary=$(ls -t target/release/deps/otlp_sink-* | grep -v '\.d$' | head -1)
dir=$(mktemp -d)
"$sink_binary" --listen "127.0.0.1:$sink_port" > "$dir/sink.log" &
sink=$!
server=""
trap 'kill $sink $server 2>/dev/null || true; rm -rf "$dir"' EXIT
seconds=$secs
# shellcheck source=bench/lib/wrk.sh
. bench/lib/wrk.sh

spans() { tail -1 "$dir/sink.log" | sed -n 's/.*"spans": \([0-9]*\).*/\1/p'; }

for case in absent 0 0.01 1; do
  {
    printf '[server]\nlisten = "127.0.0.1:%s"\n[storage]\nurl = "memory://"\n' "$port"
    printf '[[policy]]\nname = "p1"\nalgorithm = "gcra"\nlimit = 1000000000\nperiod = "1s"\n'
    if [ "$case" != absent ]; then
      printf '[telemetry]\nendpoint = "http://127.0.0.1:%s"\nsampling_ratio = %s\n' "$sink_port" "$case"
    fi
  } > "$dir/floodwall.toml"
  RUST_LOG=warn target/release/floodwall serve --config "$dir/floodwall.toml" > "$dir/floodwall.log" 2>&1 &
  server=$!
  for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  sleep 1
  before=$(spans)
  line=$(POLICIES=1 wrk_measure "\"bench\": \"telemetry\", \"sampling\": \"$case\"" \
    "http://127.0.0.1:$port/v1/check" "$server" -s bench/wrk/check_policies.lua)
  sleep 1.5   # the last batch of spans
  echo "${line%\}}, \"spans_received\": $(( $(spans) - before ))}"
  kill "$server"; wait "$server" 2>/dev/null || true
  server=""
done
