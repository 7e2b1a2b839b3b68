"""Performance benchmark of the OWL kit: statistics pass, pruning methods, evaluation, dtypes.

Measures on one model (default: the embedded SmolLM2-135M), for each dtype asked:

- calibration throughput (tokens/s) of the dense statistics pass (``owl.pruning.compute_statistics``)
  and how many times each decoder block runs per calibration batch (forward pre-hooks on the
  blocks): 1 in the statistics pass, 2 in the pruning pass (calibrate, then recompute the outputs
  of the pruned block), 0 for magnitude;
- wall time of ``owl.pipeline.run_prune`` per method (magnitude, wanda, sparsegpt and their OWL
  versions with the statistics cached), split into forwards, observers (hooks), masks/solver and
  the rest, and the OWL / uniform ratio;
- peak memory (RSS sampled every 10 ms on CPU; ``torch.cuda.max_memory_allocated`` on CUDA);
- evaluation throughput of ``owl.evaluation.perplexity`` against a plain batched
  ``model(input_ids).logits`` on the same windows, dtype and batch size;
- perplexity per dtype on the same windows (dense and the methods in ``--eval_methods``);
- the mask functions on the model's real weights against a full stable sort (same masks, time).

Repeated measurements (``--repeats``) are reported as medians with all samples kept in the JSON:
the machine may be shared, so the load average is recorded next to every phase.

    OWL_DATA_DIR=/work/shared/data python bench/bench.py --out bench/results/results.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import logging
import multiprocessing
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import torch

import owl.methods
import owl.pipeline
import owl.pruning
import owl.sequential
from owl.data import TextSource, TokenCache, data_dir_from_env, wikitext2_test_tokens
from owl.evaluation import perplexity, split_windows
from owl.masks import magnitude_mask, row_mask, wanda_scores
from owl.models import default_cache_dir, find_decoder_blocks, find_linear_sublayers, load_model
from owl.pipeline import RunContext, run_prune, statistics_meta
from owl.pruning import compute_statistics
from owl.settings import PruneSettings

METHODS = ("magnitude", "magnitude_owl", "wanda", "wanda_owl", "sparsegpt", "sparsegpt_owl")


# ---------------------------------------------------------------------------------------------
# instruments
# ---------------------------------------------------------------------------------------------
class MemoryPeak:
    """Peak resident memory (CPU, sampled) or peak allocated CUDA memory over a ``with`` block."""

    def __init__(self, device: torch.device, interval: float = 0.01):
        self.device, self.interval = device, interval

    def _rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def _watch(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.result = {"rss_start_mib": self.start / 2**20, "rss_peak_mib": self.peak / 2**20,
                       "rss_peak_increase_mib": (self.peak - self.start) / 2**20}
        if self.device.type == "cuda":
            self.result["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        return False


class BlockCalls:
    """Count forward calls of the decoder blocks (a global pre-hook filtered by the block class name)."""

    def __init__(self, block_class: str, active: bool = True):
        self.block_class, self.active = block_class, active
        self.counts: dict[int, int] = defaultdict(int)

    def _hook(self, module, _args):
        if self.active and type(module).__name__ == self.block_class:
            self.counts[id(module)] += 1

    @contextlib.contextmanager
    def only_during(self, obj, attr: str):
        """Count only while ``obj.attr`` (e.g. the pruning pass) runs."""
        original = getattr(obj, attr)

        def counted(*args, **kwargs):
            self.active = True
            try:
                return original(*args, **kwargs)
            finally:
                self.active = False

        self.active = False
        setattr(obj, attr, counted)
        try:
            yield self
        finally:
            setattr(obj, attr, original)

    def __enter__(self):
        self.counts.clear()
        self._handle = torch.nn.modules.module.register_module_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self._handle.remove()
        return False

    def summary(self, n_blocks: int, n_batches: int) -> dict:
        per_block = list(self.counts.values())
        total = sum(per_block)
        return {
            "blocks_run": len(per_block),
            "calls_total": total,
            "calls_per_block_min": min(per_block, default=0),
            "calls_per_block_max": max(per_block, default=0),
            "calibration_batches": n_batches,
            "calls_per_block_per_batch": total / n_blocks / n_batches if n_batches else None,
        }


class Timers:
    """Accumulated wall time of named sections of the library, by patching module attributes."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            tick = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - tick
                self.calls[name] += 1

        return timed

    @contextlib.contextmanager
    def patched(self):
        """Time block forwards (incl. observers), observers, prune_layer and the mask/solver functions."""
        saved = []

        def patch(obj, attr, value):
            saved.append((obj, attr, getattr(obj, attr)))
            setattr(obj, attr, value)

        timers = self
        patch(owl.sequential.BlockStep, "forward", self.wrap("block_forward_incl_observers", owl.sequential.BlockStep.forward))
        # The driver prunes through one of these (magnitude per layer, the others per shared input).
        for name in ("prune_layer", "prune_layers_sharing_input"):
            if hasattr(owl.pruning, name):  # an older tree may lack the second
                patch(owl.pruning, name, self.wrap("prune_layer_incl_masks", getattr(owl.pruning, name)))
        for name in ("magnitude_mask", "row_mask", "nm_mask", "wanda_variant_mask", "wanda_scores",
                     "sparsegpt_prune_", "sparsegpt_prune_group_"):
            if hasattr(owl.methods, name):
                patch(owl.methods, name, self.wrap(f"fn.{name}", getattr(owl.methods, name)))

        def timed_accumulator(base):
            class Timed(base):
                def add(self, inputs):
                    tick = time.perf_counter()
                    super().add(inputs)
                    timers.seconds["observers"] += time.perf_counter() - tick
                    timers.calls["observers"] += 1

            Timed.__name__ = base.__name__
            return Timed

        patch(owl.pruning, "RowNormAccumulator", timed_accumulator(owl.pruning.RowNormAccumulator))
        originals = dict(owl.pruning.ACCUMULATORS)
        for method, cls in originals.items():
            if cls is not None:
                owl.pruning.ACCUMULATORS[method] = timed_accumulator(cls)
        try:
            yield self
        finally:
            owl.pruning.ACCUMULATORS.update(originals)
            for obj, attr, value in reversed(saved):
                setattr(obj, attr, value)

    def as_dict(self) -> dict:
        return {k: {"seconds": round(v, 4), "calls": self.calls[k]} for k, v in sorted(self.seconds.items())}


