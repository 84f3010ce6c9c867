#!/usr/bin/env python3
"""Writes the PEFT LoRA conformance fixtures under tests/fixtures/conformance-lora/.

    $(scripts/conformance-env.sh) scripts/conformance-lora.py [--out tests/fixtures/conformance-lora]

For some tiny models of the transformers conformance fixtures (tests/fixtures/conformance/models/<case>,
written by scripts/conformance-fixtures.py), PEFT applies a seeded LoRA adapter whose B is non-zero (a fresh
adapter would change nothing), saves it with save_pretrained, and records the adapted model's logits on a padded
batch. tests/lora_conformance.rs loads base + adapter through tunescope without Python and compares the logits.
Nothing is downloaded; rerunning rewrites the same files (same pinned versions).
"""

import argparse
import json
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "tests/fixtures/conformance/models"

# case, base fixture, LoRA settings: each case exercises something else (all linears; a subset with
# qkv biases in the base, rsLoRA and dropout that must not apply at inference; a regex target).
CASES = [
    ("llama-all-linears", "llama", dict(r=4, lora_alpha=8,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])),
    ("qwen2-rslora", "qwen2", dict(r=8, lora_alpha=4, use_rslora=True, lora_dropout=0.1,
        target_modules=["q_proj", "v_proj", "down_proj"])),
    ("gemma2-regex", "gemma2", dict(r=2, lora_alpha=16,
        target_modules=r"model\.layers\.1\.mlp\.(gate|up)_proj")),
]

INPUT_IDS = [[3, 40, 41, 42, 43, 44, 45, 46], [3, 50, 60, 70, 80, 0, 0, 0]]
ATTENTION_MASK = [[1] * 8, [1, 1, 1, 1, 1, 0, 0, 0]]


def write_case(out: Path, name: str, base: str, settings: dict) -> None:
    torch.manual_seed(1234)
    model = AutoModelForCausalLM.from_pretrained(MODELS / base, dtype=torch.float32)
    model.eval()
    config = LoraConfig(task_type="CAUSAL_LM", **settings)
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for module_name, param in sorted(peft_model.named_parameters()):
            if "lora_B" in module_name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    peft_model.eval()
    peft_model.peft_config["default"].base_model_name_or_path = f"tests/fixtures/conformance/models/{base}"
    case_dir = out / name
    with tempfile.TemporaryDirectory() as tmp:
        peft_model.save_pretrained(tmp)
        case_dir.mkdir(parents=True)
        for file in ["adapter_config.json", "adapter_model.safetensors"]:
            shutil.copy(Path(tmp) / file, case_dir / file)
    ids = torch.tensor(INPUT_IDS)
    mask = torch.tensor(ATTENTION_MASK)
    with torch.no_grad():
        logits = peft_model(input_ids=ids, attention_mask=mask).logits.float().contiguous()
    save_file(
        {"input_ids": ids.to(torch.int64), "attention_mask": mask.to(torch.int64), "logits": logits},
        case_dir / "logits.safetensors",
    )
    (case_dir / "case.json").write_text(json.dumps({"base": base}, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "tests/fixtures/conformance-lora")
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    for name, base, settings in CASES:
        write_case(args.out, name, base, settings)
    manifest = {
        "generated_by": "scripts/conformance-lora.py",
        "cases": [name for name, _, _ in CASES],
        "versions": {p: version(p) for p in ["torch", "transformers", "peft", "safetensors"]},
    }
    (args.out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
