#!/usr/bin/env bash
# Instructions per cache-hit answer, counted by callgrind (repeatable whatever the machine's
# load, unlike QPS on this shared VM): the release proxy under valgrind, one cached name asked
# QUERIES times by dnsperf at a fixed rate, nsd behind it for the one miss.
#
#   benches/callgrind_hit.sh BINARY [BINARY...]   # prints instructions per answered query
#   QUERIES=20000 RATE=100000 benches/callgrind_hit.sh OLD NEW   # saturated: full batches
#
# At a low RATE the receive batch size (and with it the per-batch costs: the tracker hand-over,
# the syscalls) depends on how fast valgrind happens to run; a rate above what the proxy answers
# under valgrind keeps every batch full, as at full load, and the counts repeatable.
# NAMES=1000 CLIENTS=8 asks 1,000 cached names from 8 client sockets, as ../shared/bench/peers.sh's
# hit-max does (8 ports of one address: one client to the tracker, which knows clients by
# address); NAMES above the tracker's memo of 4,096 names shows its misses. The names are asked
# once before counting starts (callgrind's instrumentation is switched on after that warm-up),
# so the figure is cache hits only, without start-up.
# KEEP=DIR keeps each run's callgrind output there (DIR/<binary name>.callgrind) for
# `callgrind_annotate`.
# Needs valgrind, nsd, dnsperf (scripts/test.sh installs the last two). Loopback only.
set -euo pipefail
QUERIES="${QUERIES:-30000}"
RATE="${RATE:-1500}"
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
# shellcheck source=benches/bench_upstream.sh
. "$(dirname "$0")/bench_upstream.sh"
bench_upstream "$dir" 5391
sleep 1
for bin in "$@"; do
  out="$dir/callgrind.out"
  collect=()
  if [ "${NAMES:-1}" -gt 1 ]; then collect=(--instr-atstart=no); fi
  valgrind --tool=callgrind "${collect[@]}" --callgrind-out-file="$out" \
    "$bin" proxy --listen 127.0.0.1:5392 --upstream 127.0.0.1:5391 --admin 127.0.0.1:0 \
    >/dev/null 2>&1 &
  vg=$!
  # Wait for the proxy to answer (valgrind starts slowly), which also fills the cache.
  for _ in $(seq 1 60); do
    dig +short +time=1 +tries=1 -p 5392 @127.0.0.1 www.bench.test >/dev/null 2>&1 && break
    sleep 1
  done
  if [ "${NAMES:-1}" -gt 1 ]; then
    dnsperf -s 127.0.0.1 -p 5392 -d "$dir/queries" -n 1 -q 20 -t 5 >/dev/null 2>&1
    callgrind_control --instr=on $vg >/dev/null
  fi
  answered=$(dnsperf -s 127.0.0.1 -p 5392 -d "$dir/queries" -c "${CLIENTS:-1}" -n $(((QUERIES + ${NAMES:-1} - 1) / ${NAMES:-1})) -Q "$RATE" 2>/dev/null |
    awk '/Queries completed/ {print $3}')
  kill -INT $vg; wait $vg || true
  if [ -n "${KEEP:-}" ]; then cp "$out" "$KEEP/$(basename "$bin").callgrind"; fi
  total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
  echo "$bin: $total instructions, $answered answered, $((total / answered)) per answer"
done
