#!/usr/bin/env python3
"""Reads an exported axolotl.yaml with Axolotl's own config loader (validation and normalisation),
loads the model and applies Axolotl's own freezing to it, then prints as JSON which parameters
Axolotl would train. Used by tests/roundtrip.rs; needs the environment from
`scripts/conformance-env.sh axolotl`.

    python scripts/axolotl-check.py axolotl.yaml
"""
import json
import sys

import torch
from axolotl.cli.config import load_cfg
from axolotl.utils.freeze import freeze_layers_except
from transformers import AutoModelForCausalLM


def main():
    cfg = load_cfg(sys.argv[1])
    model = AutoModelForCausalLM.from_pretrained(cfg.base_model, dtype=torch.float32)
    if cfg.unfrozen_parameters:
        freeze_layers_except(model, cfg.unfrozen_parameters)
    trainable = sorted(name for name, p in model.named_parameters() if p.requires_grad)
    print(json.dumps({"trainable": trainable, "learning_rate": cfg.learning_rate}))


if __name__ == "__main__":
    main()
