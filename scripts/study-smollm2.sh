#!/usr/bin/env bash
# The real-model study (docs/study/README.md): the four shipped recipes fine-tune SmolLM2-135M-Instruct on the
# counting items of assets/ with the same data, steps, batch, learning rate and seed, and `tunescope demo-report`
# prints the learning vs forgetting table. Needs models/smollm2-135m-instruct (scripts/fetch-smollm2.sh).
#
# Usage: scripts/study-smollm2.sh [extra demo-report options]   e.g. --seeds 3 (mean ± std), --set optimizer.lr=5e-5
# Counting is scored on all 200 items (0.5 pp each); capitals has 40.
# Env:   MODEL (default models/smollm2-135m-instruct), RUNS (default runs/study), BIN (default target/release/tunescope)
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL="${MODEL:-models/smollm2-135m-instruct}"
RUNS="${RUNS:-runs/study}"
BIN="${BIN:-target/release/tunescope}"
[ -f "$MODEL/config.json" ] || { echo "no model at $MODEL: run scripts/fetch-smollm2.sh first" >&2; exit 1; }
[ -x "$BIN" ] || cargo build --release

"$BIN" demo-report --runs "$RUNS" \
    --recipes recipes/sa-proj.yaml recipes/mlp-gate-up.yaml recipes/mlp.yaml recipes/full-llm.yaml \
    --set model="$MODEL" \
    --set data=assets/train/counting.jsonl \
    --set max_length=256 \
    --set batch_size=8 \
    --set max_steps=40 \
    --set optimizer.lr=1e-4 \
    --set schedule.warmup_ratio=0.1 \
    --set seed=42 \
    --set probe.every_steps=20 \
    --set probe.heldout=docs/study/probe-heldout.jsonl \
    --set probe.target=assets/probe/target.jsonl \
    --set probe.max_new_tokens=8 \
    --set probe.max_prompts=32 \
    --set probe.layer_drift=false \
    --set eval.every_steps=20 \
    --set 'eval.tasks=[docs/study/counting.yaml, docs/study/capitals.yaml, assets/tasks/category.yaml]' \
    --set eval.max_items=200 \
    "$@"
