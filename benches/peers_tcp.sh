#!/usr/bin/env bash
# peers_tcp.sh: the peers benchmark (../shared/bench/peers.sh) over TCP: cached answers to
# dnsperf `-m tcp`, several connections with many queries outstanding on each (pipelined,
# RFC 7766 §6.2.1.1), ndots against dnsdist and unbound in the same run.
#
#   scripts/build-static.sh
#   CANDIDATE_CMD="$PWD/target/static/x86_64-unknown-linux-gnu/release/ndots proxy --listen {ADDR}:{PORT} --upstream 127.0.0.1:5300 --admin 127.0.0.1:0" \
#     REPS=3 DUR=8 bash benches/peers_tcp.sh
#
# peers.sh does everything else exactly as for UDP (private network namespace, the nsd
# upstream with its zones, the peers' configs, warm-up, CPU of each server from /proc/PID/stat,
# the table): this script only puts a `dnsperf` first on its PATH that adds `-m tcp`, so
# every dnsperf run peers.sh makes (warm-up, max-QPS, fixed-rate latency) goes over TCP.
# dnsperf keeps one TCP connection per client (`-c`) and sends up to `-q` queries spread over
# them without waiting for answers: pipelining.
#
# Knobs: those of peers.sh (REPS, DUR, LAT_DUR, LAT_QPS, OUTSTANDING, INSTALL, RES, ...), with
# these defaults: PEERS="dnsdist-1t unbound-1t unbound-2t candidate" WORKLOADS=hit-max CLIENTS=8.
# PEERS_SH: where peers.sh is [../shared/bench/peers.sh from the repository].
#
# What the peers' configurations in peers.sh mean over TCP: unbound-1t is one thread with its
# default incoming-num-tcp (10 connections per thread, so keep CLIENTS <= 10); dnsdist
# accepts TCP on the same `setLocal` and answers from the same packet cache, but on its own TCP
# worker threads (up to 10 by default), whatever the `-1t` in the name says. ndots answers
# TCP on its tokio runtime (as many threads as `server.workers`). CPU per answer counts every
# thread of each.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PEERS_SH=${PEERS_SH:-$HERE/../../shared/bench/peers.sh}
[ -f "$PEERS_SH" ] || { echo "peers_tcp.sh: no peers.sh at $PEERS_SH (set PEERS_SH)" >&2; exit 1; }
REAL=$(command -v dnsperf || true)
if [ -z "$REAL" ] && [ "${INSTALL:-1}" = 1 ]; then
  # peers.sh installs dnsperf itself, but the wrapper needs the real path first
  INSTALL=1 PEERS=none WORKLOADS=none REPS=0 bash "$PEERS_SH" >/dev/null 2>&1 || true
  REAL=$(command -v dnsperf || true)
fi
[ -n "$REAL" ] || { echo "peers_tcp.sh: dnsperf is not installed (INSTALL=1 bash $PEERS_SH)" >&2; exit 1; }

WRAP=$(mktemp -d "${TMPDIR:-/tmp}/ndots-peers-tcp.XXXXXX")
trap 'rm -rf "$WRAP"' EXIT
cat >"$WRAP/dnsperf" <<EOF
#!/bin/sh
# peers_tcp.sh: every dnsperf run of peers.sh over TCP (-h, the version probe, as is)
case "\$1" in -h) exec "$REAL" "\$@" ;; esac
exec "$REAL" -m tcp "\$@"
EOF
chmod +x "$WRAP/dnsperf"

export PATH="$WRAP:$PATH"
export PEERS=${PEERS:-"dnsdist-1t unbound-1t unbound-2t candidate"}
export WORKLOADS=${WORKLOADS:-hit-max}
export CLIENTS=${CLIENTS:-8}
echo "peers_tcp.sh: dnsperf -m tcp (through $WRAP/dnsperf), PEERS=\"$PEERS\" WORKLOADS=\"$WORKLOADS\" CLIENTS=$CLIENTS" >&2
bash "$PEERS_SH" "$@"
