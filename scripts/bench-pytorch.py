#!/usr/bin/env python3
"""The PyTorch side of `tunescope bench`: the same training step on the same shapes, for the ratio.

    PY=$(scripts/conformance-env.sh)
    $PY scripts/bench-pytorch.py models/smollm2-135m-instruct > pytorch.json
    target/release/tunescope bench models/smollm2-135m-instruct --pytorch pytorch.json

For each recipe, in a fresh process (the peak RSS is per process): the trainable tensors are the
ones `tunescope plan recipes/RECIPE.yaml --json` resolves on the model, so both sides train the
same set; batch B x T random token ids (every position labelled), float32, eager attention,
torch.optim.AdamW (foreach) at lr 1e-5, `--threads` intra-op threads; the median step of
`--steps` after `--warmup`. Prints {"recipes": {NAME: {"tokens_per_s", "step_s", "peak_rss_bytes"}},
"torch": VERSION, ...} as JSON on stdout.
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def trainable_names(tunescope, recipe, model):
    out = subprocess.run(
        [tunescope, "plan", f"recipes/{recipe}.yaml", "--set", f"model={model}", "--json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return set(json.loads(out)["tensors"])


def measure(args, recipe):
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager")
    names = trainable_names(args.tunescope, recipe, args.model)
    found = set()
    for name, param in model.named_parameters():
        param.requires_grad_(name in names)
        if name in names:
            found.add(name)
    # Tied embeddings: transformers names the shared tensor once.
    missing = names - found - {"lm_head.weight"}
    if missing:
        sys.exit(f"{recipe}: tunescope trains tensors PyTorch does not have: {sorted(missing)[:5]}")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0)
    model.train()
    vocab = model.config.vocab_size
    times = []
    for step in range(args.warmup + args.steps):
        ids = torch.randint(16, vocab, (args.batch, args.seq))
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    step = statistics.median(times)
    return {
        "tokens_per_s": args.batch * args.seq / step,
        "step_s": step,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "trainable": sum(p.numel() for p in params),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--recipes", default="sa-proj,mlp-gate-up,mlp,full-llm")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tunescope", default="target/release/tunescope")
    parser.add_argument("--single", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        json.dump(measure(args, args.single), sys.stdout)
        return
    import torch

    results = {}
    for recipe in args.recipes.split(","):
        cmd = [sys.executable, __file__, args.model, "--single", recipe]
        for flag in ("batch", "seq", "steps", "warmup", "threads", "seed", "tunescope"):
            cmd += [f"--{flag}", str(getattr(args, flag))]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[recipe] = json.loads(out)
        print(f"{recipe}: {results[recipe]['tokens_per_s']:.0f} tokens/s", file=sys.stderr)
    json.dump(
        {
            "torch": torch.__version__,
            "threads": args.threads,
            "batch": args.batch,
            "seq": args.seq,
            "steps": args.steps,
            "warmup": args.warmup,
            "recipes": results,
        },
        sys.stdout,
        indent=1,
    )
    print()


if __name__ == "__main__":
    main()
