#!/usr/bin/env bash
# Latency at 10k QPS of cached answers, the proxy against dnsdist, in many short windows taken
# in turn (shuffled each round), with the host's steal time for each window: on a shared VM a
# single 10 ms steal of a vCPU delays ~100 of a window's 100,000 queries, which is its p99.9.
# ../shared/bench/peers.sh's hit-lat compares 3 windows of each; this compares the windows
# the host left alone (steal 0-3 ticks) and shows how many there were.
#
#   benches/lat_windows.sh ROUNDS NAME=BINARY [NAME=BINARY ...]
#   LAT_DUR=10 benches/lat_windows.sh 6 base=/tmp/ndots-old new=target/release/ndots
#
# Each server alone answers dnsperf -c 8 -Q 10000 -v for LAT_DUR s (default 10) of peers.sh's
# hit names (1,000 cached service names, nsd behind), after two warming passes; dnsdist is
# peers.sh's dnsdist-1t-mmsg. One line a window: round, server, steal ticks (USER_HZ, from
# /proc/stat, the whole host), p50/p99/p99.9 in µs (nearest rank, as peers.sh). Loopback only;
# needs nsd, dnsperf, dnsdist.
#
# CAPTURE=1 also captures each window on loopback (dumpcap) and adds the server's own time,
# from a query on the wire to its answer on the wire (kernel timestamps, paired by client port
# and ID; tshark), as srv_p50/srv_p99/srv_p999/srv_max µs: what the server and its wake-ups
# added, without dnsperf's own waits for a CPU.
set -euo pipefail
rounds=$1
shift
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
export NAMES=1000
. "$(dirname "$0")/bench_upstream.sh"
bench_upstream "$dir" 5391 >/dev/null 2>&1
dnsdist_config "$dir/dnsdist.conf" 5393 5391
dnsdist --supervised --disable-syslog -C "$dir/dnsdist.conf" >/dev/null 2>&1 &
declare -A port_of=([dnsdist]=5393)
port=5400
for spec in "$@"; do
  name=${spec%%=*}
  bin=$(realpath "${spec#*=}")
  port=$((port + 1))
  port_of[$name]=$port
  "$bin" proxy --listen "127.0.0.1:$port" --upstream 127.0.0.1:5391 --admin 127.0.0.1:0 \
    >"$dir/$name.log" 2>&1 &
done
sleep 2
steal() { awk '/^cpu /{print $9}' /proc/stat; }
# The server's time per answered query in the window just captured on port $1: the answer's
# timestamp minus its query's, paired by (client port, DNS ID); a query sent again before its
# answer (an ID reused by dnsperf) pairs with its latest sending.
server_time() {
  sleep 1
  kill -INT "$cap"
  wait "$cap" || true
  tshark -r "$dir/cap.pcap" -T fields -e frame.time_epoch -e udp.srcport -e udp.dstport \
    -e dns.id -e dns.flags.response 2>/dev/null |
    awk -v p="$1" '
      $5 == 0 && $3 == p { sent[$2 " " $4] = $1; next }
      $5 == 1 && $2 == p && (($3 " " $4) in sent) {
        printf "%d\n", ($1 - sent[$3 " " $4]) * 1e6; delete sent[$3 " " $4] }' |
    sort -n | awk '{v[NR]=$1} function pct(q, i) { i = int(NR*q); if (i < NR*q) i++; return v[i] }
      END { printf " srv_p50=%d srv_p99=%d srv_p999=%d srv_max=%d srv_n=%d",
        pct(0.5), pct(0.99), pct(0.999), v[NR], NR }'
}
for r in $(seq "$rounds"); do
  for name in $(printf '%s\n' "${!port_of[@]}" | shuf); do
    p=${port_of[$name]}
    dnsperf -s 127.0.0.1 -p "$p" -d "$dir/queries" -n 2 -c 1 -q 20 -t 2 >/dev/null 2>&1
    if [ "${CAPTURE:-0}" = 1 ]; then
      dumpcap -q -i lo -B 256 -f "udp port $p" -w "$dir/cap.pcap" >/dev/null 2>&1 &
      cap=$!
      sleep 1
    fi
    s0=$(steal)
    dnsperf -s 127.0.0.1 -p "$p" -d "$dir/queries" -l "${LAT_DUR:-10}" -c 8 -Q 10000 -v \
      >"$dir/dp.txt" 2>&1
    s1=$(steal)
    echo "r$r $name steal=$((s1 - s0)) $(awk '/^> / && $NF ~ /^[0-9.]+$/ {print $NF*1e6}' "$dir/dp.txt" |
      sort -n | awk '{v[NR]=$1} function pct(q, i) { i = int(NR*q); if (i < NR*q) i++; return v[i] }
        END { printf "p50=%d p99=%d p999=%d n=%d", pct(0.5), pct(0.99), pct(0.999), NR }')$(
      [ "${CAPTURE:-0}" = 1 ] && server_time "$p")"
  done
done
