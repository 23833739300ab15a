#!/usr/bin/env bash
# How Redis cost grows with the clients tracked: one node and a 3-master cluster, both started
# by the bench on free ports, at 100 000, 1 000 000 and 10 000 000 clients.
#
#   bench/redis-scale.sh [CLIENTS=100000,1000000,10000000]   # about 10 minutes; run it alone
#
# Per topology and client count: used_memory per client (one gcra state each), fill rate through
# RedisStore, decisions/s for random clients with 64 callers, p50, p99, and Redis CPU per
# decision in all and per master (INFO commandstats).
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE_CLIENTS=${1:-100000,1000000,10000000} cargo bench -q -p floodwall --bench redis_scale
