"""Where the pruning pass spends its time: torch.profiler over one uniform pruning pass.

Loads the model and calibration windows as a run does (owl.pipeline.RunContext), then prunes
with ``owl.pruning.prune_model`` under ``torch.profiler`` and groups the operators' self CPU time
into what the pass does: matrix products, attention, Wanda's row selection, statistics and
elementwise work. The shares say where a speed-up could come from; seconds under the profiler
are inflated (it records every op), so take speed from bench_speed.py, not from here.

    OWL_DATA_DIR=../shared/data python bench/profile_pruning.py --method wanda --nsamples 2 --threads 1 \
        --out bench/results/results_profile_pruning.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_speed import cpu_record  # noqa: E402
from owl.allocation import uniform_sparsities  # noqa: E402
from owl.methods import LayerTarget, MethodOptions  # noqa: E402
from owl.pipeline import RunContext  # noqa: E402
from owl.pruning import prune_model  # noqa: E402

# Operator name -> what it is part of (first matching prefix wins; the rest is "other").
GROUPS = (
    ("matrix products", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm")),
    ("attention", ("aten::_scaled_dot_product_flash_attention", "aten::_flash_attention", "aten::_scaled_dot_product")),
    ("row selection (kthvalue, compares, cumsum)", ("aten::kthvalue", "aten::lt", "aten::eq", "aten::cumsum", "aten::sort",
                                                    "aten::logical_or", "aten::scatter")),
    ("elementwise (norms, rotary, activation, residual)", ("aten::mul", "aten::add", "aten::pow", "aten::mean", "aten::rsqrt",
                                                           "aten::silu", "aten::neg", "aten::sub", "aten::div", "aten::abs",
                                                           "aten::sqrt", "aten::sum", "aten::cat")),
    ("copies and layout", ("aten::copy_", "aten::clone", "aten::contiguous", "aten::to", "aten::_to_copy", "aten::index",
                           "aten::slice", "aten::expand", "aten::reshape", "aten::view", "aten::transpose", "aten::zeros",
                           "aten::empty", "aten::fill_", "aten::zero_")),
)


def group_of(name: str) -> str:
    for group, prefixes in GROUPS:
        if any(name == p or name.startswith(p + "_") or name.startswith(p + ".") for p in prefixes):
            return group
    return "other"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--method", default="wanda", choices=["wanda", "sparsegpt"])
    parser.add_argument("--sparsity", type=float, default=0.7)
    parser.add_argument("--nsamples", type=int, default=2)
    parser.add_argument("--seqlen", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    ctx = RunContext(args.model, "float32", "cpu", None)
    windows, _ = ctx.calibration("c4", args.nsamples, args.seqlen, 0)
    targets = [LayerTarget(s) for s in uniform_sparsities(len(ctx.blocks), args.sparsity)]
    options = MethodOptions()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        prune_model(ctx.model, args.method, targets, options, ctx.device, windows, batch_size=8)
        seconds = time.perf_counter() - started
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    groups: dict[str, float] = {}
    for e in events:
        groups[group_of(e.key)] = groups.get(group_of(e.key), 0.0) + e.self_cpu_time_total
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_record(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "seconds_under_profiler": seconds,
        "share_by_group": {g: t / total for g, t in sorted(groups.items(), key=lambda kv: -kv[1])},
        "top_ops_self_share": [{"op": e.key, "share": e.self_cpu_time_total / total, "calls": e.count} for e in top],
    }
    for group, share in report["share_by_group"].items():
        print(f"{share:6.1%}  {group}")
    print("--- top operators by self time")
    for row in report["top_ops_self_share"]:
        print(f"{row['share']:6.1%}  {row['op']}  ({row['calls']} calls)")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
