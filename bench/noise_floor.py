"""Noise floor: how much one pruned run's perplexity moves with the float path alone, beside the
seed-to-seed spread of the calibration sample.

For SmolLM2-135M (default), Wanda and OWL w. Wanda at 50% and 70%, the same calibration seed:

- threads: 2 vs 1 (torch intra-op threads; every configuration runs in its own subprocess, since
  the thread count must be set before any work),
- calibration batch: 8 vs 1 windows per forward of the pruning pass,
- attention: sdpa vs eager (``--attn_implementation``),

each against the base configuration (2 threads, batch 8, sdpa), and beside them the same base
configuration at seeds 0..K-1 (other calibration windows). Per point it reports |log(ppl_a/ppl_b)|
for each float-path factor, the seeds' geometric standard deviation and mean pairwise
|log ratio| (the same quantity as a factor's: the typical log ratio of two runs that differ only
in their calibration windows), which of the two dominates, and OWL / uniform per configuration.

OWL's dense statistics are computed once per seed (by the base configuration, which runs first)
and reused by every float-path variant, through the statistics cache: its outlier ratios do not
move with the float path (the issue measured 1e-15), so the spread measured is the pruning pass's
and the evaluation's. ``--own_statistics`` gives every configuration its own statistics pass.

    OWL_DATA_DIR=/work/shared/data python bench/noise_floor.py            # ~1 h on 2 CPU cores
    python bench/noise_floor.py --quick                                    # smoke test, tiny random model

Writes bench/results/results_noise_floor.json (``--out``) with the machine (CPU model, avx2 /
avx512_bf16 / amx_bf16) and every run, and prints the table.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "bench" / "results" / "results_noise_floor.json"
CPU_FLAGS = ("avx2", "avx512_bf16", "amx_bf16")
BASE = {"threads": 2, "calib_batch_size": 8, "attn_implementation": "sdpa"}
FACTORS = {"threads": 1, "calib_batch_size": 1, "attn_implementation": "eager"}  # each against BASE, one at a time


# ---- the math: pure functions of perplexities ---------------------------------------------------
def log_ratio(a: float, b: float) -> float:
    """|log(a / b)|: the size of a multiplicative change, the same read both ways."""
    return abs(math.log(a / b))


def geometric_sd(values: list[float]) -> float:
    """exp(sample sd of the logs): the multiplicative spread (1 = none); NaN with fewer than 2."""
    logs = [math.log(v) for v in values]
    return math.exp(statistics.stdev(logs)) if len(logs) > 1 else float("nan")


def mean_pairwise_log_ratio(values: list[float]) -> float:
    """Mean |log(a / b)| over all pairs: what one pair of draws typically differs by."""
    pairs = list(itertools.combinations(values, 2))
    return sum(log_ratio(a, b) for a, b in pairs) / len(pairs) if pairs else float("nan")


def summarise(runs: list[dict], base_seed: int) -> list[dict]:
    """One row per (method, sparsity) from run records ``{config, method, sparsity, seed, ppl}``."""
    rows = []
    points = sorted({(r["method"], r["sparsity"]) for r in runs}, key=lambda p: (p[1], p[0]))
    for method, sparsity in points:
        mine = [r for r in runs if (r["method"], r["sparsity"]) == (method, sparsity)]
        base = next(r["ppl"] for r in mine if r["config"] == "base" and r["seed"] == base_seed)
        factors = {name: log_ratio(next(r["ppl"] for r in mine if r["config"] == name), base)
                   for name in FACTORS if any(r["config"] == name for r in mine)}
        seeds = [r["ppl"] for r in sorted(mine, key=lambda r: r["seed"]) if r["config"] == "base"]
        seed_spread = mean_pairwise_log_ratio(seeds)
        float_spread = max(factors.values()) if factors else float("nan")
        dominates = "n/a" if math.isnan(seed_spread) or math.isnan(float_spread) else (
            "seed" if seed_spread > float_spread else "float path")
        rows.append({"method": method, "sparsity": sparsity, "base_ppl": base, "log_ratio": factors,
                     "seed_ppls": seeds, "seed_geometric_sd": geometric_sd(seeds), "seed_mean_pairwise_log_ratio": seed_spread,
                     "max_float_log_ratio": float_spread, "dominates": dominates})
    return rows


def precision_vs_base(runs: list[dict], config: str = "mixed") -> list[dict]:
    """Per (method, sparsity): ``config`` / base paired by seed (same calibration windows), the
    geometric-mean ratio with its 95% t-interval, beside the base's seed-to-seed geometric sd.
    The precision is "just another float path" when the interval holds 1 and the ratio's spread
    is no wider than the seeds'."""
    sys.path.insert(0, str(REPO))
    from owl.uncertainty import pair_by_seed, ratio_interval

    out = []
    for method, sparsity in sorted({(r["method"], r["sparsity"]) for r in runs}, key=lambda p: (p[1], p[0])):
        mine = [r for r in runs if (r["method"], r["sparsity"]) == (method, sparsity)]
        treated = {r["seed"]: r["ppl"] for r in mine if r["config"] == config}
        if not treated:
            continue
        base = {r["seed"]: r["ppl"] for r in mine if r["config"] == "base"}
        pairing = pair_by_seed(treated, base)
        summary = ratio_interval(list(pairing.ratios.values()))
        seed_gsd = geometric_sd(list(base.values()))
        out.append({"method": method, "sparsity": sparsity, "config": config, "ratios": pairing.ratios,
                    "only_one_side": pairing.only_treated + pairing.only_baseline,
                    "ratio": summary.ratio, "lower": summary.lower, "upper": summary.upper, "n_pairs": summary.n_pairs,
                    "ratio_geometric_sd": geometric_sd(list(pairing.ratios.values())), "seed_geometric_sd": seed_gsd,
                    "interval_holds_1": bool(summary.has_interval and summary.lower <= 1 <= summary.upper)})
    return out


