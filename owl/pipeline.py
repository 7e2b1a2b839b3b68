"""One pruning run end to end, and the statistics pass on its own: what the CLI and notebooks call."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from pathlib import Path

import torch

from owl.allocation import owl_nm_pruned_counts
from owl.allocators import allocate, block_means, get_allocator
from owl.data import TextSource, TokenCache, calibration_windows, data_dir_from_env, wikitext2_tokens
from owl.errors import OwlError
from owl.evaluation import perplexity, perplexity_by_blocks, split_windows
from owl.memory import (
    EvaluationPlan, ZeroShotPlan, activation_storage, available_bytes, footprint_of, plan_evaluation, plan_zero_shot,
    reuse_freed_host_memory, shape_of, zero_shot_working_bytes,
)
from owl.methods import ACCUMULATORS, LayerTarget, MethodOptions
from owl.models import (
    block_parameter_counts,
    default_cache_dir,
    find_decoder_blocks,
    find_linear_sublayers,
    layer_zero_fractions,
    load_model,
    torch_dtype,
    zero_fractions,
)
from owl.precision import check_device, precision_record, reset_peak_memory, resolve_dtype, synchronize
from owl.pruning import compute_statistics, prune_model
from owl.pruning_record import clear_pruning, find_pruning, restore_pruning, save_pruning, weights_digest
from owl.results import RESULT_FILE, read_result, software_versions, write_json_atomic
from owl.settings import PruneSettings
from owl.spectrum import block_alphas
from owl.statistics import CalibrationStatistics, RowNormAccumulator

log = logging.getLogger(__name__)


def resolve_device(name: str | None) -> torch.device:
    """The run's device; a missing one (no GPU, or cuda:N past the last) is a one-line OwlError
    before the model loads. Not in PruneSettings.validate: the workflow validates every job's
    settings where it parses the Snakefile, which need not have the jobs' GPUs."""
    return check_device(name)


def elapsed(tick: float, device: torch.device) -> float:
    """Seconds since ``tick``, counting the device's queued work (CUDA runs asynchronously)."""
    synchronize(device)
    return time.perf_counter() - tick


class RunContext:
    """Model, tokenizer, data sources and caches shared by the steps of a run."""

    def __init__(self, model_name: str, dtype: str, device: str | None, cache_dir: str | None, attn_implementation: str | None = None):
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)  # "auto" decided once, for this device
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.source = TextSource(data_dir_from_env())
        self.model, self.tokenizer = load_model(model_name, self.dtype, self.cache_dir, attn_implementation)
        self.tokens = TokenCache(self.cache_dir, self.tokenizer)
        self.blocks = find_decoder_blocks(self.model)

    def check_seqlen(self, seqlen: int) -> None:
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit and seqlen > limit:
            raise OwlError(f"--seqlen {seqlen} exceeds the model's context of {limit} tokens (max_position_embeddings)")

    def calibration(self, dataset: str, nsamples: int, seqlen: int, seed: int) -> tuple[torch.Tensor, str]:
        return calibration_windows(self.tokenizer, dataset, nsamples, seqlen, seed, self.source, self.tokens)

    def linear_layers(self) -> list[dict]:
        return [find_linear_sublayers(block) for block in self.blocks]

    def forward_dtype(self, name: str | None) -> str:
        """Precision of the block forwards: ``name`` resolved for the device, default the weights'."""
        return resolve_dtype(name, self.device) or self.dtype

    def activation_storage(self, accumulator, nsamples: int, seqlen: int, batch_size: int, dtype: str) -> torch.device:
        """Check that calibration fits in memory before any work (one-line OwlError if not); the
        device the calibration hidden states are kept on (the host when only it has room)."""
        footprint = footprint_of(self.model, self.blocks, self.linear_layers(), accumulator.nbytes, nsamples, seqlen,
                                 batch_size, torch_dtype(dtype), sparsegpt=accumulator is ACCUMULATORS["sparsegpt"])
        return activation_storage(footprint, self.device)

    def evaluation_plan(self, n_windows: int, seqlen: int, batch_size: int, dtype: str) -> EvaluationPlan:
        """The whole model on the device, or block by block (one-line OwlError when neither fits)."""
        on_cpu = self.device.type == "cpu"
        plan = plan_evaluation(shape_of(self.model), n_windows, seqlen, batch_size, torch_dtype(dtype).itemsize,
                               "cpu" if on_cpu else str(self.device), None if on_cpu else available_bytes(self.device),
                               available_bytes(torch.device("cpu")))
        if plan.mode == "blocks":
            log.warning("the model does not fit on %s for evaluation: evaluated block by block (hidden states on the %s)",
                        self.device, plan.storage)
        return plan

    def zero_shot_plan(self, batch_size: int, dtype: str) -> ZeroShotPlan:
        """The GPUs (from the run's device on) and host memory zero-shot spreads the model over."""
        if self.device.type != "cuda":
            return ZeroShotPlan(0, 0, {})
        first = self.device.index or 0
        order = [first] + [i for i in range(torch.cuda.device_count()) if i != first]
        shape, width = shape_of(self.model), torch_dtype(dtype).itemsize
        seqlen = getattr(self.model.config, "max_position_embeddings", None) or 2048
        return plan_zero_shot(shape.total_params * width, shape.block_params * width,
                              zero_shot_working_bytes(shape, batch_size, min(seqlen, 2048), width),
                              {i: available_bytes(torch.device("cuda", i)) for i in order}, available_bytes(torch.device("cpu")))


