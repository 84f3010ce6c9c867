#!/usr/bin/env bash
# Builds a pinned Python environment and prints its python. Python stays around the product, never
# inside it: nothing in `cargo test` needs these environments.
#
#   scripts/conformance-env.sh               # torch + transformers 5 + TRL + PEFT: writes the conformance
#                                            # fixtures (scripts/conformance-fixtures.py), runs the TRL and
#                                            # transformers round trips (tests/roundtrip.rs)
#   scripts/conformance-env.sh llamafactory  # LLaMA-Factory with the stack it pins
#   scripts/conformance-env.sh axolotl       # Axolotl with the stack it pins
#
# Each lives in ${TUNESCOPE_PYENV_ROOT:-$HOME/.cache/tunescope}/pyenv[-NAME]; pip's wheel cache
# (~/.cache/pip) keeps torch's large wheels for the next build. Each trainer pins its own torch and
# transformers, so they cannot share one environment.
set -euo pipefail
which="${1:-main}"
root="${TUNESCOPE_PYENV_ROOT:-$HOME/.cache/tunescope}"
py="${PYTHON:-python3}"
case "$which" in
  main)
    venv="$root/pyenv"
    pins=("torch==2.15.0" "transformers==5.24.0" "trl==1.16.0" "peft==0.21.2" "accelerate==1.15.0"
          "safetensors==0.8.0" "tokenizers==0.23.3" "jinja2==3.1.6" "pillow==12.3.0" "datasets")
    ;;
  llamafactory)
    venv="$root/pyenv-llamafactory"
    pins=("llamafactory==0.9.5")   # brings transformers 5.6.0, trl 0.24.0, torch 2.15.0
    ;;
  axolotl)
    venv="$root/pyenv-axolotl"
    pins=("axolotl==0.19.0")       # brings transformers 5.16.1, trl 1.9.0, torch 2.13.0
    ;;
  *)
    echo "usage: $0 [main|llamafactory|axolotl]" >&2
    exit 2
    ;;
esac
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
fi
if ! "$venv/bin/python" - "${pins[@]}" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    if "==" in pin:
        name, want = pin.split("==")
        assert version(name) == want, pin
PY
then
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
  "$venv/bin/python" -m pip install "${pins[@]}" >&2
fi
echo "$venv/bin/python"
