"""Evaluation forward in float32 against bfloat16 on this CPU, side by side in one process.

One 2048-token window through the default model, the two precisions alternating ``--repeats`` times
(after one untimed warm-up each), at ``--threads`` threads. Records the CPU (model, family, flags)
and the bfloat16 / float32 time ratio per pair: what ``auto`` and the zoo's pinned float32
evaluation rest on. Usage: ``python bench/bench_eval_precision.py --out bench/results/results_eval_precision.json``.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch

from owl.models import default_cache_dir, load_model
from owl.precision import cpu_info
from owl.results import write_json_atomic


def cpuinfo_identity() -> dict:
    """cpu family and model as /proc/cpuinfo reports them (what names the CPU kind)."""
    info = cpu_info()
    return {key: info[field] for key, field in (("cpu family", "family"), ("model", "model_number")) if field in info}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seqlen", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="bench/results/results_eval_precision.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, _ = load_model("smollm2-135m", "float32", default_cache_dir())
    window = torch.randint(0, model.config.vocab_size, (1, args.seqlen), generator=torch.Generator().manual_seed(0))
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}

    def forward_seconds(name: str) -> float:
        model.to(dtypes[name])
        tick = time.perf_counter()
        with torch.no_grad():
            model(window)
        return time.perf_counter() - tick

    for name in dtypes:  # warm-up
        forward_seconds(name)
    pairs = []
    for repeat in range(args.repeats):
        order = list(dtypes) if repeat % 2 == 0 else list(reversed(dtypes))
        seconds = {name: forward_seconds(name) for name in order}
        pairs.append({**seconds, "first": order[0], "bf16_over_fp32": seconds["bfloat16"] / seconds["float32"]})
    ratios = [p["bf16_over_fp32"] for p in pairs]
    write_json_atomic(args.out, {
        "what": "one forward of a window through SmolLM2-135M, float32 and bfloat16 alternating",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu_info(), "cpuinfo": cpuinfo_identity(), "load_average": os.getloadavg(),
        "seqlen": args.seqlen, "threads": args.threads, "pairs": pairs,
        "bf16_over_fp32_geometric_mean": math.exp(sum(map(math.log, ratios)) / len(ratios)),
    })
    print(f"bfloat16 / float32 time: {', '.join(f'{r:.2f}' for r in ratios)} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
