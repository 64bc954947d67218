#!/usr/bin/env bash
# Each of the proxy's threads' CPU and context switches at a fixed rate of cached answers:
# dnsperf -c 8 -Q RATE for SECS s of ../shared/bench/peers.sh's hit names (1,000 cached service
# names, nsd behind), after two warming passes; per thread name, utime+stime
# (/proc/PID/task/*/stat) and voluntary / involuntary switches over the run, with dnsperf's
# average latency. Loopback only; needs nsd, dnsperf.
#
#   benches/threads_at_rate.sh BINARY [RATE=10000] [SECS=10]
set -euo pipefail
bin=$(realpath "$1")
rate=${2:-10000}
secs=${3:-10}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
. "$(dirname "$0")/bench_upstream.sh"
hit_proxy "$dir" "$bin" 5591 5592
pid=$proxy_pid
clk=$(getconf CLK_TCK)
# thread name, CPU ticks, voluntary and involuntary switches, summed over threads of one name
snap() {
  for t in /proc/"$pid"/task/*; do
    printf '%s %s %s\n' "$(tr ' ' _ <"$t/comm")" "$(awk '{print $14 + $15}' "$t/stat")" \
      "$(awk '/^voluntary_ctxt/ {v = $2} /^nonvoluntary_ctxt/ {n = $2} END {print v, n}' "$t/status")"
  done | awk '{c[$1] += $2; v[$1] += $3; n[$1] += $4} END {for (k in c) print k, c[k], v[k], n[k]}' |
    LC_ALL=C sort -k1,1
}
snap >"$dir/before"
dnsperf -s 127.0.0.1 -p 5592 -d "$dir/queries" -l "$secs" -c 8 -Q "$rate" >"$dir/dp.txt" 2>&1
snap >"$dir/after"
answered=$(awk '/Queries completed/ {print $3}' "$dir/dp.txt")
[ "${answered:-0}" -gt 0 ] || { echo "no answers: $(cat "$dir/dp.txt")" >&2; exit 1; }
echo "$(basename "$bin") rate=$rate answered=$answered avg_latency_s=$(awk '/Average Latency/ {print $4}' "$dir/dp.txt")"
# a thread that came or went during the run counts from zero or to zero
LC_ALL=C join -a1 -a2 -e0 -o 0,1.2,1.3,1.4,2.2,2.3,2.4 "$dir/before" "$dir/after" | awk -v k="$clk" -v n="$answered" '
  { ms = ($5 - $2) * 1000 / k
    printf "  %-16s cpu_ms=%d us_per_answer=%.2f voluntary=%d involuntary=%d\n", $1, ms, ms * 1000 / n, $6 - $3, $7 - $4 }'
