#!/usr/bin/env python3
"""Logits of a model directory as transformers computes them, for tunescope's round-trip tests.

    python scripts/hf-logits.py MODEL_DIR '[[ids...], ...]'   # prints {"logits": [[[...]]]} as JSON
    python scripts/hf-logits.py MODEL_DIR '[[ids...], ...]' ADAPTER_DIR   # with a PEFT adapter (PeftModel)

Sequences are run one by one (no padding), in float32 with eager attention.
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM


def main():
    model_dir, ids_json = sys.argv[1], sys.argv[2]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    if len(sys.argv) > 3:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, sys.argv[3])
    model.eval()
    out = []
    with torch.no_grad():
        for ids in json.loads(ids_json):
            logits = model(torch.tensor([ids])).logits[0]
            out.append(logits.tolist())
    json.dump({"logits": out}, sys.stdout)


if __name__ == "__main__":
    main()
