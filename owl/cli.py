"""``owl`` command line: ``owl prune`` with the flags of the paper's code, and ``owl calibrate``."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from owl.errors import OwlError
from owl.precision import default_dtype
from owl.settings import (
    ALLOCATIONS, ATTN_IMPLEMENTATIONS, CALIBRATION_DATASETS, DEFAULT_ZERO_SHOT_TASKS, DLP_REDUCTIONS, DTYPES, EVAL_DATASETS,
    OWL_WEIGHTINGS, PRUNE_METHODS, PruneSettings,
)


def _add_common(parser: argparse.ArgumentParser) -> None:
    defaults = PruneSettings()
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("--model", default=defaults.model, help="embedded name (smollm2-135m, gemma3-270m), Hub id or local path")
    parser.add_argument("--nsamples", type=int, default=defaults.nsamples, help="calibration windows")
    parser.add_argument("--seqlen", type=int, default=defaults.seqlen, help="tokens per window")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="calibration sampling seed")
    parser.add_argument("--calib_dataset", default=defaults.calib_dataset, help=f"one of {', '.join(CALIBRATION_DATASETS)}")
    parser.add_argument("--calib_batch_size", type=int, default=defaults.calib_batch_size, help="windows per calibration forward")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--dtype", default=None, help=f"working precision of the weights: {', '.join(DTYPES)} (auto: bfloat16 where the device has native bf16 matmul, else float16 on CUDA, float32 on CPU; default: float16 on CUDA as the paper, float32 on CPU)")
    parser.add_argument("--forward_dtype", default=None, help=f"precision of the block forwards during calibration and pruning ({', '.join(DTYPES)}); statistics, masks and SparseGPT stay float32, pruned weights keep --dtype; default: --dtype")
    parser.add_argument("--cache_dir", default=None, help="models, tokens and statistics cache (default $OWL_CACHE_DIR or ~/.cache/owl)")
    parser.add_argument("--stats_path", default=None, help="where the dense statistics are stored / reused")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="owl", description="Outlier Weighed Layerwise sparsity for LLM pruning")
    sub = parser.add_subparsers(dest="command", required=True)

    prune = sub.add_parser("prune", help="prune a model and evaluate it", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_common(prune)
    defaults = PruneSettings()
    prune.add_argument("--prune_method", default=defaults.prune_method, help=f"one of {', '.join(PRUNE_METHODS)}")
    prune.add_argument("--sparsity_ratio", type=float, default=defaults.sparsity_ratio, help="target sparsity in [0, 1)")
    prune.add_argument("--sparsity_type", default=defaults.sparsity_type, help="unstructured or N:M (e.g. 2:4)")
    prune.add_argument("--Hyper_m", type=float, default=defaults.Hyper_m, help="OWL outlier threshold M")
    prune.add_argument("--Lamda", type=float, default=defaults.Lamda, help="OWL limit lambda (whole number for wanda_owl_structure)")
    prune.add_argument("--owl_weighting", default=defaults.owl_weighting, help=f"mean kept by OWL: {', '.join(OWL_WEIGHTINGS)} (params = parameter-weighted)")
    prune.add_argument("--allocation", default=None, help=f"layerwise sparsity: {', '.join(ALLOCATIONS)} (default: the one --prune_method names, e.g. wanda_owl, else uniform)")
    prune.add_argument("--dlp_alpha", type=float, default=None, help="DLP's range alpha: block sparsities spread over 2 alpha (default: its scripts' 0.15)")
    prune.add_argument("--dlp_reduce", default=defaults.dlp_reduce, help=f"DLP's block statistic: {', '.join(DLP_REDUCTIONS)} Wanda score (mean: its code; median: its paper)")
    prune.add_argument("--dsa_lambda", type=float, default=None, help="DSA's range lambda: block sparsities spread over 2 lambda (default: its --Lamda 0.08)")
    prune.add_argument("--epsilon", type=float, default=None, help="AlphaPruning's range: ratios in [1 - eps, 1 + eps] (default: its LLaMA-7B scripts: 0.3 magnitude, 0.2 Wanda and SparseGPT)")
    prune.add_argument("--beta", type=float, default=None, help="ATP's step: sparsity rises by beta per block (required with --allocation atp)")
    prune.add_argument("--use_variant", action="store_true", help="Wanda variant: per-row cumulative-score threshold")
    prune.add_argument("--sparsegpt_blocksize", type=int, default=defaults.sparsegpt_blocksize)
    prune.add_argument("--sparsegpt_percdamp", type=float, default=defaults.sparsegpt_percdamp)
    prune.add_argument("--eval_limit", type=int, default=None, help="evaluate only the first K windows (quick checks)")
    prune.add_argument("--eval_dtype", default=None, help=f"precision of the evaluation ({', '.join(DTYPES)}); default: --dtype")
    prune.add_argument("--eval_batch_size", type=int, default=defaults.eval_batch_size)
    prune.add_argument("--attn_implementation", default=None, help=f"attention kernel: {', '.join(ATTN_IMPLEMENTATIONS)} (default: the model's, sdpa)")
    prune.add_argument("--eval_dataset", default="wikitext2", help=f"perplexity on: {', '.join(EVAL_DATASETS)} (the validation split is for tuning)")
    prune.add_argument("--no_eval", action="store_true", help="skip the WikiText-2 evaluation")
    prune.add_argument("--save", default=None, help="directory for result.json")
    prune.add_argument("--save_model", default=None, help="directory for the pruned model (save_pretrained)")
    prune.add_argument("--eval_zero_shot", action="store_true", help="zero-shot accuracy with lm-evaluation-harness")
    prune.add_argument("--tasks", default=",".join(DEFAULT_ZERO_SHOT_TASKS), help="comma-separated lm-eval task names")
    prune.add_argument("--zero_shot_limit", type=int, default=None, help="first N examples per task")
    prune.add_argument("--zero_shot_batch_size", type=int, default=defaults.zero_shot_batch_size)

    rerun = sub.add_parser("rerun", help="rerun a result.json's settings and compare the perplexity (4 significant digits)")
    rerun.add_argument("result", help="a result.json written by owl prune / the workflow")
    rerun.add_argument("--save", default=None, help="directory for the rerun's result.json")
    rerun.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")

    evaluate = sub.add_parser("evaluate", help="evaluate a run whose evaluation did not finish, from its recorded pruning (no pruning again)")
    evaluate.add_argument("run_dir", help="the --save folder of an owl prune run holding pruning.json")
    evaluate.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")

    calibrate = sub.add_parser("calibrate", help="dense statistics pass and outlier distribution", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_common(calibrate)
    calibrate.add_argument("--Hyper_m", type=float, nargs="+", default=[3, 5, 7, 10], help="thresholds M to report")
    calibrate.add_argument("--out", default=None, help="write the outlier distribution JSON here")
    return parser


def _settings_from_args(args: argparse.Namespace) -> PruneSettings:
    return PruneSettings(
        model=args.model, prune_method=args.prune_method, sparsity_ratio=args.sparsity_ratio,
        sparsity_type=args.sparsity_type, Hyper_m=args.Hyper_m, Lamda=args.Lamda, nsamples=args.nsamples,
        seqlen=args.seqlen, seed=args.seed, use_variant=args.use_variant, cache_dir=args.cache_dir, save=args.save,
        save_model=args.save_model, device=args.device, dtype=args.dtype or default_dtype(args.device), eval_dtype=args.eval_dtype, forward_dtype=args.forward_dtype, eval_limit=args.eval_limit,
        eval_dataset=None if args.no_eval else args.eval_dataset, calib_dataset=args.calib_dataset,
        allocation=args.allocation, dlp_alpha=args.dlp_alpha, dlp_reduce=args.dlp_reduce, dsa_lambda=args.dsa_lambda, epsilon=args.epsilon, beta=args.beta,
        calib_batch_size=args.calib_batch_size, eval_batch_size=args.eval_batch_size, stats_path=args.stats_path,
        attn_implementation=args.attn_implementation,
        owl_weighting=args.owl_weighting, sparsegpt_blocksize=args.sparsegpt_blocksize,
        sparsegpt_percdamp=args.sparsegpt_percdamp, eval_zero_shot=args.eval_zero_shot,
        tasks=tuple(t.strip() for t in args.tasks.split(",") if t.strip()), zero_shot_limit=args.zero_shot_limit,
        zero_shot_batch_size=args.zero_shot_batch_size,
    )


def _rerun(path: str, save: str | None) -> int:
    """Rerun the settings recorded in a result file; exit 1 when the perplexity differs."""
    from owl.pipeline import run_prune
    from owl.results import read_result

    try:
        recorded = read_result(path)
        settings = PruneSettings(**{**recorded["settings"], "save": save, "save_model": None})
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise OwlError(f"{path} is not a readable result.json with recorded settings ({error})") from None
    settings.tasks = tuple(settings.tasks)
    settings.eval_zero_shot = False
    fresh = run_prune(settings.validate())
    same = True
    for name, value in recorded.get("ppl", {}).items():
        new = fresh["ppl"].get(name)
        match = new is not None and f"{value:.4g}" == f"{new:.4g}"
        same &= match
        print(f"{name}: recorded {value:.6g}, rerun {new:.6g} -> {'same' if match else 'DIFFERENT'} to 4 significant digits")
    return 0 if same else 1


def _evaluate(run_dir: str) -> dict:
    """Evaluate the pruning recorded in ``run_dir`` with the run's own settings."""
    from pathlib import Path

    from owl.pipeline import run_prune
    from owl.pruning_record import PRUNING_RECORD, find_pruning

    path = Path(run_dir) / PRUNING_RECORD
    try:
        recorded = json.loads(path.read_text())["settings"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise OwlError(f"{run_dir} holds no readable {PRUNING_RECORD} with recorded settings ({error}); run owl prune with --save") from None
    settings = PruneSettings(**{**recorded, "tasks": tuple(recorded["tasks"]), "save": str(run_dir)})
    if find_pruning(run_dir, settings.to_dict()) is None:
        raise OwlError(f"{path} cannot be restored (its weights file is missing or it was recorded for other settings)")
    return run_prune(settings.validate())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        if args.command == "prune":
            from owl.pipeline import run_prune

            result = run_prune(_settings_from_args(args).validate())
            summary = {k: result[k] for k in ("model", "prune_method", "allocation", "allocation_params", "sparsity_ratio",
                                              "achieved_sparsity", "ppl", "eval_windows")}
            if "zero_shot" in result:
                summary["zero_shot"] = result["zero_shot"]
            print(json.dumps(summary))
        elif args.command == "evaluate":
            result = _evaluate(args.run_dir)
            print(json.dumps({k: result[k] for k in ("model", "prune_method", "sparsity_ratio", "achieved_sparsity", "ppl", "eval_windows")}))
        elif args.command == "rerun":
            return _rerun(args.result, args.save)
        elif args.command == "calibrate":
            from owl.pipeline import calibrate
            from owl.results import write_json_atomic

            out = calibrate(
                args.model, nsamples=args.nsamples, seqlen=args.seqlen, seed=args.seed, calib_dataset=args.calib_dataset,
                device=args.device, dtype=args.dtype or default_dtype(args.device), cache_dir=args.cache_dir, stats_path=args.stats_path,
                hyper_ms=args.Hyper_m, calib_batch_size=args.calib_batch_size, forward_dtype=args.forward_dtype,
            )
            if args.out:
                write_json_atomic(args.out, out)
            print(json.dumps(out["outlier_ratios"]))
    except OwlError as error:
        print(f"owl: error: {error}", file=sys.stderr)
        return 2
    return 0
