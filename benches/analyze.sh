#!/usr/bin/env bash
# ndots analyze against tshark on the two capture shapes of issue 20, one after the other in one
# run, files in the page cache. Not run by CI.
#   distinct: 1,000,000 queries, every one from its own client address and port (nothing to join)
#   walks:    2,000,000 queries, ndots:5 walks of 3,000 pods
# Usage: bash benches/analyze.sh [NDOTS_BIN [BASE_BIN]]   (BASE_BIN: a build to compare with)
# Env: DIR (captures, default /tmp/capbench), TSHARK=0 skips tshark, SHAPES="distinct walks".
set -euo pipefail
NDOTS=${1:-target/release/ndots}
BASE=${2:-}
DIR=${DIR:-/tmp/capbench}
SHAPES=${SHAPES:-distinct walks}
mkdir -p "$DIR"
gen() { # name, synth args...
  local f="$DIR/$1.pcap"; shift
  [ -s "$f" ] || "$NDOTS" capture synth --seed 1 --rate 20000 "$@" -o "$f"
}
gen distinct-1m --queries 1000000 --shape distinct-clients
gen walks-2m --queries 2000000 --pods 3000
T='%e s elapsed, %U s user, %S s sys, %M KiB max RSS'
# The machine may be shared: each wall-clock figure is printed after the load it ran at.
load() { echo "  load average before: $(cut -d' ' -f1-3 /proc/loadavg)"; }
for shape in $SHAPES; do
  case $shape in distinct) f=$DIR/distinct-1m.pcap ;; walks) f=$DIR/walks-2m.pcap ;; esac
  cat "$f" > /dev/null # page cache
  echo "== $f"
  for bin in "$NDOTS" $BASE; do
    load
    /usr/bin/time -f "$bin analyze: $T" "$bin" analyze "$f" --format json -o "$DIR/$shape.$(basename "$bin").json" 2>&1 | grep analyze:
  done
  if [ -n "$BASE" ]; then
    cmp "$DIR/$shape.$(basename "$NDOTS").json" "$DIR/$shape.$(basename "$BASE").json" && echo "reports byte-identical"
  fi
  if [ "${TSHARK:-1}" != 0 ]; then
    load
    /usr/bin/time -f "tshark -T fields -e dns.qry.name: $T" tshark -r "$f" -T fields -e dns.qry.name 2>&1 >/dev/null | grep tshark
  fi
done
