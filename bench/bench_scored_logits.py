"""What computing logits only where lm-eval scores saves on the full zero-shot tasks.

A full zero-shot point of SmolLM2-135M on this CPU takes the better part of an hour, too long to
time twice. This bench splits the question in two:

1. The batches lm-eval forms on the full mirrored tasks (batch size, padded width, and how many
   trailing positions ``owl.zeroshot`` keeps), recorded by running the kit's real evaluation path
   with a one-layer stand-in model that has the real tokenizer and vocabulary (cheap, minutes).
2. The real model's forward plus lm-eval's log-softmax, timed on every ``--stride``-th of those
   batch shapes (random token ids: the cost depends on shapes only), with all logits and with the
   kept ones, alternating; the sums are scaled up to all batches.

    OWL_DATA_DIR=/work/shared/data python bench/bench_scored_logits.py --threads 1 \\
        --out bench/results/results_scored_logits.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from owl.data import data_dir_from_env
from owl.models import load_model
from owl.zeroshot import evaluate_zero_shot

TASKS = ["boolq", "rte", "winogrande", "arc_easy", "arc_challenge", "openbookqa"]


def record_batches(tokenizer, tasks, batch_size, data_dir) -> list[dict]:
    """(batch, width, kept) of every forward of a full evaluation, with a one-layer stand-in model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                         num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=8192)
    stand_in = LlamaForCausalLM(config).eval()
    forward, shapes = stand_in.forward, []

    def spy(input_ids, *args, **kwargs):
        batch, width = input_ids.shape
        shapes.append({"batch": batch, "width": width, "kept": kwargs.get("logits_to_keep") or width})
        return forward(input_ids, *args, **kwargs)

    stand_in.forward = spy
    evaluate_zero_shot(stand_in, tokenizer, tasks=tasks, limit=None, batch_size=batch_size, data_dir=data_dir)
    return shapes


def time_batch(model, batch: int, width: int, keep: int | None, generator) -> float:
    ids = torch.randint(1, model.config.vocab_size, (batch, width), generator=generator)
    tick = time.perf_counter()
    with torch.no_grad():
        logits = model(ids, logits_to_keep=keep).logits if keep else model(ids).logits
        F.log_softmax(logits, dim=-1)
    return time.perf_counter() - tick


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--tasks", nargs="+", default=TASKS)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--stride", type=int, default=20, help="time every stride-th batch shape")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model, dtype=args.dtype)
    model.eval()
    shapes = record_batches(tokenizer, args.tasks, args.batch_size, data_dir_from_env())
    sample = shapes[:: args.stride]
    generator = torch.Generator().manual_seed(0)
    full_s = kept_s = 0.0
    load = os.getloadavg()[0]
    for i, shape in enumerate(sample):
        # alternate which mode goes first so a drifting load hits both alike
        order = ("full", "kept") if i % 2 == 0 else ("kept", "full")
        for mode in order:
            seconds = time_batch(model, shape["batch"], shape["width"], shape["kept"] if mode == "kept" else None,
                                 generator)
            if mode == "full":
                full_s += seconds
            else:
                kept_s += seconds
    scale = len(shapes) / len(sample)
    positions = sum(s["batch"] * s["width"] for s in shapes)
    kept_positions = sum(s["batch"] * s["kept"] for s in shapes)
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "batches": len(shapes),
        "timed_batches": len(sample),
        "padded_positions": positions,
        "kept_positions": kept_positions,
        "kept_fraction": kept_positions / positions,
        "projected_forward_and_log_softmax_s": {"full": full_s * scale, "kept": kept_s * scale},
        "saving": 1.0 - kept_s / full_s,
        "loadavg_before": load,
        "loadavg_after": os.getloadavg()[0],
    }
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
