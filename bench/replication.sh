#!/usr/bin/env bash
# What Sentinel and wait_replicas cost, and what a failover loses without them, in one run.
#
#   bench/replication.sh [ROUNDS=1]     # about 3 minutes a round on 2 cores; run it alone
#
# The bench starts its own processes (a master with two replicas behind three sentinels; a
# cluster of three masters with a replica each) and prints JSON lines:
#   - floodwall-replication: GCRA decisions, 64 callers, 10 000 keys, to the master directly,
#     through the sentinels, and through them with wait_replicas 1 and 2 (ops/s, p50, p99);
#   - floodwall-failover: a master SIGKILLed under 64 callers, behind Sentinel and on the
#     cluster, wait_replicas 0 and 1: acknowledged admissions lost, in all, keys that lost
#     some, decisions that failed, and how long they failed for (gap_ms).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-1}
cargo bench -q -p floodwall --bench redis_replication --no-run 2>/dev/null
for round in $(seq 1 "$rounds"); do
  echo "# round $round"
  cargo bench -q -p floodwall --bench redis_replication 2>/dev/null
done
