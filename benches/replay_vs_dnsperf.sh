#!/usr/bin/env bash
# Live replay as a load generator, side by side with dnsperf in one run: both send the same
# queries (the ndots:5 walks of a synthetic capture) to the same target, the release proxy
# serving from a warm cache, with the same number of queries outstanding. Prints each QPS and
# the ratio replay / dnsperf.
#
#   cargo build --release && bash benches/replay_vs_dnsperf.sh
#
# Env: LOOKUPS (distinct lookups in the capture, default 2000), DUR (seconds per tool and
# round, default 8), ROUNDS (default 3), INFLIGHT (queries outstanding, default 200).
# Needs unbound (the proxy's upstream, serving a static zone) and dnsperf
# (scripts/deps/replay.txt). Everything listens on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/target/release/ndots}
LOOKUPS=${LOOKUPS:-2000}
DUR=${DUR:-8}
ROUNDS=${ROUNDS:-3}
INFLIGHT=${INFLIGHT:-200}
for t in unbound dnsperf python3; do
  command -v $t >/dev/null || { echo "replay_vs_dnsperf: $t is not installed" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "replay_vs_dnsperf: build first: cargo build --release" >&2; exit 1; }

W=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port); PX=$(free_port)

# The capture: pods in `default` resolving api-N.example.com (glibc, ndots:5: four search
# candidates NXDOMAIN, then the name itself), A and AAAA. dnsperf gets the same queries.
python3 - "$W" "$LOOKUPS" <<'EOF'
import sys
w, n = sys.argv[1], int(sys.argv[2])
sfx = ["default.svc.cluster.local.", "svc.cluster.local.", "cluster.local.", "ec2.internal."]
cap, names, zone = [], [], []
t = 1_700_000_000.0
for i in range(n):
    base = f"api-{i}.example.com"
    for s in sfx + [""]:
        q = f"{base}.{s}" if s else f"{base}."
        for ty in ("A", "AAAA"):
            t += 0.0005
            ok = s == "" and ty == "A"
            rc = "NOERROR" if s == "" else "NXDOMAIN"
            cap.append('{"ts": %.4f, "client": "10.0.%d.%d", "qname": "%s", "qtype": "%s", '
                       '"rcode": "%s", "answers": %d}' % (t, i // 250, i % 250, q, ty, rc, ok))
            names.append(f"{q} {ty}")
    zone.append(f'  local-data: "{base}. 300 IN A 192.0.2.{i % 250 + 1}"')
open(f"{w}/capture.jsonl", "w").write("\n".join(cap) + "\n")
open(f"{w}/queries.txt", "w").write("\n".join(names) + "\n")
open(f"{w}/zone.conf", "w").write("\n".join(zone) + "\n")
EOF

cat >"$W/unbound.conf" <<EOF
server:
  interface: 127.0.0.1
  port: $UP
  do-daemonize: no
  chroot: ""
  username: ""
  directory: "$W"
  pidfile: ""
  use-syslog: no
  logfile: ""
  do-ip6: no
  module-config: "iterator"
  so-rcvbuf: 4m
  local-zone: "." static
$(cat "$W/zone.conf")
remote-control:
  control-enable: no
EOF
unbound -d -c "$W/unbound.conf" >"$W/unbound.log" 2>&1 & PIDS+=($!)
"$BIN" proxy --listen 127.0.0.1:$PX --upstream 127.0.0.1:$UP --admin 127.0.0.1:0 \
  >"$W/proxy.log" 2>&1 & PIDS+=($!)
sleep 1

replay() {
  "$BIN" replay "$W/capture.jsonl" --ndots 5 --captured-search \
    "default.svc.cluster.local svc.cluster.local cluster.local ec2.internal" \
    --target 127.0.0.1:$PX --rate max --max-inflight "$INFLIGHT" --sockets 4 "$@" \
    --format json 2>/dev/null
}
# Warm the proxy's cache with every query once.
replay >/dev/null
QUERIES=$(wc -l <"$W/queries.txt")
# Enough repeats of the capture to run about DUR seconds at 150k QPS.
REPEAT=$(( (150000 * DUR + QUERIES - 1) / QUERIES ))

echo "target: ndots proxy (release, warm cache) on 127.0.0.1:$PX; $QUERIES distinct queries; $INFLIGHT outstanding"
printf '%-6s %12s %12s %8s  %s\n' round dnsperf replay ratio "replay: timeouts, p50/p99 ms"
for r in $(seq 1 "$ROUNDS"); do
  dnsperf -s 127.0.0.1 -p $PX -d "$W/queries.txt" -l "$DUR" -q "$INFLIGHT" -c 4 >"$W/dnsperf.out" 2>&1
  D=$(awk '/Queries per second/ {print $4}' "$W/dnsperf.out")
  replay --repeat "$REPEAT" >"$W/replay.json"
  read -r R EXTRA < <(python3 -c 'import json,sys
l = json.load(open(sys.argv[1]))["captured"]["live"]
print("%.0f %d, %.3f/%.3f" % (l["queries_per_second"], l["timeouts"], l["query_ms"]["p50"], l["query_ms"]["p99"]))' "$W/replay.json")
  printf '%-6s %12.0f %12.0f %8.2f  %s\n' "$r" "$D" "$R" "$(python3 -c "print($R/$D)")" "$EXTRA"
done
grep -E "Queries lost|Average Latency" "$W/dnsperf.out" | sed 's/^ */dnsperf (last round): /'
