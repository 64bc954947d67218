#!/usr/bin/env bash
# Run the cargo-fuzz targets for a bounded time each (issue 8: zero panics on hostile input).
#
#   scripts/fuzz.sh                       # every target, FUZZ_SECONDS (default 20) each
#   FUZZ_SECONDS=600 scripts/fuzz.sh request_path
#
# Needs the nightly toolchain and cargo-fuzz (scripts/test.sh installs cargo-fuzz when missing).
# The seeds in fuzz/corpus/<target> are committed; what libFuzzer finds goes to a scratch
# corpus under fuzz/target, so a run never dirties the repository. A crash leaves its input in
# fuzz/artifacts/<target>/ and fails the script; add it to the corpus once fixed.
# CI builds without AddressSanitizer (`-s none`): the code is safe Rust, the targets look for
# panics, and the sanitizer build costs minutes; run with FUZZ_SANITIZER=address locally.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-20}"
sanitizer="${FUZZ_SANITIZER:-none}"
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(wire_query cache_patch request_path capture_pcap capture_dnstap capture_text)

seed_dir() {
  case "$1" in
    capture_pcap) echo ../../shared/data/pcap ;;
    capture_dnstap) echo ../../shared/data/dnstap ;;
    capture_text) echo ../../shared/data/coredns-log ;;
    *) echo "corpus/$1" ;;
  esac
}

cargo +nightly fuzz build -s "$sanitizer"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
  scratch="target/corpus-run/$t"
  mkdir -p "$scratch"
  seeds="$(seed_dir "$t")"
  [ -d "$seeds" ] || { echo "fuzz.sh: no seeds for $t at $seeds" >&2; exit 1; }
  echo "fuzz.sh: $t for ${seconds}s (seeds: $seeds)" >&2
  rc=0
  cargo +nightly fuzz run -s "$sanitizer" "$t" "$scratch" "$seeds" -- \
    -max_total_time="$seconds" -max_len=65535 -print_final_stats=1 >"$log" 2>&1 || rc=$?
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$log" | sed "s/^/  $t /" >&2 || true
  if [ $rc -ne 0 ]; then
    tail -40 "$log" >&2
    echo "fuzz.sh: $t failed (exit $rc); the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
