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
# A fixed FUZZ_SEED makes a run repeatable (CI uses one, so CI is not red by chance); unset, each
# run explores anew.
seed="${FUZZ_SEED:-}"
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(wire_query cache_patch request_path capture_pcap capture_dnstap capture_text)

# The shared sample data seeds the capture readers; fuzz/corpus/<target> holds our own seeds
# and every input that once crashed a target (the regression corpus).
seed_dirs() {
  case "$1" in
    capture_pcap) echo ../../shared/data/pcap ;;
    capture_dnstap) echo ../../shared/data/dnstap ;;
    capture_text) echo ../../shared/data/coredns-log ;;
  esac
  [ -d "corpus/$1" ] && echo "corpus/$1"
  return 0
}

cargo +nightly fuzz build -s "$sanitizer"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
  scratch="target/corpus-run/$t"
  mkdir -p "$scratch"
  read -r -a seeds <<<"$(seed_dirs "$t" | tr '\n' ' ')"
  for d in "${seeds[@]}"; do
    [ -d "$d" ] || { echo "fuzz.sh: no seeds for $t at $d" >&2; exit 1; }
  done
  echo "fuzz.sh: $t for ${seconds}s (seeds: ${seeds[*]}${seed:+, -seed=$seed})" >&2
  rc=0
  cargo +nightly fuzz run -s "$sanitizer" "$t" "$scratch" "${seeds[@]}" -- \
    -max_total_time="$seconds" -max_len=65535 -print_final_stats=1 ${seed:+-seed="$seed"} \
    >"$log" 2>&1 || rc=$?
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$log" | sed "s/^/  $t /" >&2 || true
  if [ $rc -ne 0 ]; then
    grep -m1 -A2 'panicked at' "$log" >&2 || true
    tail -40 "$log" >&2
    echo "fuzz.sh: $t failed (exit $rc); the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
