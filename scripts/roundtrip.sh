#!/usr/bin/env bash
# The opt-in round trips with the real Python trainers (tests/roundtrip.rs): builds the pinned
# environments (scripts/conformance-env.sh; about 3 GB each with torch, once) and runs the tests
# against them. ~10 min on 2 cores once the environments exist.
#   scripts/roundtrip.sh                 # all: transformers + TRL, LLaMA-Factory, Axolotl
#   SKIP_TRAINERS=1 scripts/roundtrip.sh # only transformers + TRL
set -euo pipefail
cd "$(dirname "$0")/.."
export TUNESCOPE_PYTHON="$(scripts/conformance-env.sh main)"
if [ -z "${SKIP_TRAINERS:-}" ]; then
  export TUNESCOPE_LLAMAFACTORY_PYTHON="$(scripts/conformance-env.sh llamafactory)"
  export TUNESCOPE_AXOLOTL_PYTHON="$(scripts/conformance-env.sh axolotl)"
fi
cargo test --locked --test roundtrip -- --nocapture --test-threads 1
