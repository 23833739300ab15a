# Shared by the bench scripts that load an HTTP server with wrk: source it, set `seconds`.

# CPU time (user + system, in clock ticks) used so far by the given processes.
cpu_ticks() {
  local total=0 pid
  for pid in "$@"; do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}

# wrk_measure FIELDS URL "PIDS" [WRK ARGS...]: runs wrk -t2 -c64 for $seconds against URL and
# prints one JSON line: FIELDS (e.g. '"bench": "service", "case": "check"'), requests/s, p50,
# p99, non-2xx answers, and the CPU per request of the processes PIDS (the server's own).
wrk_measure() {
  local fields=$1 url=$2 servers=$3; shift 3
  local out before after
  # shellcheck disable=SC2086 # pid lists are split on purpose
  before=$(cpu_ticks $servers)
  out=$(wrk -t2 -c64 -d"${seconds}s" --latency "$@" "$url")
  # shellcheck disable=SC2086
  after=$(cpu_ticks $servers)
  local rps p50 p99 non2xx requests cpu_us
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  cpu_us=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$requests" \
    'BEGIN { printf "%.1f", t / hz / n * 1e6 }')
  echo "{$fields, \"requests_per_s\": $rps, \"p50\": \"$p50\", \"p99\": \"$p99\", \"non_2xx\": ${non2xx:-0}, \"server_cpu_us_per_request\": $cpu_us}"
}
