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
# /proc/stat, the whole host), p50/p99/p99.9 and max in µs (nearest rank, as peers.sh) and the
# count of answers. Loopback only;
# needs nsd, dnsperf, dnsdist.
#
# CAPTURE=1 also captures each window on loopback (dumpcap) and adds the server's own time,
# from a query on the wire to its answer on the wire (kernel timestamps, paired by client port
# ID and name; tshark), as srv_p50/srv_p99/srv_p999/srv_max µs over srv_n answers: what the
# server and its wake-ups added, without dnsperf's own waits for a CPU; with the queries whose
# answer the capture lacks, answers without a query, and packets dropped by the capture.
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
# `percentiles PREFIX`: p50, p99 and p99.9 (nearest rank, as peers.sh), max and count of the
# values on stdin, in µs, each name after PREFIX.
percentiles() {
  sort -n | awk -v pre="$1" '{v[NR]=$1} function pct(q, i) { i = int(NR*q); if (i < NR*q) i++; return v[i] }
    END { if (NR == 0) { printf "%sn=0", pre; exit }
      printf "%sp50=%.0f %sp99=%.0f %sp999=%.0f %smax=%.0f %sn=%d",
        pre, pct(0.5), pre, pct(0.99), pre, pct(0.999), pre, v[NR], pre, NR }'
}
# The server's time per answer in the window just captured on port $1: the answer's capture
# time minus its query's, paired by client port, DNS ID and name (the direction from the ports;
# the port decoded as DNS whatever tshark guesses for it). Also counted: queries whose answer is
# not in the capture (their sending seen again, or never answered), answers without their query,
# and the packets the kernel or dumpcap dropped ($dir/cap.err); a window that lost packets says
# so, and its figures are of the pairs it kept.
server_time() {
  tshark -r "$dir/cap.pcap" -d "udp.port==$1,dns" -T fields -e frame.time_relative \
    -e udp.srcport -e udp.dstport -e dns.id -e dns.qry.name 2>/dev/null |
    awk -v p="$1" -v out="$dir/srv.txt" '
      $3 == p { k = $2 " " $4 " " $5; if (k in sent) lost++; sent[k] = $1; next }
      $2 == p { k = $3 " " $4 " " $5
        if (k in sent) { printf "%.1f\n", ($1 - sent[k]) * 1e6 > out; delete sent[k] } else stray++ }
      END { for (k in sent) lost++; printf "%d %d\n", lost, stray }' >"$dir/unpaired.txt"
  local drops
  drops=$(sed -n "s/.*received\/dropped on interface.*: [0-9]*\/\([0-9]*\) .*/\1/p" "$dir/cap.err")
  printf ' '
  percentiles srv_ <"$dir/srv.txt"
  printf ' unanswered=%s stray=%s dropped=%s' $(cat "$dir/unpaired.txt") "${drops:-?}"
}
for r in $(seq "$rounds"); do
  for name in $(printf '%s\n' "${!port_of[@]}" | shuf); do
    p=${port_of[$name]}
    dnsperf -s 127.0.0.1 -p "$p" -d "$dir/queries" -n 2 -c 1 -q 20 -t 2 >/dev/null 2>&1
    if [ "${CAPTURE:-0}" = 1 ]; then
      rm -f "$dir/cap.pcap"
      : >"$dir/srv.txt"
      dumpcap -i lo -B 32 -f "udp port $p" -w "$dir/cap.pcap" 2>"$dir/cap.err" &
      cap=$!
      # dumpcap says "Capturing on" before its ring is ready: with a 256 MB ring (-B 256) the
      # first 0.5-0.9 s of a window were missing, with 32 MB none (and none dropped at 20k
      # packets/s).
      for _ in $(seq 100); do
        grep -q "Capturing on" "$dir/cap.err" && break
        kill -0 "$cap" || break
        sleep 0.1
      done
      grep -q "Capturing on" "$dir/cap.err" ||
        { echo "dumpcap did not start: $(cat "$dir/cap.err")" >&2; exit 1; }
      sleep 0.2
    fi
    s0=$(steal)
    dnsperf -s 127.0.0.1 -p "$p" -d "$dir/queries" -l "${LAT_DUR:-10}" -c 8 -Q 10000 -v \
      >"$dir/dp.txt" 2>&1
    s1=$(steal)
    srv=
    if [ "${CAPTURE:-0}" = 1 ]; then
      sleep 1 # the last answers
      kill -INT "$cap"
      wait "$cap" || true
      srv=$(server_time "$p")
    fi
    echo "r$r $name steal=$((s1 - s0)) $(awk '/^> / && $NF ~ /^[0-9.]+$/ {print $NF*1e6}' "$dir/dp.txt" |
      percentiles "")$srv"
  done
done
