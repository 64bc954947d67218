#!/usr/bin/env bash
# The whole test suite: install what it needs, build, run. `.ci/run` calls exactly this.
#
#   scripts/test.sh            # as root: installs missing Debian packages first
#
# Debian packages the tests need are listed one per line in scripts/deps/*.txt. Tests that need
# root or a network namespace skip with a loud reason on a laptop, and must run under CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

install_deps() {
  local want=() p
  # Every list but pip.txt (PyPI, install_pip_deps below) names Debian packages.
  for p in $(ls scripts/deps/*.txt | grep -v '/pip\.txt$' | xargs cat | sed 's/#.*//' | tr -s ' \n' '\n' | sort -u); do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || want+=("$p")
  done
  [ ${#want[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "test.sh: not root, cannot install: ${want[*]} (tests that need them will skip, or fail under CI=true)" >&2
    return 0
  fi
  echo "test.sh: installing ${want[*]}" >&2
  # No package may start a daemon of its own while we install it.
  local rc_existed=0
  [ -e /usr/sbin/policy-rc.d ] && rc_existed=1
  if [ $rc_existed = 0 ]; then printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
  if [ $rc_existed = 0 ]; then rm -f /usr/sbin/policy-rc.d; fi
}

# PyPI tools pinned in scripts/deps/pip.txt (NAME==VERSION), installed when missing or another
# version is there.
install_pip_deps() {
  local want=() spec have
  for spec in $(sed 's/#.*//' scripts/deps/pip.txt 2>/dev/null); do
    have=$(python3 -m pip show "${spec%%==*}" 2>/dev/null | sed -n 's/^Version: //p' || true)
    [ "$have" = "${spec#*==}" ] || want+=("$spec")
  done
  [ ${#want[@]} -eq 0 ] && return 0
  echo "test.sh: pip installing ${want[*]}" >&2
  python3 -m pip install --quiet --disable-pip-version-check "${want[@]}" ||
    echo "test.sh: pip install failed (tests that need these tools skip, or fail under CI=true)" >&2
}

# cargo-fuzz, for scripts/fuzz.sh (the nightly toolchain comes with the machine).
install_cargo_fuzz() {
  command -v cargo-fuzz >/dev/null 2>&1 && return 0
  echo "test.sh: installing cargo-fuzz" >&2
  cargo install --quiet --locked cargo-fuzz
}

install_deps
install_pip_deps
install_cargo_fuzz
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
# The release build is the image's: fully static (scripts/build-static.sh, separate target
# dir). tests/image.rs runs that binary from an empty root directory.
scripts/build-static.sh >/dev/null
cargo test --locked --all-targets 2>&1 | tee "${TMPDIR:-/tmp}/ndots-test.log"
# Every fuzz target for a bounded time, from a fixed seed so the run is repeatable (longer and
# exploring locally: FUZZ_SECONDS=600 scripts/fuzz.sh).
FUZZ_SECONDS="${FUZZ_SECONDS:-10}" FUZZ_SEED="${FUZZ_SEED:-1}" scripts/fuzz.sh
