#!/usr/bin/env bash
# Process CPU (user+sys, /proc/PID/stat) of the proxy per answered query at a fixed rate, with
# its context switches: one cached name from dnsperf (4 clients), nsd behind it. Loopback only;
# needs nsd, dnsperf, dig.
#
#   benches/cpu_at_rate.sh BINARY [RATE=10000] [SECS=10]
set -u
bin=$1; rate=${2:-10000}; secs=${3:-10}
dir=$(mktemp -d)
# shellcheck source=benches/bench_upstream.sh
. "$(dirname "$0")/bench_upstream.sh"
bench_upstream "$dir" 5491
nsdpid=$!
"$bin" proxy --listen 127.0.0.1:5492 --upstream 127.0.0.1:5491 --admin 127.0.0.1:0 >/dev/null 2>&1 & pp=$!
sleep 1.5
dig +short -p 5492 @127.0.0.1 www.bench.test >/dev/null
t0=$(awk '{print $14+$15}' /proc/$pp/stat); cs0=$(grep -h ctxt /proc/$pp/task/*/status | awk '{s+=$2} END{print s}')
out=$(dnsperf -s 127.0.0.1 -p 5492 -d "$dir/queries" -l "$secs" -Q "$rate" -c 4 2>/dev/null)
t1=$(awk '{print $14+$15}' /proc/$pp/stat); cs1=$(grep -h ctxt /proc/$pp/task/*/status | awk '{s+=$2} END{print s}')
n=$(echo "$out" | awk '/Queries completed/ {print $3}')
echo "$bin rate=$rate answered=$n cpu_ticks=$((t1-t0)) us_per_answer=$(awk -v t=$((t1-t0)) -v n="$n" -v k="$(getconf CLK_TCK)" 'BEGIN{printf "%.2f", t*1e6/k/n}') ctxsw=$((cs1-cs0)) avg_lat=$(echo "$out" | awk '/Average Latency/ {print $4; exit}')"
kill $pp $nsdpid; wait 2>/dev/null; rm -rf "$dir"
