#!/usr/bin/env bash
# In-memory decision cost and memory per key, beside governor, in one session.
#
#   bench/memory.sh            # ~10 minutes on 2 cores; run it alone
#
# 1. resident bytes per tracked key at 1 000 000 keys, per algorithm, and for gcra at 10 000
#    and 10 000 000 keys too;
# 2. criterion: MemoryStore per algorithm and governor's keyed limiter in the same process,
#    1 key and 10 000 random keys, 1 and 2 threads; then gcra and governor at 10 000,
#    1 000 000 and 10 000 000 random keys (1 thread);
# 3. the shared governor anchor (../shared/bench-anchors/governor-bench), if present.
set -euo pipefail
cd "$(dirname "$0")/.."
anchors=${ANCHORS:-../shared/bench-anchors}

cargo bench -q -p floodwall --bench memory_per_key
for keys in 10000 10000000; do
  PER_KEY_KEYS=$keys cargo bench -q -p floodwall --bench memory_per_key -- gcra
done
cargo bench -q -p floodwall --bench memory -- --noplot 2>&1 |
  awk '/^(check|scale)\// {name=$1} /^ +time:/ && !/%/ {print name, $(NF-3), $(NF-2)}'

if [ -d "$anchors/governor-bench" ]; then
  (cd "$anchors/governor-bench" && CARGO_TARGET_DIR=/tmp/anchors-target cargo build --release -q)
  /tmp/anchors-target/release/governor-bench 2 3 2>&1 >/dev/null | grep SUMMARY
fi
