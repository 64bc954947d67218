#!/usr/bin/env bash
# Build the fully static ndots binary the container image ships; the Dockerfile's builder stage
# and the chroot test (tests/image.rs) both run exactly this.
#
#   scripts/build-static.sh            # prints the binary's path on stdout
#
# glibc linked statically (`+crt-static`): no musl target is needed. `--target` keeps build
# scripts and proc macros host-linked as usual, and the separate target dir keeps this build
# from invalidating the normal one. Nothing on the proxy's path calls getaddrinfo or NSS
# (addresses in the config are literal IPs), so the binary needs no libc files at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR="${NDOTS_STATIC_TARGET_DIR:-$PWD/target/static}"
# getrandom's default Linux backend finds glibc's getrandom() with dlsym, which a static binary
# does not have, and falls back to /dev/urandom: absent from an empty root (tests/image.rs found
# it). The linux_getrandom backend calls getrandom(2) through libc directly.
RUSTFLAGS="-C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\"" \
  cargo build --locked --release --bin ndots --target "$target" >&2
bin="$CARGO_TARGET_DIR/$target/release/ndots"
# Refuse to hand out anything that still wants a dynamic loader.
if readelf -l "$bin" | grep -q 'INTERP\|Requesting program interpreter'; then
  echo "build-static.sh: $bin is dynamically linked" >&2
  exit 1
fi
if readelf -d "$bin" | grep -q NEEDED; then
  echo "build-static.sh: $bin needs shared libraries" >&2
  exit 1
fi
echo "$bin"
