# Shared by the bench scripts that load floodwall's RateLimitService: source it after
# bench/lib/wrk.sh (for cpu_ticks), with `http` and `port` set.

wait_port() { for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# floodwall's configuration on the store URL $1: the same limit as limitador-limits.yaml,
# 1 000 000 per 60 s per remote_address, never reached.
rls_config() {
  cat <<TOML
[server]
listen = "127.0.0.1:$http"
[storage]
url = "$1"
[[policy]]
name = "per-address"
algorithm = "${ALGORITHM:-fixed_window}"
limit = 1000000
period = "60s"
[rls]
listen = "127.0.0.1:$port"
[[rls.rule]]
domain = "edge"
descriptor = ["remote_address"]
policies = ["per-address"]
TOML
}

# with_cpu_per_call LINE TICKS: LINE (a load generator's JSON, with its "ok" calls) with the
# server's CPU per call added, from the TICKS of CPU it used meanwhile.
with_cpu_per_call() {
  local calls
  calls=$(echo "$1" | sed -E 's/.*"ok": ([0-9]+).*/\1/')
  awk -v line="$1" -v t="$2" -v hz="$(getconf CLK_TCK)" -v n="$calls" \
    'BEGIN { sub(/}$/, "", line); printf "%s, \"server_cpu_us_per_call\": %.1f}\n", line, t * 1e6 / hz / n }'
}
