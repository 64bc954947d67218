#!/usr/bin/env bash
# Soak (issue 14): the release proxy under a pod's limits (half a core, 128 MiB) at twice its
# capacity in walk-shaped queries for 400,000 long-tail names, while its upstream cycles
# through faults: blackhole, 3 s late, 30% loss each way, SERVFAIL, flapping (2 s dead, 2 s
# alive), healthy. Every phase must keep RSS under 128 MiB, the tracker's losses under 1%,
# and cached names answering; the test prints each phase's figures.
#
#   bash benches/soak.sh                 # 1 h in phases of 5 min; needs root
#   SECS=600 PHASE=60 bash benches/soak.sh   # a shorter run
#
# Runs tests/overload.rs `soak_mixed_faults_at_twice_capacity` (private network namespace,
# cgroup limits, nftables for the loss: this kernel has no netem).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
cargo build --release --bin ndots
export NDOTS_BIN="$ROOT/target/release/ndots"
export NDOTS_SOAK_SECS="${SECS:-3600}" NDOTS_SOAK_PHASE_SECS="${PHASE:-300}"
export NDOTS_BROWNOUT_NAMES="${NAMES:-400000}"
exec cargo test --release --test overload soak_mixed_faults_at_twice_capacity -- \
  --ignored --nocapture --exact
