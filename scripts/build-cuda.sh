#!/usr/bin/env bash
# Build tunescope with `--features cuda` without a system CUDA toolkit (see README, "GPU").
#
# The CUDA 13.0 compiler and libraries come from PyPI wheels (≈1.2 GB); they share one root,
# site-packages/nvidia/cu13 (bin, include, lib, nvvm). candle-core enables cudarc's
# `dynamic-linking`, so the linker needs a libcuda.so at build time, which no wheel ships: a stub
# exporting the driver symbols cudarc declares is built into lib/stubs/ (soname libcuda.so.1);
# at run time the real driver's libcuda.so.1 is used instead.
#
# Usage: scripts/build-cuda.sh                 (then: scripts/bench-gpu.sh, or run the binary with
#        LD_LIBRARY_PATH=<root>/lib target/cuda/release/tunescope ...)
# Env:   CUDA_VENV (default ~/.cache/tunescope/cuda13), PYTHON (default python3),
#        CUDA_COMPUTE_CAP (default 90: H100/H200), CUDA_TARGET_DIR (default target/cuda)
# Untested on a GPU from this repository's machines (none is available to them); the steps follow
# a build that was checked to compile and link on a CPU-only machine of the same kind.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${CUDA_VENV:-$HOME/.cache/tunescope/cuda13}"
PYTHON="${PYTHON:-python3}"
TARGET_DIR="${CUDA_TARGET_DIR:-target/cuda}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"

# 1. CUDA 13.0 wheels. Newer nvcc (e.g. 13.5) is refused by cudarc 0.19 and emits PTX that
#    driver 580 (CUDA 13.0) may not load.
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
ROOT="$("$VENV/bin/python" -c 'import site; print(site.getsitepackages()[0])')/nvidia/cu13"
if [ ! -x "$ROOT/bin/nvcc" ]; then
    "$VENV/bin/pip" install --quiet \
        nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
        nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-cccl==13.0.85 \
        "nvidia-cublas>=13.0,<13.1" "nvidia-curand>=10.4.0,<10.4.1"
fi
[ -x "$ROOT/bin/nvcc" ] || { echo "nvcc not found under $ROOT" >&2; exit 1; }

# 2. Unversioned library names for the linker, and lib64 -> lib.
link() { # link NAME TARGET-GLOB
    local target
    target="$(cd "$ROOT/lib" && ls $2 2>/dev/null | head -n1 || true)"
    [ -n "$target" ] || { echo "no $2 in $ROOT/lib" >&2; exit 1; }
    ln -sf "$target" "$ROOT/lib/$1"
}
link libcudart.so 'libcudart.so.13*'
link libcublas.so 'libcublas.so.13*'
link libcublasLt.so 'libcublasLt.so.13*'
link libnvrtc.so 'libnvrtc.so.13*'
link libcurand.so 'libcurand.so.10*'
[ -e "$ROOT/lib64" ] || ln -s lib "$ROOT/lib64"

# 3. A stub libcuda.so with every cu* driver symbol cudarc declares (names taken from the
#    cudarc version in Cargo.lock).
STUB="$ROOT/lib/stubs/libcuda.so"
if [ ! -f "$STUB" ]; then
    cargo fetch --locked >/dev/null
    CUDARC_VERSION="$(awk '/^name = "cudarc"$/ {getline; gsub(/version = |"/, ""); print}' Cargo.lock)"
    REGISTRY="${CARGO_HOME:-$HOME/.cargo}/registry/src"
    SYS_DIR="$(ls -d "$REGISTRY"/*/cudarc-"$CUDARC_VERSION"/src/driver/sys | head -n1)"
    [ -d "$SYS_DIR" ] || { echo "cudarc $CUDARC_VERSION sources not found" >&2; exit 1; }
    mkdir -p "$ROOT/lib/stubs"
    grep -rhoE 'fn cu[A-Z][A-Za-z0-9_]*\(' "$SYS_DIR" | sed 's/^fn //; s/($//' | sort -u \
        | awk '{print "void " $1 "(void) {}"}' > "$ROOT/lib/stubs/libcuda_stub.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$STUB" "$ROOT/lib/stubs/libcuda_stub.c"
    echo "stub libcuda: $(wc -l < "$ROOT/lib/stubs/libcuda_stub.c") symbols" >&2
fi

# 4. Build (≈12 minutes on 2 cores, most of it candle-kernels; kernels come out for sm_$CUDA_COMPUTE_CAP).
export CUDA_ROOT="$ROOT" CUDA_HOME="$ROOT" CUDA_PATH="$ROOT"
export PATH="$ROOT/bin:$PATH"
export LIBRARY_PATH="$ROOT/lib/stubs:$ROOT/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
cargo build --release --features cuda --target-dir "$TARGET_DIR"

# 5. At run time: the driver's libcuda.so.1 plus libcudart/libcublas/libcublasLt/libcurand from
#    the wheels (glibc >= 2.34).
echo "built $TARGET_DIR/release/tunescope; run it with LD_LIBRARY_PATH=$ROOT/lib" >&2
echo "$ROOT" > "$TARGET_DIR/cuda-root.txt"