def statistics_meta(model: str, calib_dataset: str, nsamples: int, seqlen: int, seed: int, dtype: str,
                    forward_dtype: str | None = None) -> dict:
    """What the statistics depend on (a stored file is reused only on equal meta)."""
    meta = {"model": model, "calib_dataset": calib_dataset, "nsamples": nsamples, "seqlen": seqlen, "seed": seed, "dtype": dtype}
    if forward_dtype and forward_dtype != dtype:  # only then: files stored before mixed precision stay valid
        meta["forward_dtype"] = forward_dtype
    return meta


def default_statistics_path(cache_dir: Path, meta: dict) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", meta["model"]).strip("_")[-60:]
    digest = hashlib.sha256(repr(sorted(meta.items())).encode()).hexdigest()[:12]
    return cache_dir / "stats" / f"{slug}-{digest}.pt"


def obtain_statistics(
    ctx: RunContext, meta: dict, stats_path: str | Path | None, batch_size: int, storage: torch.device | None = None
) -> tuple[CalibrationStatistics, Path, float]:
    """Load the dense statistics if stored for these settings, else compute and store them."""
    path = Path(stats_path) if stats_path else default_statistics_path(ctx.cache_dir, meta)
    if path.exists():
        log.info("statistics from %s", path)
        return CalibrationStatistics.load(path, expect=meta), path, 0.0
    start = time.perf_counter()
    windows, source = ctx.calibration(meta["calib_dataset"], meta["nsamples"], meta["seqlen"], meta["seed"])
    forward_dtype = torch_dtype(meta.get("forward_dtype", meta["dtype"]))
    stats = compute_statistics(ctx.model, windows, ctx.device, batch_size, meta={**meta, "calib_source": source},
                               forward_dtype=forward_dtype, storage=storage)
    stats.save(path)
    log.info("statistics saved to %s", path)
    return stats, path, elapsed(start, ctx.device)


def calibrate(
    model: str = "smollm2-135m",
    *,
    nsamples: int = 128,
    seqlen: int = 2048,
    seed: int = 0,
    calib_dataset: str = "c4",
    device: str | None = None,
    dtype: str = "float32",
    cache_dir: str | None = None,
    stats_path: str | None = None,
    hyper_ms=(3, 5, 7, 10),
    calib_batch_size: int = 8,
    forward_dtype: str | None = None,
) -> dict:
    """The dense statistics pass (or its stored result) and the outlier distribution for each ``M``."""
    PruneSettings(model=model, nsamples=nsamples, seqlen=seqlen, seed=seed, calib_dataset=calib_dataset, device=device,
                  dtype=dtype, forward_dtype=forward_dtype, calib_batch_size=calib_batch_size, prune_method="dense",
                  sparsity_ratio=0.0).validate()
    reuse_freed_host_memory()  # block forwards allocate the same large tensors window after window
    ctx = RunContext(model, dtype, device, cache_dir)
    ctx.check_seqlen(seqlen)
    storage = ctx.activation_storage(RowNormAccumulator, nsamples, seqlen, calib_batch_size, ctx.forward_dtype(forward_dtype))
    meta = statistics_meta(model, calib_dataset, nsamples, seqlen, seed, ctx.dtype, ctx.forward_dtype(forward_dtype))
    stats, path, seconds = obtain_statistics(ctx, meta, stats_path, calib_batch_size, storage)
    layers = ctx.linear_layers()
    return {
        **meta,
        "calib_source": stats.meta.get("calib_source"),
        "stats_path": str(path),
        "n_blocks": stats.n_blocks,
        "block_params": block_parameter_counts(ctx.model),
        "outlier_ratios": {str(m): ratios for m, ratios in
                           zip(hyper_ms, stats.outlier_ratios_by_m(layers, [float(m) for m in hyper_ms], ctx.device).values())},
        "statistics_seconds": seconds,
        "precision": precision_record(ctx.device),
    }