def owl_vs_uniform(runs: list[dict]) -> list[dict]:
    """OWL w. Wanda / Wanda per (sparsity, configuration, seed): does the float path flip the comparison?"""
    by_key = {(r["config"], r["seed"], r["sparsity"], r["method"]): r["ppl"] for r in runs}
    out = []
    for (config, seed, sparsity, method), ppl in sorted(by_key.items(), key=lambda kv: (kv[0][2], kv[0][0] != "base", kv[0][0], kv[0][1])):
        uniform = by_key.get((config, seed, sparsity, "wanda"))
        if method == "wanda_owl" and uniform:
            out.append({"sparsity": sparsity, "config": config, "seed": seed, "ratio": ppl / uniform})
    return out


# ---- plumbing -------------------------------------------------------------------------------------
def cpu_info() -> dict:
    """The CPU model and its avx2 / avx512 / bf16 / AMX flags (owl.precision's), and the core count."""
    sys.path.insert(0, str(REPO))
    from owl.precision import cpu_info as owl_cpu_info

    info = owl_cpu_info()
    return {"cpu": info["model"], "logical_cpus": os.cpu_count(), **{flag: flag in info["flags"] for flag in CPU_FLAGS}}


def configurations(seeds: list[int], base_seed: int, mixed_forward_dtype: str | None = None) -> list[dict]:
    """Base at every seed (base_seed first, so it computes the shared statistics), then each factor at
    base_seed; with ``mixed_forward_dtype`` also the base at every seed with block forwards in it."""
    ordered = [base_seed, *[s for s in seeds if s != base_seed]]
    configs = [{"config": "base", "seed": s, **BASE} for s in ordered]
    configs += [{"config": name, "seed": base_seed, **{**BASE, name: value}} for name, value in FACTORS.items()]
    if mixed_forward_dtype:
        configs += [{"config": "mixed", "seed": s, **BASE, "forward_dtype": mixed_forward_dtype} for s in ordered]
    return configs


