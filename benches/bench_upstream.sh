# Sourced by the proxy benches: `bench_upstream DIR PORT` writes the zone `bench.test`
# (www.bench.test A 192.0.2.1) and an nsd config into DIR, starts nsd on 127.0.0.1:PORT in the
# background (rate limiting off, as load needs) and writes the dnsperf input DIR/queries: the one
# line `www.bench.test A`, or with NAMES=N the service names svc-0 .. svc-(N-1) of namespace
# `default` (zone cluster.local) in turn, as ../shared/bench/peers.sh's hit workloads ask 1,000
# (the per-name costs of cache and tracker then show, and the tracker reads each name's search
# suffix as it does a pod's).
bench_upstream() {
  local dir=$1 port=$2
  cat >"$dir/zone" <<ZONE
\$ORIGIN bench.test.
\$TTL 3600
@ IN SOA ns hostmaster 1 7200 1800 86400 60
@ IN NS ns
ns IN A 192.0.2.53
www IN A 192.0.2.1
ZONE
  local i names=${NAMES:-1}
  { echo "\$ORIGIN cluster.local."; echo "\$TTL 3600"
    echo "@ IN SOA ns hostmaster 1 7200 1800 86400 60"; echo "@ IN NS ns.bench.test."
    for ((i = 0; i < names; i++)); do
      echo "svc-$i.default.svc IN A 10.$((i / 62500 % 256)).$((i / 250 % 250)).$((i % 250 + 1))"
    done
  } >"$dir/cluster.zone"
  cat >"$dir/nsd.conf" <<CONF
server:
    ip-address: 127.0.0.1
    port: $port
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
zone:
    name: cluster.local
    zonefile: cluster.zone
CONF
  nsd -d -c "$dir/nsd.conf" >/dev/null 2>&1 &
  if [ "$names" -gt 1 ]; then
    for ((i = 0; i < names; i++)); do echo "svc-$i.default.svc.cluster.local A"; done >"$dir/queries"
  else
    printf 'www.bench.test A\n' >"$dir/queries"
  fi
}

# `dnsdist_config FILE PORT UPSTREAM_PORT` writes a dnsdist config as ../shared/bench/peers.sh's
# dnsdist-1t-mmsg: one UDP thread on 127.0.0.1:PORT, recvmmsg/sendmmsg of 64, a packet cache, the
# upstream forced up (no health-check traffic).
dnsdist_config() {
  cat >"$1" <<CONF
setSecurityPollSuffix('')
setLocal('127.0.0.1:$2', {reusePort=true})
setUDPMultipleMessagesVectorSize(64)
newServer({address='127.0.0.1:$3', name='up'}):setUp()
pc = newPacketCache(100000, {maxTTL=86400, minTTL=0, temporaryFailureTTL=60, staleTTL=60, dontAge=false})
getPool(''):setCache(pc)
CONF
}

# `hit_proxy DIR BINARY UPSTREAM_PORT PORT`: nsd with peers.sh's 1,000 hit names on
# 127.0.0.1:UPSTREAM_PORT (`bench_upstream`, queries in DIR/queries), the proxy BINARY on
# 127.0.0.1:PORT in front of it, its cache warmed by two dnsperf passes; the proxy's PID is left
# in `proxy_pid`. Both run in the background: the caller's EXIT trap stops them. Fails, saying
# why, when the proxy did not start or answered none of the warming queries.
hit_proxy() {
  NAMES=1000 bench_upstream "$1" "$3" >/dev/null 2>&1
  sleep 1
  "$2" proxy --listen "127.0.0.1:$4" --upstream "127.0.0.1:$3" --admin 127.0.0.1:0 \
    >/dev/null 2>&1 &
  proxy_pid=$!
  sleep 1
  kill -0 "$proxy_pid" || { echo "hit_proxy: $2 did not start" >&2; return 1; }
  local warmed
  warmed=$(dnsperf -s 127.0.0.1 -p "$4" -d "$1/queries" -n 2 -c 1 -q 20 -t 2 2>&1 |
    awk '/Queries completed/ {print $3}') || true
  [ "${warmed:-0}" -gt 0 ] || { echo "hit_proxy: no answer from $2 on port $4" >&2; return 1; }
}