def weight_alphas(ctx: RunContext, model: str, dtype: str) -> list[list[float]]:
    """AlphaPruning's per-layer ``alpha_peak`` of the dense weights, computed once per (model, dtype)
    and cached under ``<cache_dir>/spectra/`` (weights only: no calibration data)."""
    meta = {"model": model, "dtype": dtype, "statistic": "alpha_peak", "bins": 100}
    path = ctx.cache_dir / "spectra" / default_statistics_path(ctx.cache_dir, meta).with_suffix(".json").name
    if path.exists():
        stored = read_result(path)
        if stored.get("meta") == meta:
            return stored["alphas"]
    tick = time.perf_counter()
    alphas = block_alphas(ctx.linear_layers())
    write_json_atomic(path, {"meta": meta, "alphas": alphas})
    log.info("weight spectra (alpha_peak) of %d blocks in %.1f s, saved to %s", len(alphas), time.perf_counter() - tick, path)
    return alphas


def allocation_scores(settings: PruneSettings, ctx: RunContext, stats: CalibrationStatistics | None) -> list[float] | None:
    """The per-block statistic the run's allocator ranks (None for uniform and ATP)."""
    statistic = get_allocator(settings.allocation_name).statistic
    if statistic == "outlier_ratios":
        return stats.outlier_ratios(ctx.linear_layers(), settings.Hyper_m, device=ctx.device)
    if statistic == "wanda_score_means":
        return stats.score_means(ctx.linear_layers(), settings.dlp_reduce, device=ctx.device)
    if statistic == "wanda_log_variances":
        return stats.log_score_variances(ctx.linear_layers(), device=ctx.device)
    if statistic == "alpha_peak":
        return block_means(weight_alphas(ctx, settings.model, ctx.dtype))
    return None


def block_targets(settings: PruneSettings, scores: list[float] | None, block_params: list[int]) -> list[LayerTarget]:
    """Per-block pruning targets: any allocator (owl.allocators), N:M or OWL mixed N:M."""
    n_blocks = len(block_params)
    structure = settings.structure
    if settings.prune_method == "wanda_owl_structure":
        counts = owl_nm_pruned_counts(scores, structure.n, structure.m, int(settings.Lamda))
        return [LayerTarget(c / structure.m, c, structure.m) for c in counts]
    if structure.structured:
        return [LayerTarget(structure.sparsity, structure.n, structure.m)] * n_blocks
    sparsities = allocate(settings.allocation_name, scores, settings.sparsity_ratio, settings.allocation_value, block_params, settings)
    return [LayerTarget(s) for s in sparsities]


