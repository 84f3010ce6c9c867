#!/usr/bin/env bash
# One prepared GPU check (peak RSS in the table is host memory, not GPU memory): build the CUDA binary (scripts/build-cuda.sh) unless it exists, make a
# tiny model, run `tunescope bench` on it and, when present, on SmolLM2-135M-Instruct, f32 and
# bf16, and print the tables. Untested here: no GPU is available to this repository's machines.
#
# Usage: scripts/bench-gpu.sh [MODEL_DIR]      (default models/smollm2-135m-instruct)
# Env:   DEVICE (default cuda:0), STEPS (10), WARMUP (3), BATCH (4), SEQ (128),
#        RECIPES (sa-proj,mlp-gate-up,mlp,full-llm), OUT (bench-gpu-out)
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL="${1:-models/smollm2-135m-instruct}"
DEVICE="${DEVICE:-cuda:0}"
STEPS="${STEPS:-10}"
WARMUP="${WARMUP:-3}"
BATCH="${BATCH:-4}"
SEQ="${SEQ:-128}"
RECIPES="${RECIPES:-sa-proj,mlp-gate-up,mlp,full-llm}"
OUT="${OUT:-bench-gpu-out}"
TARGET_DIR="${CUDA_TARGET_DIR:-target/cuda}"
BIN="$TARGET_DIR/release/tunescope"

if [ ! -x "$BIN" ] || [ ! -f "$TARGET_DIR/cuda-root.txt" ]; then
    scripts/build-cuda.sh
fi
ROOT="$(cat "$TARGET_DIR/cuda-root.txt")"
export LD_LIBRARY_PATH="$ROOT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
mkdir -p "$OUT"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true

run() { # run LABEL MODEL DTYPE
    echo
    echo "== $1 ($3) =="
    "$BIN" bench "$2" --device "$DEVICE" --dtype "$3" --recipes "$RECIPES" \
        --batch "$BATCH" --seq "$SEQ" --steps "$STEPS" --warmup "$WARMUP" | tee "$OUT/$1-$3.md"
}

"$BIN" make-tiny --out "$OUT/tiny" --layers 4 --hidden 256 --intermediate 688 --heads 8 --kv-heads 4 >/dev/null
run tiny "$OUT/tiny" f32
if [ -f "$MODEL/config.json" ]; then
    run smollm2 "$MODEL" f32
    run smollm2 "$MODEL" bf16
else
    echo "no model at $MODEL: only the tiny model was measured" >&2
fi
