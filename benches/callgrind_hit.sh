#!/usr/bin/env bash
# Instructions per cache-hit answer, counted by callgrind (repeatable whatever the machine's
# load, unlike QPS on this shared VM): the release proxy under valgrind, one cached name asked
# N times by dnsperf at a fixed rate, nsd behind it for the one miss.
#
#   benches/callgrind_hit.sh BINARY [BINARY...]   # prints instructions per answered query
#
# Needs valgrind, nsd, dnsperf (scripts/test.sh installs the last two). Loopback only.
set -euo pipefail
QUERIES="${QUERIES:-30000}"
RATE="${RATE:-1500}"
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
cat >"$dir/zone" <<ZONE
\$ORIGIN bench.test.
\$TTL 3600
@ IN SOA ns hostmaster 1 7200 1800 86400 60
@ IN NS ns
ns IN A 192.0.2.53
www IN A 192.0.2.1
ZONE
cat >"$dir/nsd.conf" <<CONF
server:
    ip-address: 127.0.0.1
    port: 5391
    username: ""
    chroot: ""
    zonesdir: "$dir"
    zonelistfile: "$dir/zone.list"
    database: ""
    xfrdfile: "$dir/xfrd.state"
    pidfile: "$dir/nsd.pid"
    rrl-ratelimit: 0
    do-ip6: no
remote-control:
    control-enable: no
zone:
    name: bench.test
    zonefile: zone
CONF
nsd -d -c "$dir/nsd.conf" >/dev/null 2>&1 &
sleep 1
printf 'www.bench.test A\n' >"$dir/queries"
for bin in "$@"; do
  out="$dir/callgrind.out"
  valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$bin" proxy --listen 127.0.0.1:5392 --upstream 127.0.0.1:5391 --admin 127.0.0.1:0 \
    >/dev/null 2>&1 &
  vg=$!
  # Wait for the proxy to answer (valgrind starts slowly), which also fills the cache.
  for _ in $(seq 1 60); do
    dig +short +time=1 +tries=1 -p 5392 @127.0.0.1 www.bench.test >/dev/null 2>&1 && break
    sleep 1
  done
  answered=$(dnsperf -s 127.0.0.1 -p 5392 -d "$dir/queries" -n "$QUERIES" -Q "$RATE" 2>/dev/null |
    awk '/Queries completed/ {print $3}')
  kill -INT $vg; wait $vg || true
  total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
  echo "$bin: $total instructions, $answered answered, $((total / answered)) per answer"
done
