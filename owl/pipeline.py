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
from owl.evaluation import perplexity
from owl.memory import activation_storage, footprint_of, reuse_freed_host_memory
from owl.methods import ACCUMULATORS, LayerTarget, MethodOptions
from owl.models import (
    block_parameter_counts,
    default_cache_dir,
    default_device,
    find_decoder_blocks,
    find_linear_sublayers,
    layer_zero_fractions,
    load_model,
    torch_dtype,
)
from owl.precision import precision_record, resolve_dtype
from owl.pruning import compute_statistics, prune_model
from owl.results import RESULT_FILE, read_result, software_versions, write_json_atomic
from owl.settings import PruneSettings
from owl.spectrum import block_alphas
from owl.statistics import CalibrationStatistics, RowNormAccumulator

log = logging.getLogger(__name__)


def resolve_device(name: str | None) -> torch.device:
    device = torch.device(name or default_device())
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OwlError(f"--device {name} is not available on this machine (no CUDA GPU); use --device cpu")
    return device


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
                                 batch_size, torch_dtype(dtype))
        return activation_storage(footprint, self.device)


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
    return stats, path, time.perf_counter() - start


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
        "outlier_ratios": {str(m): stats.outlier_ratios(layers, float(m)) for m in hyper_ms},
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
        return stats.outlier_ratios(ctx.linear_layers(), settings.Hyper_m)
    if statistic == "wanda_score_means":
        return stats.score_means(ctx.linear_layers(), settings.dlp_reduce)
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
    """Prune (or not) and evaluate one model; write ``settings.save/result.json`` when asked."""
    settings.validate()
    reuse_freed_host_memory()  # block forwards allocate the same large tensors window after window
    started = time.perf_counter()
    timings = {"calibration": 0.0, "pruning": 0.0, "evaluation": 0.0}
    ctx = RunContext(settings.model, settings.dtype, settings.device, settings.cache_dir, settings.attn_implementation)
    ctx.check_seqlen(settings.seqlen)
    block_params = block_parameter_counts(ctx.model)
    forward_dtype = ctx.forward_dtype(settings.forward_dtype)
    storage = None
    if settings.needs_calibration or settings.needs_statistics:
        # The pruning pass's statistic (SparseGPT's Hessians, else Wanda's row norms) is the larger.
        accumulator = ACCUMULATORS[settings.base_method] or RowNormAccumulator
        storage = ctx.activation_storage(accumulator, settings.nsamples, settings.seqlen, settings.calib_batch_size, forward_dtype)

    # Load every piece of data first, so bad --seqlen / --nsamples fail before any pruning.
    eval_ids, eval_source = None, None
    if settings.eval_dataset:
        split = "validation" if settings.eval_dataset == "wikitext2_validation" else "test"
        eval_ids, eval_source = wikitext2_tokens(ctx.tokenizer, ctx.source, ctx.tokens, split)
        if eval_ids.numel() < settings.seqlen:
            raise OwlError(f"--seqlen {settings.seqlen} is longer than the evaluation text ({eval_ids.numel()} tokens)")
    windows, calib_source = None, None
    if settings.needs_calibration:
        windows, calib_source = ctx.calibration(settings.calib_dataset, settings.nsamples, settings.seqlen, settings.seed)

    stats, stats_path, scores = None, None, None
    if settings.needs_statistics:
        meta = statistics_meta(settings.model, settings.calib_dataset, settings.nsamples, settings.seqlen, settings.seed,
                               ctx.dtype, forward_dtype)
        stats, stats_path, timings["calibration"] = obtain_statistics(ctx, meta, settings.stats_path, settings.calib_batch_size, storage)
        calib_source = calib_source or stats.meta.get("calib_source")
    if not settings.is_dense:
        scores = allocation_scores(settings, ctx, stats)
    outlier_ratios = scores if settings.uses_owl else None

    if settings.is_dense:
        targets = [LayerTarget(0.0)] * len(block_params)
    else:
        targets = block_targets(settings, scores, block_params)  # raises before pruning if OWL is out of range
        options = MethodOptions(settings.use_variant, settings.sparsegpt_blocksize, settings.sparsegpt_percdamp)
        tick = time.perf_counter()
        prune_model(ctx.model, settings.base_method, targets, options, ctx.device, windows, settings.calib_batch_size,
                    forward_dtype=torch_dtype(forward_dtype), storage=storage)
        timings["pruning"] = time.perf_counter() - tick
    achieved, achieved_per_block = layer_zero_fractions(ctx.model)
    log.info("achieved sparsity %.4f", achieved)
    if settings.save_model:  # in the working dtype, before any conversion for evaluation
        ctx.model.save_pretrained(settings.save_model)
        ctx.tokenizer.save_pretrained(settings.save_model)
    eval_dtype = resolve_dtype(settings.eval_dtype, ctx.device) or ctx.dtype
    if eval_dtype != ctx.dtype:
        # Pruning is sensitive to the working precision, evaluation much less (docs/benchmarks.md):
        # prune in float32, evaluate in bfloat16 is 2.4-2.8x faster at <1% perplexity difference.
        ctx.model.to(torch_dtype(eval_dtype))

    ppl, eval_windows = {}, 0
    if eval_ids is not None:
        ctx.model.to(ctx.device)
        tick = time.perf_counter()
        value, eval_windows = perplexity(ctx.model, eval_ids, settings.seqlen, ctx.device, settings.eval_batch_size, settings.eval_limit)
        timings["evaluation"] = time.perf_counter() - tick
        ppl[settings.eval_dataset] = value
        log.info("%s perplexity %.4f over %d windows", settings.eval_dataset, value, eval_windows)

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
        "precision": precision_record(ctx.device),
        "attn_implementation": getattr(ctx.model.config, "_attn_implementation", None),  # the kernel used (the setting may be None)
        "achieved_sparsity": achieved,
        "allocation": "dense" if settings.is_dense else settings.allocation_name,
        "allocation_params": {} if settings.is_dense else settings.allocation_params,
        "allocation_scores": scores,
        "layer_sparsities": [t.sparsity for t in targets],
        "layer_nm": [[t.n, t.m] for t in targets] if settings.structure.structured else None,
        "layer_achieved_sparsities": achieved_per_block,
        "outlier_ratios": outlier_ratios,
        "ppl": ppl,
        "eval_windows": eval_windows,
        "eval_limit": settings.eval_limit,
        "calib_source": calib_source,
        "eval_source": eval_source,
        "statistics_path": str(stats_path) if stats_path else None,
        "block_params": block_params,
        "timings_s": timings,
        "versions": software_versions(),
        "settings": settings.to_dict(),
    }
    if settings.eval_zero_shot:
        from owl.zeroshot import evaluate_zero_shot  # imports lm-eval: only when asked

        ctx.model.to(ctx.device)
        tick = time.perf_counter()
        details = evaluate_zero_shot(
            ctx.model, ctx.tokenizer, tasks=list(settings.tasks), limit=settings.zero_shot_limit,
            batch_size=settings.zero_shot_batch_size, device=str(ctx.device), data_dir=ctx.source.data_dir,
        )
        timings["zero_shot"] = time.perf_counter() - tick
        result["zero_shot"] = {**details["accuracy"], "mean": details["mean"]}
        result["zero_shot_stderr"] = {**details["stderr"], "mean": details["mean_stderr"]}  # lm-eval's, per task
        result["zero_shot_details"] = {k: v for k, v in details.items() if k not in ("accuracy", "mean")}
    timings["total"] = time.perf_counter() - started

    if settings.save:
        write_json_atomic(Path(settings.save) / RESULT_FILE, result)
    return result