def median(values):
    return statistics.median(values) if values else None


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------
# machine
# ---------------------------------------------------------------------------------------------
def machine_info(device: torch.device) -> dict:
    flags, model_name = set(), platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": model_name,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "bf16_cpu_flags": sorted(f for f in flags if f.startswith("amx") or f in ("avx512_bf16", "avx512f", "avx512_vnni", "avx2")),
        "amx": any(f.startswith("amx") for f in flags),
        "avx512_bf16": "avx512_bf16" in flags,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "loadavg_at_start": loadavg(),
    }
    with contextlib.suppress(Exception):
        import transformers

        info["transformers"] = transformers.__version__
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def matmul_gflops(dtype: torch.dtype, device: torch.device, repeats: int) -> float:
    """Dense matmul throughput of an MLP-shaped product (tokens x 576 by 576 x 1536)."""
    x = torch.randn(4096, 576, dtype=dtype, device=device)
    w = torch.randn(1536, 576, dtype=dtype, device=device)
    torch.nn.functional.linear(x, w)
    samples = []
    for _ in range(max(repeats, 3)):
        sync(device)
        tick = time.perf_counter()
        torch.nn.functional.linear(x, w)
        sync(device)
        samples.append(time.perf_counter() - tick)
    return round(2 * 4096 * 576 * 1536 / median(samples) / 1e9, 1)