def run_prune(settings: PruneSettings) -> dict:
    """Prune (or not) and evaluate one model; write ``settings.save/result.json`` when asked.

    With ``save`` the pruning is recorded (owl.pruning_record) before evaluation starts, and a
    recorded pruning with the same settings is restored instead of pruning again."""
    settings.validate()
    reuse_freed_host_memory()  # block forwards allocate the same large tensors window after window
    started = time.perf_counter()
    timings = {"calibration": 0.0, "pruning": 0.0, "evaluation": 0.0}
    ctx = RunContext(settings.model, settings.dtype, settings.device, settings.cache_dir, settings.attn_implementation)
    reset_peak_memory(ctx.device)
    ctx.check_seqlen(settings.seqlen)
    block_params = block_parameter_counts(ctx.model)
    forward_dtype = ctx.forward_dtype(settings.forward_dtype)
    eval_dtype = resolve_dtype(settings.eval_dtype, ctx.device) or ctx.dtype
    recorded = None if settings.is_dense else find_pruning(settings.save, settings.to_dict())
    storage = None
    if not recorded and (settings.needs_calibration or settings.needs_statistics):
        # The pruning pass's statistic (SparseGPT's Hessians, else Wanda's row norms) is the larger.
        accumulator = ACCUMULATORS[settings.base_method] or RowNormAccumulator
        storage = ctx.activation_storage(accumulator, settings.nsamples, settings.seqlen, settings.calib_batch_size, forward_dtype)

    # Load every piece of data and plan every step first, so bad --seqlen / --nsamples and a model
    # the machine cannot evaluate fail before any pruning.
    eval_ids, eval_source, eval_plan = None, None, None
    if settings.eval_dataset:
        split = "validation" if settings.eval_dataset == "wikitext2_validation" else "test"
        eval_ids, eval_source = wikitext2_tokens(ctx.tokenizer, ctx.source, ctx.tokens, split)
        if eval_ids.numel() < settings.seqlen:
            raise OwlError(f"--seqlen {settings.seqlen} is longer than the evaluation text ({eval_ids.numel()} tokens)")
        n_windows = len(split_windows(eval_ids, settings.seqlen, settings.eval_limit))
        eval_plan = ctx.evaluation_plan(n_windows, settings.seqlen, settings.eval_batch_size, eval_dtype)
    zero_shot_plan = ctx.zero_shot_plan(settings.zero_shot_batch_size, eval_dtype) if settings.eval_zero_shot else None
    windows, calib_source = None, None
    if settings.needs_calibration and not recorded:
        windows, calib_source = ctx.calibration(settings.calib_dataset, settings.nsamples, settings.seqlen, settings.seed)

    if recorded:
        log.info("pruning restored from %s/%s (%s): evaluating without pruning again", settings.save, "pruning.json", recorded["status"])
        restore_pruning(settings.save, ctx.model, recorded)
        pruned = recorded["result"]
        timings.update({k: pruned["timings_s"][k] for k in ("calibration", "pruning")})
    else:
        # What was pruned, to the bit: tells two machines' runs apart from the model they loaded
        # (a GGUF is dequantised on each machine) before any kernel touched it.
        dense_digest = weights_digest(ctx.model)
        pruned = prune_step(settings, ctx, forward_dtype, storage, windows, calib_source, block_params, timings)
        pruned["dense_weights_sha256"] = dense_digest
        if settings.save and not settings.is_dense:
            save_pruning(settings.save, ctx.model, settings.to_dict(), {**pruned, "timings_s": dict(timings)},
                         keep_values=settings.base_method == "sparsegpt")  # SparseGPT changes the weights it keeps
    log.info("achieved sparsity %.4f", pruned["achieved_sparsity"])
    if settings.save_model:  # in the working dtype, before any conversion for evaluation
        ctx.model.save_pretrained(settings.save_model)
        ctx.tokenizer.save_pretrained(settings.save_model)
    if eval_dtype != ctx.dtype:
        # Pruning is sensitive to the working precision, evaluation much less (docs/benchmarks.md):
        # prune in float32, evaluate in bfloat16 is 2.4-2.8x faster at <1% perplexity difference.
        ctx.model.to(torch_dtype(eval_dtype))

    ppl, eval_windows = {}, 0
    if eval_ids is not None:
        tick = time.perf_counter()
        if eval_plan.mode == "blocks":
            value, eval_windows = perplexity_by_blocks(ctx.model, eval_ids, settings.seqlen, ctx.device, settings.eval_batch_size,
                                                       settings.eval_limit, storage=torch.device("cpu") if eval_plan.storage == "host" else None)
        else:
            ctx.model.to(ctx.device)
            value, eval_windows = perplexity(ctx.model, eval_ids, settings.seqlen, ctx.device, settings.eval_batch_size, settings.eval_limit)
        timings["evaluation"] = elapsed(tick, ctx.device)
        ppl[settings.eval_dataset] = value
        log.info("%s perplexity %.4f over %d windows (%s)", settings.eval_dataset, value, eval_windows,
                 "block by block" if eval_plan.mode == "blocks" else "whole model")

    result = {
        "model": settings.model,
        "prune_method": settings.prune_method,
        "sparsity_ratio": settings.sparsity_ratio,
        "sparsity_type": settings.sparsity_type,
        "Hyper_m": settings.Hyper_m,
        "Lamda": settings.Lamda,
        "nsamples": settings.nsamples,
        "seqlen": settings.seqlen,
        "seed": settings.seed,
        "dtype": ctx.dtype,
        "forward_dtype": forward_dtype,
        "eval_dtype": eval_dtype,
        "device": str(ctx.device),
        "precision": None,  # filled in at the end: it holds the run's peak GPU memory
        "attn_implementation": getattr(ctx.model.config, "_attn_implementation", None),  # the kernel used (the setting may be None)
        **{k: pruned[k] for k in ("achieved_sparsity", "allocation", "allocation_params", "allocation_scores", "layer_sparsities",
                                  "layer_nm", "layer_achieved_sparsities", "outlier_ratios")},
        "ppl": ppl,
        "eval_windows": eval_windows,
        "eval_limit": settings.eval_limit,
        "evaluation_mode": eval_plan.mode if eval_plan else None,
        "pruning_restored": bool(recorded),  # pruned by an earlier run whose evaluation did not finish
        "calib_source": pruned["calib_source"],
        "eval_source": eval_source,
        "statistics_path": pruned["statistics_path"],
        "block_params": block_params,
        "dense_weights_sha256": pruned.get("dense_weights_sha256"),  # absent from records of older versions
        "timings_s": timings,
        "versions": software_versions(),
        "settings": settings.to_dict(),
    }
    if settings.eval_zero_shot:
        from owl.zeroshot import evaluate_zero_shot, spread_model  # imports lm-eval: only when asked

        if zero_shot_plan.max_memory:
            spread_model(ctx.model, zero_shot_plan.max_memory)  # the model does not fit one GPU
            device = None  # evaluated where accelerate put it
        else:
            ctx.model.to(ctx.device)
            device = str(ctx.device)
        tick = time.perf_counter()
        details = evaluate_zero_shot(
            ctx.model, ctx.tokenizer, tasks=list(settings.tasks), limit=settings.zero_shot_limit,
            batch_size=settings.zero_shot_batch_size, device=device, data_dir=ctx.source.data_dir,
        )
        timings["zero_shot"] = elapsed(tick, ctx.device)
        result["zero_shot"] = {**details["accuracy"], "mean": details["mean"]}
        result["zero_shot_stderr"] = {**details["stderr"], "mean": details["mean_stderr"]}  # lm-eval's, per task
        result["zero_shot_details"] = {k: v for k, v in details.items() if k not in ("accuracy", "mean")}
        result["zero_shot_gpus"] = zero_shot_plan.gpus
    timings["total"] = time.perf_counter() - started
    result["precision"] = precision_record(ctx.device)

    if settings.save:
        write_json_atomic(Path(settings.save) / RESULT_FILE, result)
        clear_pruning(settings.save)  # the result holds everything the record did
    return result


