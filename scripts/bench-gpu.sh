#!/usr/bin/env bash
# One prepared GPU check (peak RSS in the table is host memory, not GPU memory; nvidia-smi's
# sampled peak is printed beside it): build the CUDA binary (scripts/build-cuda.sh) unless it
# exists, make a tiny model, run `tunescope bench` on it and, when present, on
# SmolLM2-135M-Instruct in f32 and bf16 at the default shape, then bf16 at batch 16 x 512 with
# and without activation checkpointing, and print the tables. Untested here: no GPU has been
# lent to this repository's sessions.
#
# Usage: scripts/bench-gpu.sh [MODEL_DIR]      (default models/smollm2-135m-instruct)
# Env:   DEVICE (default cuda:0), STEPS (10), WARMUP (3), BATCH (4), SEQ (128),
#        RECIPES (sa-proj,mlp-gate-up,mlp,full-llm), OUT (bench-gpu-out),
#        LONG_BATCH (16), LONG_SEQ (512), LONG_RECIPES (sa-proj,full-llm)
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
LONG_BATCH="${LONG_BATCH:-16}"
LONG_SEQ="${LONG_SEQ:-512}"
LONG_RECIPES="${LONG_RECIPES:-sa-proj,full-llm}"
TARGET_DIR="${CUDA_TARGET_DIR:-target/cuda}"
BIN="$TARGET_DIR/release/tunescope"

if [ ! -x "$BIN" ] || [ ! -f "$TARGET_DIR/cuda-root.txt" ]; then
    scripts/build-cuda.sh
fi
ROOT="$(cat "$TARGET_DIR/cuda-root.txt")"
export LD_LIBRARY_PATH="$ROOT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
mkdir -p "$OUT"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true

run() { # run LABEL MODEL DTYPE [RECIPES BATCH SEQ [EXTRA...]]
    local label="$1" model="$2" dtype="$3" recipes="${4:-$RECIPES}" batch="${5:-$BATCH}" seq="${6:-$SEQ}"
    shift 6 2>/dev/null || shift $#
    echo
    echo "== $label ($dtype, batch $batch x $seq${*:+, $*}) =="
    # GPU memory sampled every 200 ms while the bench runs (its peak, in MiB).
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$OUT/$label-$dtype.gpumem" 2>/dev/null &
    local sampler=$!
    "$BIN" bench "$model" --device "$DEVICE" --dtype "$dtype" --recipes "$recipes" \
        --batch "$batch" --seq "$seq" --steps "$STEPS" --warmup "$WARMUP" "$@" | tee "$OUT/$label-$dtype.md"
    kill "$sampler" 2>/dev/null || true
    echo "GPU memory peak (all processes): $(sort -n "$OUT/$label-$dtype.gpumem" | tail -1) MiB"
}

"$BIN" make-tiny --out "$OUT/tiny" --layers 4 --hidden 256 --intermediate 688 --heads 8 --kv-heads 4 >/dev/null
run tiny "$OUT/tiny" f32
if [ -f "$MODEL/config.json" ]; then
    run smollm2 "$MODEL" f32
    run smollm2 "$MODEL" bf16
    run smollm2-long "$MODEL" bf16 "$LONG_RECIPES" "$LONG_BATCH" "$LONG_SEQ" --probe-prompts 0
    run smollm2-long-ckpt "$MODEL" bf16 "$LONG_RECIPES" "$LONG_BATCH" "$LONG_SEQ" --probe-prompts 0 --activation-checkpointing
else
    echo "no model at $MODEL: only the tiny model was measured" >&2
fi