# ---------------------------------------------------------------------------------------------
# phases
# ---------------------------------------------------------------------------------------------
def bench_masks(model, repeats: int, sparsity: float = 0.7) -> dict:
    """owl.masks on the model's real weights of two blocks against a plain full stable sort."""

    def sorted_rows(scores, k):
        mask = torch.zeros(scores.shape, dtype=torch.bool)
        mask.scatter_(-1, torch.sort(scores.float(), dim=-1, stable=True).indices[:, :k], True)
        return mask

    def sorted_flat(weight, k):
        flat = torch.zeros(weight.numel(), dtype=torch.bool)
        flat[torch.sort(weight.float().abs().flatten(), stable=True).indices[:k]] = True
        return flat.reshape(weight.shape)

    def timed(fn):
        samples = []
        for _ in range(repeats):
            tick = time.perf_counter()
            out = fn()
            samples.append(time.perf_counter() - tick)
        return out, samples

    times = defaultdict(list)
    identical = True
    blocks = find_decoder_blocks(model)
    for block in (blocks[0], blocks[len(blocks) // 2]):
        for layer in find_linear_sublayers(block).values():
            weight = layer.weight.detach().float()
            scale = torch.rand(weight.shape[1], generator=torch.Generator().manual_seed(0)) + 0.5
            scores = wanda_scores(weight, scale)
            k_row, k_flat = int(weight.shape[1] * sparsity), int(weight.numel() * sparsity)
            new, t_new = timed(lambda: row_mask(scores, sparsity))
            old, t_old = timed(lambda: sorted_rows(scores, k_row))
            identical &= torch.equal(new, old)
            times["row_mask"].append(median(t_new))
            times["row_stable_sort"].append(median(t_old))
            new, t_new = timed(lambda: magnitude_mask(weight, sparsity))
            old, t_old = timed(lambda: sorted_flat(weight, k_flat))
            identical &= torch.equal(new, old)
            times["magnitude_mask"].append(median(t_new))
            times["magnitude_stable_sort"].append(median(t_old))
    out = {f"{k}_ms_per_block": round(sum(v) / 2 * 1e3, 2) for k, v in times.items()}
    out["identical_to_stable_sort"] = bool(identical)
    return out


def bench_statistics(ctx: RunContext, windows: torch.Tensor, args, dtype: str, stats_path: Path) -> dict:
    blocks = find_decoder_blocks(ctx.model)
    n_batches = len(windows.split(args.calib_batch_size))
    meta = statistics_meta(args.model, "c4", args.nsamples, args.seqlen, args.seed, dtype)
    samples, loads, calls, memory, timers = [], [], None, None, None
    for repeat in range(args.repeats):
        counter = BlockCalls(type(blocks[0]).__name__)
        timer = Timers()
        with counter, MemoryPeak(ctx.device) as mem, timer.patched():
            loads.append(loadavg())
            tick = time.perf_counter()
            stats = compute_statistics(ctx.model, windows, ctx.device, args.calib_batch_size, meta={**meta, "calib_source": "bench"})
            sync(ctx.device)
            samples.append(time.perf_counter() - tick)
        if repeat == 0:
            stats.save(stats_path)
            calls, memory, timers = counter.summary(len(blocks), n_batches), mem.result, timer.as_dict()
    seconds = median(samples)
    return {
        "seconds_median": round(seconds, 3),
        "seconds_samples": [round(s, 3) for s in samples],
        "tokens_per_s": round(args.nsamples * args.seqlen / seconds, 1),
        "seconds_per_block": round(seconds / len(blocks), 4),
        "block_calls": calls,
        "sections": timers,
        "memory": memory,
        "loadavg": loads,
    }


def bench_method(args, dtype: str, method: str, stats_path: Path, block_class: str, n_blocks: int,
                 save_model: Path | None = None) -> dict:
    """One ``run_prune`` of ``method``; block calls are counted in the pruning pass only."""
    evaluate = method in args.eval_methods
    settings = PruneSettings(
        model=args.model, prune_method=method, sparsity_ratio=args.sparsity, nsamples=args.nsamples,
        seqlen=args.seqlen, seed=args.seed, dtype=dtype, device=args.device, cache_dir=args.cache_dir,
        calib_batch_size=args.calib_batch_size, eval_batch_size=args.eval_batch_size,
        eval_dataset="wikitext2" if evaluate else None, eval_limit=args.eval_windows if evaluate else None,
        stats_path=str(stats_path) if method.endswith("_owl") else None,
        save_model=str(save_model) if save_model else None,
    )
    n_batches = len(range(0, args.nsamples, args.calib_batch_size)) if method.split("_")[0] != "magnitude" else 0
    counter, timer = BlockCalls(block_class), Timers()
    gc.collect()
    with counter, counter.only_during(owl.pipeline, "prune_model"), MemoryPeak(torch.device(args.device)) as mem, timer.patched():
        load = loadavg()
        tick = time.perf_counter()
        result = run_prune(settings)
        wall = time.perf_counter() - tick
    timings = result["timings_s"]
    sections = timer.as_dict()
    forward = sections.get("block_forward_incl_observers", {}).get("seconds", 0.0)
    observers = sections.get("observers", {}).get("seconds", 0.0)
    masks = sections.get("prune_layer_incl_masks", {}).get("seconds", 0.0)
    return {
        "wall_s": round(wall, 3),
        "wall_without_eval_s": round(timings["total"] - timings.get("evaluation", 0.0), 3),  # saving excluded
        "pruning_s": round(timings["pruning"], 3),
        "pruning_s_per_block": round(timings["pruning"] / n_blocks, 4),
        "calibration_s": round(timings["calibration"], 3),
        "evaluation_s": round(timings.get("evaluation", 0.0), 3),
        "block_calls": counter.summary(n_blocks, n_batches) if n_batches else {"calls_total": sum(counter.counts.values())},
        "sections": sections,
        "pruning_split_s": {
            "forwards_without_observers": round(forward - observers, 3),
            "observers": round(observers, 3),
            "prune_layer (scores+masks+solver+assign)": round(masks, 3),
            "other (capture, moves, ...)": round(timings["pruning"] - forward - masks, 3),
        },
        "memory": mem.result,
        "ppl": result["ppl"].get("wikitext2"),
        "eval_windows": result["eval_windows"],
        "achieved_sparsity": result["achieved_sparsity"],
        "layer_sparsities": result["layer_sparsities"],
        "outlier_ratios": result["outlier_ratios"],
        "loadavg": load,
    }


def summarise_runs(runs: list[dict]) -> dict:
    """Median over repeats of the timings; the rest from the first run; every sample kept."""
    keys = ("wall_s", "wall_without_eval_s", "pruning_s", "pruning_s_per_block", "calibration_s", "evaluation_s", "process_max_rss_mib")
    out = dict(runs[0])
    for key in keys:
        out[key] = round(median([r[key] for r in runs]), 3)
    out["samples"] = [{k: r[k] for k in keys + ("loadavg",)} for r in runs]
    return out


@torch.no_grad()
def bench_evaluation(ctx: RunContext, eval_ids: torch.Tensor, args) -> dict:
    windows = split_windows(eval_ids, args.seqlen, args.eval_windows)
    tokens = windows.numel()
    model = ctx.model.to(ctx.device)

    def plain():
        for batch in windows.split(args.eval_batch_size):
            model(input_ids=batch.to(ctx.device), use_cache=False).logits
        sync(ctx.device)

    ppl = None
    owl_s, plain_s, loads, memory = [], [], [], {}
    for repeat in range(args.repeats):
        loads.append(loadavg())
        order = (("owl", "plain") if repeat % 2 == 0 else ("plain", "owl"))  # alternate against drift
        for which in order:
            gc.collect()
            with MemoryPeak(ctx.device) as mem:
                tick = time.perf_counter()
                if which == "owl":
                    ppl, _ = perplexity(model, eval_ids, args.seqlen, ctx.device, args.eval_batch_size, args.eval_windows)
                    sync(ctx.device)
                    owl_s.append(time.perf_counter() - tick)
                else:
                    plain()
                    plain_s.append(time.perf_counter() - tick)
            memory.setdefault(which, mem.result)
    return {
        "windows": windows.shape[0],
        "tokens": tokens,
        "batch_size": args.eval_batch_size,
        "perplexity_s_samples": [round(s, 3) for s in owl_s],
        "plain_forward_s_samples": [round(s, 3) for s in plain_s],
        "perplexity_tokens_per_s": round(tokens / median(owl_s), 1),
        "plain_forward_tokens_per_s": round(tokens / median(plain_s), 1),
        "perplexity_over_plain_time": round(median(owl_s) / median(plain_s), 3),
        "memory": memory,
        "ppl_dense": ppl,
        "loadavg": loads,
    }


@torch.no_grad()
def cross_evaluate(report: dict, args, work: Path) -> None:
    """Perplexity of the models pruned in the first dtype, evaluated in every dtype (same windows).

    Separates the evaluation's precision from the pruning's: a model pruned in float32 and
    evaluated in bfloat16 differs from float32 only by the evaluation's rounding.
    """
    out = report.setdefault("cross_dtype_eval", {})
    for method in sorted(args.eval_methods):
        path = work / f"pruned-{method}-{args.dtypes[0]}"
        if not path.exists():
            continue
        out[method] = {"pruned_in": args.dtypes[0]}
        for dtype in args.dtypes:
            model, tokenizer = load_model(str(path), dtype)
            cache = TokenCache(Path(args.cache_dir) if args.cache_dir else default_cache_dir(), tokenizer)
            eval_ids, _ = wikitext2_test_tokens(tokenizer, TextSource(data_dir_from_env()), cache)
            model.to(args.device)
            out[method][dtype], _ = perplexity(model, eval_ids, args.seqlen, args.device, args.eval_batch_size, args.eval_windows)
            del model
            gc.collect()
        shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--nsamples", type=int, default=8)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sparsity", type=float, default=0.7)
    p.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated: float32,bfloat16,float16")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    p.add_argument("--eval_methods", default=",".join(METHODS), help="methods whose run also evaluates ppl on --eval_windows (and, pruned in the first dtype, in every dtype)")
    p.add_argument("--calib_batch_size", type=int, default=4, help="4 with nsamples 8: two batches, so calls/batch is visible")
    p.add_argument("--eval_batch_size", type=int, default=4)
    p.add_argument("--eval_windows", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3, help="repeats of the statistics pass, evaluation and mask timings")
    p.add_argument("--method_repeats", type=int, default=1, help="repeats of each run_prune")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cache_dir", default=None, help="model and token caches (default ~/.cache/owl)")
    p.add_argument("--work", default=None, help="where the bench writes its statistics files (default: a temp dir)")
    p.add_argument("--skip", default="", help="comma-separated phases to skip: masks,evaluation,methods (the statistics pass always runs)")
    p.add_argument("--in_process", action="store_true", help="run every phase in this process (peak memory then accumulates)")
    p.add_argument("--out", default="bench/results/results.json")
    args = p.parse_args(argv)
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    args.methods = [m for m in args.methods.split(",") if m]
    args.eval_methods = {m for m in args.eval_methods.split(",") if m}
    args.skip = {s for s in args.skip.split(",") if s}
    return args


def _phase_calibration(args, dtype: str, stats_path: str, with_masks: bool) -> dict:
    """Matmul rate, mask micro-benchmark and the statistics pass (stores the statistics)."""
    device = torch.device(args.device)
    ctx = RunContext(args.model, dtype, args.device, args.cache_dir)
    ctx.check_seqlen(args.seqlen)
    windows, _ = ctx.calibration("c4", args.nsamples, args.seqlen, args.seed)
    out = {"matmul_gflops": matmul_gflops(getattr(torch, dtype), device, args.repeats),
           "block_class": type(ctx.blocks[0]).__name__, "n_blocks": len(ctx.blocks)}
    if with_masks:
        out["masks"] = bench_masks(ctx.model, args.repeats)
    out["statistics"] = bench_statistics(ctx, windows, args, dtype, Path(stats_path))
    return out


def _phase_evaluation(args, dtype: str) -> dict:
    ctx = RunContext(args.model, dtype, args.device, args.cache_dir)
    eval_ids, _ = wikitext2_test_tokens(ctx.tokenizer, ctx.source, ctx.tokens)
    return bench_evaluation(ctx, eval_ids, args)


def _in_child(fn_name: str, threads: int | None, *fn_args):
    if threads:
        torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)
    result = globals()[fn_name](*fn_args)
    result["process_max_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def isolated(args, fn_name: str, *fn_args):
    """Run one phase in a fresh interpreter (spawn), so its peak memory is its own."""
    if args.in_process:
        return _in_child(fn_name, None, *fn_args)
    pool = multiprocessing.get_context("spawn").Pool(1)
    try:
        return pool.apply(_in_child, (fn_name, args.threads, *fn_args))
    finally:
        pool.close()  # close + join (not terminate): no leaked semaphores
        pool.join()


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    work = Path(args.work or tempfile.mkdtemp(prefix="owl-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    report = {"command": "python bench/bench.py " + " ".join(sys.argv[1:]), "args": {k: sorted(v) if isinstance(v, set) else v for k, v in vars(args).items()},
              "machine": machine_info(device), "dtypes": {}}
    started = time.perf_counter()

    def save():
        report["bench_seconds"] = round(time.perf_counter() - started, 1)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")

    for dtype in args.dtypes:
        entry = report["dtypes"].setdefault(dtype, {})
        stats_path = work / f"stats-{dtype}.pt"
        with_masks = "masks" not in args.skip and dtype == args.dtypes[0]
        calibration = isolated(args, "_phase_calibration", args, dtype, str(stats_path), with_masks)
        if "masks" in calibration:
            report["masks"] = calibration.pop("masks")
        block_class, n_blocks = calibration.pop("block_class"), calibration.pop("n_blocks")
        entry["matmul_gflops"] = calibration.pop("matmul_gflops")
        calibration["statistics"]["process_max_rss_mib"] = calibration.pop("process_max_rss_mib")
        entry["statistics"] = calibration["statistics"]
        save()
        if "evaluation" not in args.skip:
            entry["evaluation"] = isolated(args, "_phase_evaluation", args, dtype)
            save()
        if "methods" not in args.skip:
            entry["methods"], raw = {}, defaultdict(list)
            for _ in range(args.method_repeats):  # round robin: uniform and OWL runs see similar load
                for method in args.methods:
                    keep = work / f"pruned-{method}-{dtype}" if (method in args.eval_methods and dtype == args.dtypes[0]) else None
                    raw[method].append(isolated(args, "bench_method", args, dtype, method, stats_path, block_class, n_blocks, keep))
                    entry["methods"][method] = summarise_runs(raw[method])
                    save()
            runs = entry["methods"]
            entry["owl_over_uniform"] = {
                base: {key: round(runs[f"{base}_owl"][key] / runs[base][key], 3) for key in ("wall_without_eval_s", "pruning_s")}
                for base in ("magnitude", "wanda", "sparsegpt")
                if base in runs and f"{base}_owl" in runs
            }
            save()
    if len(args.dtypes) > 1 and "methods" not in args.skip:
        cross_evaluate(report, args, work)
        save()
    if len(args.dtypes) > 1:
        base = args.dtypes[0]
        compare = {}
        for dtype in args.dtypes[1:]:
            row = {}
            a, b = report["dtypes"][base].get("evaluation"), report["dtypes"][dtype].get("evaluation")
            if a and b:
                row["dense_ppl_rel_diff"] = round(b["ppl_dense"] / a["ppl_dense"] - 1, 5)
                row["eval_speedup"] = round(b["perplexity_tokens_per_s"] / a["perplexity_tokens_per_s"], 2)
            sa, sb = report["dtypes"][base].get("statistics"), report["dtypes"][dtype].get("statistics")
            if sa and sb:
                row["statistics_speedup"] = round(sb["tokens_per_s"] / sa["tokens_per_s"], 2)
            for method in args.eval_methods:
                ma = report["dtypes"][base].get("methods", {}).get(method)
                mb = report["dtypes"][dtype].get("methods", {}).get(method)
                if ma and mb and ma.get("ppl") and mb.get("ppl"):
                    row[f"{method}_ppl_rel_diff"] = round(mb["ppl"] / ma["ppl"] - 1, 5)
                    row[f"{method}_pruning_speedup"] = round(ma["pruning_s"] / mb["pruning_s"], 2)
                    row[f"{method}_layer_sparsity_max_abs_diff"] = round(
                        max(abs(x - y) for x, y in zip(ma["layer_sparsities"], mb["layer_sparsities"])), 5)
                cross = report.get("cross_dtype_eval", {}).get(method, {})
                if cross.get(base) and cross.get(dtype):
                    row[f"{method}_pruned_in_{base}_evaluated_in_{dtype}_ppl_rel_diff"] = round(cross[dtype] / cross[base] - 1, 5)
            compare[f"{dtype}_vs_{base}"] = row
        report["dtype_comparison"] = compare
    report["machine"]["loadavg_at_end"] = loadavg()
    save()
    print(json.dumps({k: report[k] for k in ("machine", "dtype_comparison") if k in report}, indent=2))
    print(f"written {args.out}")
    return report


if __name__ == "__main__":
    main()
