# Sourced by the proxy benches: `bench_upstream DIR PORT` writes the zone `bench.test`
# (www.bench.test A 192.0.2.1) and an nsd config into DIR, starts nsd on 127.0.0.1:PORT in the
# background (rate limiting off, as load needs) and writes the one-line dnsperf input DIR/queries.
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
CONF
  nsd -d -c "$dir/nsd.conf" >/dev/null 2>&1 &
  printf 'www.bench.test A\n' >"$dir/queries"
}
