"""Old against new, side by side in one run: what one pruning run costs, per phase and method.

Every measurement is a fresh subprocess (``owl.pipeline.run_prune``, the public entry point both
trees share) with ``PYTHONPATH`` at the tree under test, run one after another on the same
machine, so old and new see the same load. Reported per run: the phases that ``run_prune`` times
(statistics pass, pruning pass, evaluation), the whole process (model load included), tokens/s of
the pruning pass, its share of the measured float32 matmul rate, and peak resident memory.

Protocol (issue 11): SmolLM2-135M, 70% unstructured, M 5, lambda 0.08, 8 C4 windows of 2048,
seed 0, the first 8 WikiText-2 windows; weights and pruning pass in float32; evaluation in the
default config's ``eval_dtype`` (``--eval_dtype``). Old code: a checkout of the commit before the
work (``git worktree add --detach ../old <commit>``).

    OWL_DATA_DIR=../shared/data python bench/bench_speed.py --old ../old --out bench/results/results_speed.json
    OWL_DATA_DIR=../shared/data python bench/bench_speed.py --old ../old --protocol default \
        --out bench/results/results_speed_default_protocol.json      # the default config's protocol, OWL w. Wanda
    # (first run and statistics cached, about 1 h here by estimate; --runs "wanda_owl, first run" for the first alone)
    OWL_DATA_DIR=../shared/data python bench/bench_speed.py --old ../old --no_mixed --repeats 3 \
        --runs "wanda_owl, statistics cached;sparsegpt_owl, statistics cached" --out bench/results/results_speed_repeats.json
    # the chosen runs three times over, old and new alternating which goes first: each repeat's
    # new/old ratio is one pair, summarised as a geometric mean with a 95% t-interval ("ratios")
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (label, prune_method, statistics cached?, evaluate?, extra settings). The first run of a tree
# computes the statistics; the others reuse them, as a grid does.
RUNS = (
    ("wanda_owl, first run", "wanda_owl", False, True, {}),
    ("wanda_owl, statistics cached", "wanda_owl", True, True, {}),
    ("wanda", "wanda", True, False, {}),
    ("sparsegpt_owl, statistics cached", "sparsegpt_owl", True, True, {}),
    ("sparsegpt", "sparsegpt", True, False, {}),
    ("magnitude", "magnitude", True, False, {}),
)
MIXED_RUNS = (  # statistics of bf16 forwards are their own (their meta differs): computed first
    ("wanda_owl, first run, bf16 forwards", "wanda_owl", False, True, {"forward_dtype": "bfloat16"}),
    ("wanda_owl, statistics cached, bf16 forwards", "wanda_owl", True, True, {"forward_dtype": "bfloat16"}),
    ("sparsegpt_owl, statistics cached, bf16 forwards", "sparsegpt_owl", True, True, {"forward_dtype": "bfloat16"}),
)

WORKER = r"""
import json, resource, sys, time
started = time.perf_counter()
import torch
spec = json.loads(sys.argv[1])
torch.set_num_threads(spec["threads"])
from owl.pipeline import run_prune
from owl.settings import PruneSettings
result = run_prune(PruneSettings(**spec["settings"]))
print("BENCH " + json.dumps({
    "process_s": time.perf_counter() - started,
    "timings_s": result["timings_s"],
    "ppl": result["ppl"].get("wikitext2"),
    "achieved_sparsity": result["achieved_sparsity"],
    "eval_dtype": result["eval_dtype"],
    "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""

MATMUL = r"""
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
a, b = torch.randn(4096, 576), torch.randn(576, 1536)
for _ in range(3): a @ b
best = min((lambda t0: (a @ b, time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(20))
print(json.dumps(2 * 4096 * 576 * 1536 / best / 1e9))
"""


def cpu_record() -> dict:
    """The CPU model, core count and the flags that decide matmul precision (owl.precision's)."""
    sys.path.insert(0, str(REPO))
    from owl.precision import cpu_info

    return {**cpu_info(), "cores": os.cpu_count()}


def run_worker(tree: Path, spec: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, "-c", WORKER, json.dumps(spec)], env=env, cwd=tree,
                          capture_output=True, text=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("BENCH ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker failed in {tree}:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("BENCH "):])


def flops_per_token(hidden=576, intermediate=1536, q_heads=9, kv_heads=3, head_dim=64, seqlen=2048) -> float:
    """Multiply-adds x 2 of one LLaMA block per token: linears plus causal attention (half of QK^T, AV)."""
    linear = hidden * hidden * 2 + hidden * kv_heads * head_dim * 2 + 3 * hidden * intermediate
    attention = 2 * q_heads * head_dim * seqlen / 2
    return 2 * (linear + attention)


def paired_ratios(runs: list[dict], phase: str = "process") -> dict[str, dict]:
    """Per label, new / old of ``phase`` (``"process"``: the whole process; else a ``timings_s``
    key) paired within each repeat, summarised as owl.uncertainty summarises seeds: geometric mean
    and 95% t-interval (none from one pair). Warm-ups and runs without a partner are left out."""
    from owl.uncertainty import ratio_interval

    def seconds(run):
        return run["process_s"] if phase == "process" else run["timings_s"][phase]

    timed: dict[str, dict[int, dict[str, float]]] = {}
    for run in runs:
        if not run.get("warmup"):
            timed.setdefault(run["label"], {}).setdefault(run.get("repeat", 0), {})[run["tree"]] = seconds(run)
    summary = {}
    for label, repeats in timed.items():
        ratios = [pair["new"] / pair["old"] for _, pair in sorted(repeats.items()) if {"old", "new"} <= set(pair)
                  and pair["old"] > 0 and pair["new"] > 0]
        if ratios:
            r = ratio_interval(ratios)
            summary[label] = {"ratios": ratios, "ratio": r.ratio, "lower": r.lower, "upper": r.upper, "n": r.n_pairs}
    return summary


def _settings(args, stats: Path, method: str, evaluate: bool, **extra) -> dict:
    return {"model": args.model, "prune_method": method, "sparsity_ratio": 0.7, "Hyper_m": 5.0, "Lamda": 0.08,
            "nsamples": args.nsamples, "seqlen": args.seqlen, "seed": 0, "device": "cpu", "dtype": "float32",
            "calib_batch_size": args.calib_batch_size, "stats_path": str(stats),
            "eval_dtype": args.eval_dtype, "eval_limit": args.eval_limit,
            "eval_dataset": "wikitext2" if evaluate else None, **extra}


def throughput(tree: Path, args, work: Path) -> dict:
    """Two OWL w. Wanda runs (statistics cached, evaluation on) side by side with half the threads
    each, against the same two one after the other with all threads: which finishes a grid sooner."""
    from concurrent.futures import ThreadPoolExecutor

    stats = work / "throughput-stats.pt"
    run_worker(tree, {"threads": args.threads, "settings": _settings(args, stats, "wanda_owl", False)})  # statistics
    settings = _settings(args, stats, "wanda_owl", True)
    tick = time.perf_counter()
    sequential = [run_worker(tree, {"threads": args.threads, "settings": settings}) for _ in range(2)]
    sequential_s = time.perf_counter() - tick
    half = max(1, args.threads // 2)
    tick = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        parallel = list(pool.map(lambda _: run_worker(tree, {"threads": half, "settings": settings}), range(2)))
    parallel_s = time.perf_counter() - tick
    return {"sequential": {"threads": args.threads, "wall_s": sequential_s, "runs": sequential},
            "side_by_side": {"threads_each": half, "wall_s": parallel_s, "runs": parallel},
            "side_by_side_over_sequential": parallel_s / sequential_s}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", required=True, help="checkout of the code before the change")
    p.add_argument("--new", default=str(REPO))
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--nsamples", type=int, default=8)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--eval_limit", type=lambda v: None if v == "all" else int(v), default=8,
                   help="WikiText-2 test windows to evaluate ('all': the whole test set)")
    p.add_argument("--protocol", choices=("issue", "default"), default="issue",
                   help="default: the default config's protocol (32 windows of 2048, the whole test set), OWL w. Wanda "
                        "first run and cached, old and new, float32 pruning (~40 min here); overrides --nsamples, "
                        "--eval_limit, --runs and --no_mixed")
    p.add_argument("--eval_dtype", default="bfloat16", help="the default config's (auto: bfloat16 on an avx512_bf16 CPU)")
    p.add_argument("--calib_batch_size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1,
                   help="run the plan this many times, old and new alternating which goes first (paired ratios)")
    p.add_argument("--runs", default="", help="';'-separated labels to run (default: all)")
    p.add_argument("--no_mixed", action="store_true", help="skip the bf16-forward runs of the new tree")
    p.add_argument("--no_eval", action="store_true",
                   help="statistics and pruning passes only (the default protocol's whole-test-set evaluation: ~9 min a run here at 2 threads, estimated)")
    p.add_argument("--trees", default="old,new", help="which trees run the plan (e.g. new alone for --calib_batch_size)")
    p.add_argument("--concurrency", action="store_true",
                   help="grid throughput instead: two runs at once with threads/2 each against one run at --threads (new tree)")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "results_speed.json"))
    args = p.parse_args(argv)
    if args.protocol == "default":
        args.nsamples, args.eval_limit, args.no_mixed = 32, None, True
        args.runs = args.runs or "wanda_owl, first run;wanda_owl, statistics cached"

    trees = {"old": Path(args.old).resolve(), "new": Path(args.new).resolve()}
    work = Path(tempfile.mkdtemp(prefix="owl-bench-speed-"))
    gflops = json.loads(subprocess.run([sys.executable, "-c", MATMUL, str(args.threads)], capture_output=True, text=True, check=True).stdout)
    report = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu": cpu_record(),
              "matmul_gflops_float32": gflops, "args": vars(args), "runs": []}
    tokens = args.nsamples * args.seqlen
    # The pruning pass: two block forwards (observe + recompute) over the calibration tokens.
    pass_flop = 2 * 30 * tokens * flops_per_token(seqlen=args.seqlen)
    if args.concurrency:
        report["concurrency"] = throughput(trees["new"], args, work)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        print(json.dumps(report["concurrency"], indent=1))
        return 0
    names = [n.strip() for n in args.trees.split(",") if n.strip()]
    if args.repeats < 1:
        p.error(f"--repeats is {args.repeats}; it must be at least 1")
    wanted = {w.strip() for w in args.runs.split(";") if w.strip()}
    unknown = wanted - {r[0] for r in RUNS + MIXED_RUNS}
    if unknown:
        p.error(f"--runs names unknown runs {sorted(unknown)}; known: {[r[0] for r in RUNS + MIXED_RUNS]}")
    runs = [r for r in RUNS if not wanted or r[0] in wanted]
    mixed = [] if args.no_mixed else [r for r in MIXED_RUNS if not wanted or r[0] in wanted]
    plan = []
    for repeat in range(args.repeats):
        order = names if repeat % 2 == 0 else names[::-1]  # interleaved, first place alternating: drift hits both alike
        plan += [(repeat, name, r) for r in runs for name in order] + [(repeat, "new", r) for r in mixed]

    def stats_path(tree_name, extra):
        return work / f"{tree_name}-{extra.get('forward_dtype', 'float32')}-stats.pt"

    def measure(tree_name, label, method, cached, evaluate, extra, repeat, warmup=False):
        stats = stats_path(tree_name, extra)
        if not cached and stats.exists():
            stats.unlink()
        settings = _settings(args, stats, method, evaluate and not args.no_eval, **extra)
        tick = time.perf_counter()
        out = run_worker(trees[tree_name], {"threads": args.threads, "settings": settings})
        out["wall_s"] = time.perf_counter() - tick
        pruning = out["timings_s"]["pruning"]
        if method != "magnitude" and pruning > 0:
            out["pruning_tokens_per_s"] = tokens / pruning
            out["pruning_share_of_matmul_rate"] = pass_flop / pruning / (gflops * 1e9)
        row = {"tree": tree_name, "label": label, "method": method, "repeat": repeat, **out}
        if warmup:
            row["warmup"] = True  # computed the statistics a cached run needs; not a measurement
        report["runs"].append(row)
        t = out["timings_s"]
        print(f"{tree_name:3} {label:48} stats {t['calibration']:7.1f}  pruning {pruning:7.1f}  eval {t['evaluation']:6.1f}  "
              f"process {out['process_s']:7.1f}  ppl {out['ppl']}  rss {out['max_rss_mib']:.0f} MiB", flush=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")  # partial results survive an interruption

    for repeat, tree_name, (label, method, cached, evaluate, extra) in plan:
        if cached and not stats_path(tree_name, extra).exists():
            # No first run before it: one computes the statistics, recorded but left out of the ratios.
            measure(tree_name, "statistics (warm-up)", "wanda_owl", False, False, extra, repeat, warmup=True)
        measure(tree_name, label, method, cached, evaluate, extra, repeat)
    if "old" in names and "new" in names:
        report["ratios"] = {phase: paired_ratios(report["runs"], phase) for phase in ("process", "pruning", "evaluation")}
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        for label, r in report["ratios"]["process"].items():
            print(f"whole process new/old  {label:40} {r['ratio']:.3f} [{r['lower']:.3f}, {r['upper']:.3f}]  n={r['n']}  "
                  f"pairs {', '.join(f'{x:.3f}' for x in r['ratios'])}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
