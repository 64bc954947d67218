#!/usr/bin/env bash
# User and system CPU per cached answer, the proxy against dnsdist, run after run in turn:
# ../shared/bench/peers.sh's hit-max workload (1,000 cached service names, dnsperf -c 8 -q 100
# for 8 s, nsd behind), each server alone on 127.0.0.1:5392 with its cache warmed by two passes.
# The figures are the process's utime and stime (/proc/PID/stat) over the dnsperf run divided
# by the answers dnsperf completed; with STATS=1 also the receive batches (recvmmsg calls,
# counted by `perf stat` over 6 s of the run) and the listener's context switches.
#
#   benches/cpu_split.sh BINARY [RUNS]     # RUNS pairs (default 5): dnsdist, then BINARY
#   STATS=1 benches/cpu_split.sh BINARY 1
#   THREADS=1 benches/cpu_split.sh BINARY 1   # also each thread's share
#
# dnsdist is configured as peers.sh's dnsdist-1t-mmsg (one UDP thread, recvmmsg/sendmmsg of 64,
# a packet cache). Needs nsd, dnsperf, dnsdist, dig (and perf for STATS=1). Loopback only.
set -euo pipefail
bin=$(realpath "$1")
runs=${2:-5}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
export NAMES=1000
# shellcheck source=benches/bench_upstream.sh
. "$(dirname "$0")/bench_upstream.sh"
bench_upstream "$dir" 5391
dnsdist_config "$dir/dnsdist.conf" 5392 5391
sleep 1

switches() { # voluntary and involuntary context switches summed over the process's threads
  cat /proc/"$1"/task/*/status | awk '/^voluntary_ctxt/ {v += $2} /^nonvoluntary_ctxt/ {n += $2} END {print v, n}'
}

one() { # label command...
  local label=$1 pid u0 s0 u1 s1 v0 n0 v1 n1 out comp qps batches=""
  shift
  "$@" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 1 50); do
    dig +short +time=1 +tries=1 -p 5392 @127.0.0.1 svc-1.default.svc.cluster.local >/dev/null 2>&1 && break
    sleep 0.1
  done
  dnsperf -s 127.0.0.1 -p 5392 -d "$dir/queries" -n 2 -c 1 -q 20 -t 2 >/dev/null 2>&1
  read -r u0 s0 < <(cut -d')' -f2 /proc/$pid/stat | awk '{print $12, $13}')
  read -r v0 n0 < <(switches $pid)
  [ "${THREADS:-0}" = 1 ] && thread_times $pid >"$dir/threads0"
  dnsperf -s 127.0.0.1 -p 5392 -d "$dir/queries" -l 8 -c 8 -q 100 >"$dir/dnsperf.txt" 2>&1 &
  local dp=$!
  if [ "${STATS:-0}" = 1 ]; then
    sleep 1
    perf stat -e syscalls:sys_enter_recvmmsg -p $pid -o "$dir/perf.txt" -- sleep 6
    batches=$(awk '/sys_enter_recvmmsg/ {gsub(",", "", $1); print $1}' "$dir/perf.txt")
  fi
  wait $dp
  read -r u1 s1 < <(cut -d')' -f2 /proc/$pid/stat | awk '{print $12, $13}')
  read -r v1 n1 < <(switches $pid)
  [ "${THREADS:-0}" = 1 ] && thread_times $pid >"$dir/threads1"
  kill $pid
  wait $pid 2>/dev/null || true
  comp=$(awk '/Queries completed/ {print $3}' "$dir/dnsperf.txt")
  qps=$(awk '/Queries per second/ {print int($4)}' "$dir/dnsperf.txt")
  awk -v l="$label" -v q="$qps" -v n="$comp" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v b="$batches" \
    -v v=$((v1 - v0)) -v i=$((n1 - n0)) 'BEGIN {
      printf "%-8s qps %7d  user %.3f  sys %.3f  total %.3f us/answer", l, q, u*1e4/n, s*1e4/n, (u+s)*1e4/n
      if (b != "") printf "  answers/recvmmsg %.1f  switches vol %d invol %d", q*6/b, v, i
      printf "\n" }'
  if [ "${THREADS:-0}" = 1 ]; then
    # Per thread (by name), the same figures: which thread pays for an answer.
    join "$dir/threads0" "$dir/threads1" | awk -v n="$comp" '{
      u = $4 - $2; s = $5 - $3
      if (u + s > 0) printf "    %-16s user %.3f  sys %.3f us/answer\n", $1, u*1e4/n, s*1e4/n }'
  fi
}

thread_times() { # "name/tid utime stime" a thread, sorted for join
  for t in /proc/"$1"/task/*; do
    printf '%s/%s %s\n' "$(tr ' ' _ <"$t/comm")" "${t##*/}" "$(cut -d')' -f2 "$t/stat" | awk '{print $12, $13}')"
  done | sort
}

for _ in $(seq 1 "$runs"); do
  one dnsdist dnsdist --supervised --disable-syslog -C "$dir/dnsdist.conf"
  one ndots "$bin" proxy --listen 127.0.0.1:5392 --upstream 127.0.0.1:5391 --admin 127.0.0.1:0
done
