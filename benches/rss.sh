#!/usr/bin/env bash
# RSS of `ndots proxy` holding N cached entries (default 100,000), measured in a private network
# namespace with only loopback: nsd serves a wildcard zone on 127.0.0.1:5300, dnsperf asks N
# distinct names once through the proxy, then VmRSS and ndots_cache_entries are read.
#
#   bash benches/rss.sh [N]          # needs root (unshare), nsd, dnsperf; builds release first
set -euo pipefail
N=${1:-100000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/ndots
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release --bin ndots)
if [ "${NDOTS_IN_NS:-}" != 1 ]; then
  exec unshare --net env NDOTS_IN_NS=1 bash "$0" "$@"
fi
ip link set lo up
W=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$W"' EXIT
mkdir -p "$W/zones"
cat >"$W/zones/example.com.zone" <<Z
\$TTL 3600
@ 30 IN SOA ns.example.com. hostmaster.example.com. 1 7200 1800 86400 30
@ IN NS ns.example.com.
ns IN A 127.0.0.1
* IN A 192.0.2.1
Z
cat >"$W/nsd.conf" <<C
server:
  ip-address: 127.0.0.1@5300
  server-count: 1
  username: ""
  chroot: ""
  zonesdir: "$W/zones"
  database: ""
  zonelistfile: "$W/zone.list"
  xfrdfile: "$W/xfrd.state"
  xfrdir: "$W"
  pidfile: "$W/nsd.pid"
  logfile: "$W/nsd.log"
  do-ip6: no
  rrl-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: "example.com"
  zonefile: "example.com.zone"
C
nsd -d -c "$W/nsd.conf" >/dev/null 2>&1 &
# Capacity with headroom so all N names stay (the cache is sharded: a shard that fills evicts
# before the total reaches capacity).
printf 'cache: {capacity: %d}\n' $((N * 12 / 10)) >"$W/ndots.yaml"
"$BIN" proxy --config "$W/ndots.yaml" --listen 127.0.0.1:5353 --admin 127.0.0.1:9255 --upstream 127.0.0.1:5300 2>"$W/proxy.log" &
PROXY=$!
for _ in $(seq 50); do curl -sf 127.0.0.1:9255/readyz >/dev/null 2>&1 && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2}' /proc/$PROXY/status; }
echo "RSS idle: $(( $(rss) / 1024 )) MiB"
seq 1 "$N" | sed 's/.*/name-&.example.com A/' >"$W/q.txt"
dnsperf -s 127.0.0.1 -p 5353 -d "$W/q.txt" -n 1 -c 4 -q 200 -t 5 >"$W/dnsperf.log" 2>&1 || true
grep -E "Queries (sent|completed)" "$W/dnsperf.log" | sed 's/^ */dnsperf: /'
entries=$(curl -s 127.0.0.1:9255/metrics | awk '/^ndots_cache_entries\{type="success"\}/ {print $2}')
echo "cache entries: $entries"
echo "RSS with $entries entries: $(( $(rss) / 1024 )) MiB ($(rss) KiB)"
