#!/usr/bin/env bash
# CPU per cached answer with server.udp_segmentation on and off, on one binary, in turn:
# peers.sh's hit-max names (1,000 cached service names, nsd behind), dnsperf -c CLIENTS -q 100
# for 8 s; utime and stime of the proxy (/proc/PID/stat) over the run divided by the answers.
# With 8 clients a receive batch holds several queries of each client socket (answers to group);
# with 200 it holds mostly one each (the cost of planning groups for nothing).
#
#   benches/udp_segmentation.sh BINARY [CLIENTS] [RUNS]    # defaults: 8 clients, 3 pairs
#
# Needs nsd, dnsperf. Loopback only (ports 5391-5392).
set -euo pipefail
bin=$(realpath "$1")
clients=${2:-8}
runs=${3:-3}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
export NAMES=1000
# shellcheck source=benches/bench_upstream.sh
. "$(dirname "$0")/bench_upstream.sh"
bench_upstream "$dir" 5391

one() { # true|false
  printf 'listen: ["127.0.0.1:5392"]\nadmin: "127.0.0.1:0"\nupstreams: [{zone: ., servers: ["127.0.0.1:5391"]}]\nserver: {udp_segmentation: %s}\n' "$1" >"$dir/proxy.yaml"
  "$bin" proxy --config "$dir/proxy.yaml" >"$dir/proxy.log" 2>&1 &
  local pid=$! u0 s0 u1 s1 comp qps
  sleep 1
  dnsperf -s 127.0.0.1 -p 5392 -d "$dir/queries" -n 2 -c 1 -q 20 -t 2 >/dev/null 2>&1
  read -r u0 s0 < <(cut -d')' -f2 /proc/$pid/stat | awk '{print $12, $13}')
  dnsperf -s 127.0.0.1 -p 5392 -d "$dir/queries" -l 8 -c "$clients" -q 100 >"$dir/dnsperf.txt" 2>&1
  read -r u1 s1 < <(cut -d')' -f2 /proc/$pid/stat | awk '{print $12, $13}')
  kill $pid
  wait $pid 2>/dev/null || true
  comp=$(awk '/Queries completed/ {print $3}' "$dir/dnsperf.txt")
  qps=$(awk '/Queries per second/ {print int($4)}' "$dir/dnsperf.txt")
  awk -v l="$1" -v q="$qps" -v n="$comp" -v u=$((u1 - u0)) -v s=$((s1 - s0)) 'BEGIN {
    printf "segmentation %-5s qps %7d  user %.3f  sys %.3f  total %.3f us/answer\n", l, q, u*1e4/n, s*1e4/n, (u+s)*1e4/n }'
}

for _ in $(seq 1 "$runs"); do
  one true
  one false
done