def child(spec: dict) -> list[dict]:
    """Every (method, sparsity) of one configuration, in this process (threads set first)."""
    import torch

    torch.set_num_threads(spec["threads"])
    from owl.pipeline import run_prune
    from owl.settings import PruneSettings

    records = []
    for method, sparsity in itertools.product(spec["methods"], spec["sparsities"]):
        stats_path = None
        if spec["own_statistics"] and "_owl" in method:
            stats_path = str(Path(spec["work"]) / "stats" / f"{spec['config']}-seed{spec['seed']}.pt")
        settings = PruneSettings(
            model=spec["model"], prune_method=method, sparsity_ratio=sparsity, Hyper_m=spec["Hyper_m"], Lamda=spec["Lamda"],
            nsamples=spec["nsamples"], seqlen=spec["seqlen"], seed=spec["seed"], calib_batch_size=spec["calib_batch_size"],
            attn_implementation=spec["attn_implementation"], dtype=spec["dtype"], eval_dtype=spec["eval_dtype"],
            forward_dtype=spec.get("forward_dtype"),
            device=spec["device"], eval_limit=spec["eval_limit"], cache_dir=spec["cache_dir"], stats_path=stats_path,
        ).validate()
        tick = time.perf_counter()
        result = run_prune(settings)
        records.append({"config": spec["config"], "seed": spec["seed"], "method": method, "sparsity": sparsity,
                        "threads": torch.get_num_threads(), "calib_batch_size": spec["calib_batch_size"],
                        "attn_implementation": result["attn_implementation"], "forward_dtype": result["forward_dtype"],
                        "eval_dtype": result["eval_dtype"], "ppl": result["ppl"]["wikitext2"],
                        "eval_windows": result["eval_windows"], "achieved_sparsity": result["achieved_sparsity"],
                        "outlier_ratios": result["outlier_ratios"], "seconds": round(time.perf_counter() - tick, 1)})
    return records


