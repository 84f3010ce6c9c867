#!/usr/bin/env bash
# Build tunescope with the system OpenBLAS behind the linear layers' GEMM (cargo feature
# `openblas`; README, "Performance"). Needs the library and its development link:
#   apt-get install -y libopenblas-dev        (Debian/Ubuntu; other systems: their openblas package)
# A separate target directory keeps the default build's artifacts.
#
# Usage: scripts/build-openblas.sh          (then: target/openblas/release/tunescope ...)
# Env:   OPENBLAS_TARGET_DIR (default target/openblas)
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET_DIR="${OPENBLAS_TARGET_DIR:-target/openblas}"

if ! ldconfig -p 2>/dev/null | grep -q 'libopenblas\.so ' &&
    ! ls /usr/lib/*/libopenblas.so /usr/lib/libopenblas.so /usr/local/lib/libopenblas.so >/dev/null 2>&1; then
    echo "libopenblas.so not found: install it first (Debian/Ubuntu: apt-get install -y libopenblas-dev)" >&2
    exit 1
fi
cargo build --release --locked --features openblas --target-dir "$TARGET_DIR"
echo "built $TARGET_DIR/release/tunescope (GEMM backend: openblas; check with: $TARGET_DIR/release/tunescope bench --gemm)" >&2
