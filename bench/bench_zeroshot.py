"""Zero-shot throughput of the kit's lm-eval path (``owl.zeroshot.evaluate_zero_shot``) per batch size.

``--logits scored full`` also compares the kit's scored-positions-only logits with lm-eval's plain
HFLM (full logits at every position); the accuracies must agree.

For each batch size, evaluates the dense model on the same tasks and limit and records the wall
time, the time spent inside the model's forward (the rest is lm-eval's bookkeeping: tokenising,
padding, log-softmax, gathering), requests and tokens per second, and the accuracies (which should
not depend on the batch size beyond bfloat16 rounding of padded batches). Runs alternate between
batch sizes (``--repeats`` rounds) so that a shared machine's load hits them alike; the load average
is recorded with every run.

    OWL_DATA_DIR=/work/shared/data python bench/bench_zeroshot.py --batch_sizes 8 32 --limit 200 \\
        --out bench/results/results_zeroshot.json
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from owl.data import data_dir_from_env
from owl.models import load_model
from owl.zeroshot import evaluate_zero_shot


class ForwardTimer:
    """Wraps ``model.forward`` to sum the time spent in it and count calls and tokens."""

    def __init__(self, model):
        self.model, self.seconds, self.calls, self.tokens = model, 0.0, 0, 0
        self._forward = model.forward

    def __enter__(self):
        def timed(*args, **kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            tick = time.perf_counter()
            out = self._forward(*args, **kwargs)
            self.seconds += time.perf_counter() - tick
            self.calls += 1
            self.tokens += int(ids.numel()) if ids is not None else 0
            return out

        self.model.forward = timed
        return self

    def __exit__(self, *exc):
        self.model.forward = self._forward


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--tasks", nargs="+", default=["boolq", "arc_easy", "winogrande"])
    p.add_argument("--limit", type=int, default=200, help="examples per task")
    p.add_argument("--batch_sizes", nargs="+", default=["8", "32"])
    p.add_argument("--logits", nargs="+", choices=["scored", "full"], default=["scored"],
                   help="scored: logits only where lm-eval scores (the kit's default); full: plain HFLM")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model, dtype=args.dtype)
    data_dir = data_dir_from_env()
    runs = []
    for round_ in range(args.repeats):
        for bs, logits in itertools.product(args.batch_sizes, args.logits):
            batch_size = int(bs) if bs.isdigit() else bs
            load = os.getloadavg()[0]
            with ForwardTimer(model) as timer:
                tick = time.perf_counter()
                details = evaluate_zero_shot(model, tokenizer, tasks=args.tasks, limit=args.limit,
                                             batch_size=batch_size, data_dir=data_dir,
                                             scored_logits_only=logits == "scored")
                wall = time.perf_counter() - tick
            run = {
                "batch_size": bs, "logits": logits, "round": round_, "wall_s": wall, "forward_s": timer.seconds,
                "forward_share": timer.seconds / wall, "forward_calls": timer.calls,
                "padded_tokens": timer.tokens, "padded_tokens_per_s": timer.tokens / wall,
                "accuracy": details["accuracy"], "n_examples": details["n_examples"],
                "loadavg_before": load, "loadavg_after": os.getloadavg()[0],
            }
            runs.append(run)
            print(json.dumps({k: v for k, v in run.items() if k != "accuracy"}), flush=True)
    summary = {}
    for bs, logits in itertools.product(args.batch_sizes, args.logits):
        mine = [r for r in runs if r["batch_size"] == bs and r["logits"] == logits]
        summary[f"{bs}/{logits}"] = {
            "median_wall_s": statistics.median(r["wall_s"] for r in mine),
            "median_forward_share": statistics.median(r["forward_share"] for r in mine),
            "accuracy": mine[0]["accuracy"],
        }
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "runs": runs,
        "summary": summary,
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
