#!/usr/bin/env bash
# Build tunescope with Intel MKL matmuls (cargo feature `mkl`) without a system-wide MKL.
#
# candle's `mkl` feature links intel-mkl-src with `mkl-static-lp64-iomp`, whose build script
# looks for MKL under $MKLROOT (then pkg-config, then /opt/intel) and otherwise tries to download
# a package from a container registry, which fails offline. Here MKL's static libraries, headers
# and Intel's OpenMP runtime come from PyPI wheels (mkl-static, mkl-include, intel-openmp; about
# 300 MB of downloads, 1.1 GB installed) and $MKLROOT points at them.
#
# The binary links libiomp5.so dynamically; an rpath to the wheel's lib/ is added so it runs
# without LD_LIBRARY_PATH. A separate target directory keeps the default build's artifacts.
#
# Usage: scripts/build-mkl.sh            (then: target/mkl/release/tunescope ...)
# Env:   MKL_VERSION (default 2026.2.0), MKL_PREFIX (default ~/.cache/tunescope/mkl-$MKL_VERSION),
#        PYTHON (default python3), MKL_TARGET_DIR (default target/mkl)
set -euo pipefail
cd "$(dirname "$0")/.."

MKL_VERSION="${MKL_VERSION:-2026.2.0}"
MKL_PREFIX="${MKL_PREFIX:-$HOME/.cache/tunescope/mkl-$MKL_VERSION}"
PYTHON="${PYTHON:-python3}"
TARGET_DIR="${MKL_TARGET_DIR:-target/mkl}"

if [ ! -f "$MKL_PREFIX/include/mkl.h" ] || [ ! -f "$MKL_PREFIX/lib/libmkl_core.a" ]; then
    echo "installing MKL $MKL_VERSION wheels into $MKL_PREFIX" >&2
    "$PYTHON" -m venv "$MKL_PREFIX"
    "$MKL_PREFIX/bin/pip" install --quiet --no-deps \
        "mkl-static==$MKL_VERSION" "mkl-include==$MKL_VERSION" "intel-openmp==$MKL_VERSION"
fi
for f in include/mkl.h lib/libmkl_intel_lp64.a lib/libmkl_intel_thread.a lib/libmkl_core.a lib/libiomp5.so; do
    [ -e "$MKL_PREFIX/$f" ] || { echo "missing $MKL_PREFIX/$f" >&2; exit 1; }
done

export MKLROOT="$MKL_PREFIX"
export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-Wl,-rpath,$MKL_PREFIX/lib"
cargo build --release --features mkl --target-dir "$TARGET_DIR"
echo "built $TARGET_DIR/release/tunescope (MKL $MKL_VERSION from $MKL_PREFIX)" >&2
