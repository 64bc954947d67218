#!/usr/bin/env bash
# Does the tracker count every cached answer at dnsperf's full rate? The proxy (BINARY) with nsd
# behind it on peers.sh's 1,000 service names: a warm-up pass over the names, then dnsperf -c 8
# -q 100 for DUR seconds (default 10); prints the queries dnsperf sent and had answered, the
# requests and lookups the proxy's /metrics counts, the lookups in /report, and the tracker's
# dropped and shed events. Every answer should be one lookup, none dropped.
#
#   benches/hit_counts.sh BINARY
#
# Needs nsd, dnsperf, curl. Loopback only (ports 5491-5493).
set -euo pipefail
bin=$(realpath "$1")
dur=${DUR:-10}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
export NAMES=1000
# shellcheck source=benches/bench_upstream.sh
. "$(dirname "$0")/bench_upstream.sh"
bench_upstream "$dir" 5491
"$bin" proxy --listen 127.0.0.1:5492 --upstream 127.0.0.1:5491 --admin 127.0.0.1:5493 >"$dir/proxy.log" 2>&1 &
for _ in $(seq 1 50); do
  curl -sf 127.0.0.1:5493/metrics >/dev/null 2>&1 && break
  sleep 0.1
done
dnsperf -s 127.0.0.1 -p 5492 -d "$dir/queries" -n 1 -c 8 -q 100 >/dev/null 2>&1
dnsperf -s 127.0.0.1 -p 5492 -d "$dir/queries" -l "$dur" -c 8 -q 100 >"$dir/dnsperf.txt" 2>&1
curl -sf 127.0.0.1:5493/report >"$dir/report.json"
curl -sf 127.0.0.1:5493/metrics >"$dir/metrics.txt"
awk '/Queries sent/ {print "dnsperf sent", $3} /Queries completed/ {print "dnsperf answered", $3}' "$dir/dnsperf.txt"
awk '/^ndots_dns_requests_total/ {r += $2} /^ndots_lookups_total/ {l += $2}
     /^ndots_tracker_dropped_events_total/ {d = $2} /^ndots_tracker_shed_events_total/ {s = $2}
     END {print "requests (warm-up included)", r; print "lookups in /metrics", l
          print "events dropped", d; print "events shed", s}' "$dir/metrics.txt"
python3 -c 'import json, sys; print("lookups in /report", json.load(open(sys.argv[1]))["lookups"])' "$dir/report.json"