def prune_step(settings: PruneSettings, ctx: RunContext, forward_dtype: str, storage, windows, calib_source,
               block_params: list[int], timings: dict) -> dict:
    """Statistics (what the allocator ranks), targets and the pruning pass: what the result records about the pruning."""
    stats, stats_path, scores = None, None, None
    if settings.needs_statistics:
        meta = statistics_meta(settings.model, settings.calib_dataset, settings.nsamples, settings.seqlen, settings.seed,
                               ctx.dtype, forward_dtype)
        stats, stats_path, timings["calibration"] = obtain_statistics(ctx, meta, settings.stats_path, settings.calib_batch_size, storage)
        calib_source = calib_source or stats.meta.get("calib_source")
    if not settings.is_dense:
        scores = allocation_scores(settings, ctx, stats)

    if settings.is_dense:
        targets = [LayerTarget(0.0)] * len(block_params)
        achieved, achieved_per_block = layer_zero_fractions(ctx.model)
    else:
        targets = block_targets(settings, scores, block_params)  # raises before pruning if a block is out of range
        options = MethodOptions(settings.use_variant, settings.sparsegpt_blocksize, settings.sparsegpt_percdamp)
        tick = time.perf_counter()
        counts = prune_model(ctx.model, settings.base_method, targets, options, ctx.device, windows, settings.calib_batch_size,
                             forward_dtype=torch_dtype(forward_dtype), storage=storage)
        timings["pruning"] = elapsed(tick, ctx.device)
        achieved, achieved_per_block = zero_fractions(counts)
    return {
        "achieved_sparsity": achieved,
        "allocation": "dense" if settings.is_dense else settings.allocation_name,
        "allocation_params": {} if settings.is_dense else settings.allocation_params,
        "allocation_scores": scores,
        "layer_sparsities": [t.sparsity for t in targets],
        "layer_nm": [[t.n, t.m] for t in targets] if settings.structure.structured else None,
        "layer_achieved_sparsities": achieved_per_block,
        "outlier_ratios": scores if settings.uses_owl else None,
        "calib_source": calib_source,
        "statistics_path": str(stats_path) if stats_path else None,
    }
