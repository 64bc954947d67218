#!/usr/bin/env bash
# Where a query waits inside the host at 10k QPS of cached answers: `perf sched` over 6 s of a
# 10 s dnsperf -c 8 -Q 10000 run (1,000 cached service names, nsd behind), printing for each of
# the proxy's UDP listener and tracker threads and for dnsperf the wait from wake-up to running
# ("schdelay") and the length of each turn on a CPU ("run"), in ms, with dnsperf's latency
# percentiles (µs) and the host's steal ticks over the run.
#
#   benches/sched_delay.sh BINARY [LABEL]
#
# For the listener's three longest waits it also prints what held each CPU meanwhile (task and
# ms of its turns that overlap the wait): a stall that the proxy's own threads or dnsperf filled
# is the proxy's or the load's; one with nothing but <idle>, or nothing at all, is the host.
# KEEP=DIR keeps perf's sched.data, the timehist and dnsperf's output there.
#
# Needs perf, nsd, dnsperf. Loopback only.
set -euo pipefail
bin=$(realpath "$1")
label=${2:-$(basename "$bin")}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
. "$(dirname "$0")/bench_upstream.sh"
hit_proxy "$dir" "$bin" 5391 5392
s0=$(awk '/^cpu /{print $9}' /proc/stat)
dnsperf -s 127.0.0.1 -p 5392 -d "$dir/queries" -l 10 -c 8 -Q 10000 -v >"$dir/dp.txt" 2>&1 &
dp=$!
sleep 2
perf sched record -o "$dir/sched.data" -- sleep 6 >/dev/null 2>&1
wait $dp
s1=$(awk '/^cpu /{print $9}' /proc/stat)
perf sched timehist -i "$dir/sched.data" 2>/dev/null >"$dir/th.txt"
pct() { sort -n | awk '{v[NR]=$1} END{printf "p50=%s p99=%s p999=%s max=%s n=%d", v[int(NR*.5)], v[int(NR*.99)], v[int(NR*.999)], v[NR], NR}'; }
# timehist columns: time, cpu, task[tid/pid], wait time, sch delay, run time (ms)
echo "$label steal=$((s1 - s0))"
echo "  listener schdelay ms: $(awk 'NR>3 && $3 ~ /ndots-udp/ {print $5}' "$dir/th.txt" | pct)"
echo "  tracker run ms:       $(awk 'NR>3 && $3 ~ /ndots-tracker/ {print $6}' "$dir/th.txt" | pct)"
echo "  dnsperf schdelay ms:  $(awk 'NR>3 && $3 ~ /dnsperf/ {print $5}' "$dir/th.txt" | pct)"
echo "  latency us:           $(awk '/^> / && $NF ~ /^[0-9.]+$/ {print $NF*1e6}' "$dir/dp.txt" | pct)"
# timehist lines are switch-outs: a turn of `run` ms ended at `time`, after `sch delay` ms of
# waiting from wake-up; so a wait spans [time - run - delay, time - run].
# (awk, not head: head's early exit would end sort with SIGPIPE, and pipefail the script)
awk 'NR>3 && $3 ~ /ndots-udp/ {print $5, $1, $2, $6}' "$dir/th.txt" | sort -rn | awk 'NR <= 3' |
while read -r delay end cpu run; do
    awk -v d="$delay" -v e="$end" -v r="$run" -v c="$cpu" '
        BEGIN { to = e - r / 1000; from = to - d / 1000 }
        NR > 3 && $1 > from && $1 - $NF / 1000 < to {
            s = $1 - $NF / 1000; if (s < from) s = from
            t = $1; if (t > to) t = to
            name = $3; sub(/\[.*/, "", name)
            held[$2 " " name] += (t - s) * 1000
        }
        END {
            printf "  listener waited %.2f ms on %s until %.6f; meanwhile:", d, c, to
            for (k in held) if (held[k] >= 0.05) printf " %s %.2f", k, held[k]
            print ""
        }' "$dir/th.txt"
done
if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP"
    cp "$dir/sched.data" "$dir/th.txt" "$dir/dp.txt" "$KEEP/"
fi