def run_configuration(spec: dict, env: dict) -> list[dict]:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          env={**os.environ, **env, "OMP_NUM_THREADS": str(spec["threads"]), "MKL_NUM_THREADS": str(spec["threads"])})
    if proc.returncode != 0:
        raise SystemExit(f"noise_floor: configuration {spec['config']} seed {spec['seed']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def quick_setup(work: Path) -> tuple[str, dict]:
    """A tiny random model and data folder (owl.testing) for the smoke test."""
    sys.path.insert(0, str(REPO))
    from owl.testing import save_tiny_model, write_tiny_data_dir

    model = save_tiny_model(work / "tiny-model")
    data = write_tiny_data_dir(work / "tiny-data")
    return str(model), {"OWL_DATA_DIR": str(data)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--methods", nargs="+", default=["wanda", "wanda_owl"])
    p.add_argument("--sparsities", nargs="+", type=float, default=[0.5, 0.7])
    p.add_argument("--seed", type=int, default=0, help="the seed of the float-path comparisons")
    p.add_argument("--seeds", type=int, default=5, help="K: the seed spread is over seeds 0..K-1")
    p.add_argument("--nsamples", type=int, default=8)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--eval_limit", type=int, default=16, help="first N WikiText-2 test windows")
    p.add_argument("--Hyper_m", type=float, default=5.0)
    p.add_argument("--Lamda", type=float, default=0.08)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--eval_dtype", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--cache_dir", default=None, help="default $OWL_CACHE_DIR or ~/.cache/owl (shared statistics live there)")
    p.add_argument("--mixed_forward_dtype", default="bfloat16",
                   help="also run the base at every seed with block forwards in this dtype (mixed precision), paired by seed; 'none' to skip")
    p.add_argument("--own_statistics", action="store_true", help="every configuration computes its own OWL statistics")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny random model, 2 windows of 64, 2 test windows, 2 seeds")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.seeds < 1 or not 0 <= args.seed:
        p.error(f"--seeds {args.seeds} / --seed {args.seed}: need --seeds >= 1 and --seed >= 0")
    return args


def format_table(rows: list[dict], ratios: list[dict]) -> str:
    names = list(FACTORS)
    lines = ["| method | sparsity | base ppl | " + " | ".join(f"{n} |log ratio|" for n in names)
             + " | seeds: geometric sd | seeds: mean pairwise |log ratio| | dominates |",
             "| --- | --- | --- | " + " | ".join("---" for _ in names) + " | --- | --- | --- |"]
    for r in rows:
        cells = [f"{r['log_ratio'][n]:.3g}" if n in r["log_ratio"] else "-" for n in names]
        lines.append(f"| {r['method']} | {r['sparsity']:g} | {r['base_ppl']:.2f} | " + " | ".join(cells)
                     + f" | {r['seed_geometric_sd']:.4f} | {r['seed_mean_pairwise_log_ratio']:.3g} | {r['dominates']} |")
    if ratios:
        lines += ["", "| sparsity | configuration | seed | OWL w. Wanda / Wanda |", "| --- | --- | --- | --- |"]
        lines += [f"| {r['sparsity']:g} | {r['config']} | {r['seed']} | {r['ratio']:.4f} |" for r in ratios]
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return {}
    started = datetime.datetime.now(datetime.timezone.utc)
    work = Path(tempfile.mkdtemp(prefix="owl-noise-floor-"))
    model, env = args.model, {}
    nsamples, seqlen, eval_limit, n_seeds = args.nsamples, args.seqlen, args.eval_limit, args.seeds
    if args.quick:
        model, env = quick_setup(work)
        nsamples, seqlen, eval_limit, n_seeds = 2, 64, 2, 2
        env["OWL_CACHE_DIR"] = str(work / "cache")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
    common = {"model": model, "methods": args.methods, "sparsities": args.sparsities, "nsamples": nsamples, "seqlen": seqlen,
              "eval_limit": eval_limit, "Hyper_m": args.Hyper_m, "Lamda": args.Lamda, "dtype": args.dtype,
              "eval_dtype": args.eval_dtype, "device": args.device, "cache_dir": args.cache_dir,
              "own_statistics": args.own_statistics, "work": str(work)}
    runs = []
    mixed = None if args.mixed_forward_dtype in (None, "none", args.dtype) else args.mixed_forward_dtype
    for config in configurations(list(range(n_seeds)), args.seed, mixed):
        print(f"noise_floor: {config['config']} seed {config['seed']} ({config['threads']} threads, "
              f"batch {config['calib_batch_size']}, {config['attn_implementation']})", file=sys.stderr, flush=True)
        runs += run_configuration({**common, **config}, env)
    rows, ratios = summarise([r for r in runs if r["config"] != "mixed"], args.seed), owl_vs_uniform(runs)
    precision = precision_vs_base(runs)
    report = {
        "command": "python bench/noise_floor.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": started.isoformat(timespec="seconds"),
        "machine": cpu_info(),
        "protocol": {**{k: v for k, v in common.items() if k != "work"}, "seed": args.seed, "seeds": list(range(n_seeds)),
                     "base": BASE, "factors": FACTORS,
                     "statistics": "per configuration" if args.own_statistics else "once per seed, shared by the float-path variants"},
        "summary": rows,
        "owl_vs_uniform": ratios,
        "mixed_vs_base": precision,
        "runs": runs,
    }
    sys.path.insert(0, str(REPO))
    from owl.results import software_versions, write_json_atomic

    report["machine"]["versions"] = software_versions()

    write_json_atomic(args.out, report)
    shutil.rmtree(work, ignore_errors=True)
    print(format_table(rows, ratios))
    if precision:
        print(f"\n| method | sparsity | {mixed} forwards / float32, paired by seed (95% t-interval) | n | ratio gsd | seed gsd |")
        print("| --- | --- | --- | --- | --- | --- |")
        for r in precision:
            print(f"| {r['method']} | {r['sparsity']:g} | {r['ratio']:.4f} [{r['lower']:.4f}, {r['upper']:.4f}] | {r['n_pairs']} "
                  f"| {r['ratio_geometric_sd']:.4f} | {r['seed_geometric_sd']:.4f} |")
    return report


if __name__ == "__main__":
    main()
