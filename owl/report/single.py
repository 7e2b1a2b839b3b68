"""One run and one allocation: the summaries and records the prune, zeroshot and allocate
notebooks show."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from owl.report.common import close, is_owl, method_label, num
from owl.report.runs import ppl_of
from owl.uncertainty import mean_stderr


# ---- one run (for the prune notebook) ----------------------------------------------------------
SPLIT_LABELS = {"wikitext2_validation": "WikiText-2 validation perplexity (tuning)"}


def run_summary(result: dict) -> pd.DataFrame:
    """The headline numbers of one result dict, as a one-column table."""
    owl = is_owl(result.get("prune_method", ""))
    timings = result.get("timings_s") or {}
    items = {
        "model": result.get("model"),
        "method": method_label(result.get("prune_method", "")),
        "target sparsity": result.get("sparsity_ratio"),
        "achieved sparsity": None if result.get("achieved_sparsity") is None else round(float(result["achieved_sparsity"]), 6),
        "M (Hyper_m)": result.get("Hyper_m") if owl else "-",
        "lambda (Lamda)": result.get("Lamda") if owl else "-",
    }
    if result.get("allocation") not in (None, "dense"):
        params = ", ".join(f"{k} {v}" for k, v in (result.get("allocation_params") or {}).items())
        items["allocation"] = result["allocation"] + (f" ({params})" if params else "")
    ppl = result.get("ppl") if isinstance(result.get("ppl"), dict) else {}
    if result.get("ppl") or not result.get("zero_shot"):  # a zeroshot.json has no perplexity
        if "wikitext2" in ppl or not ppl:  # the test split: what the tables report
            items["WikiText-2 perplexity"] = None if math.isnan(ppl_of(result)) else round(ppl_of(result), 4)
        for dataset, label in SPLIT_LABELS.items():  # a tuning run's: shown here, never in a table
            if dataset in ppl:
                items[label] = round(float(ppl[dataset]), 4)
        items["evaluation windows"] = result.get("eval_windows")
    if result.get("zero_shot"):
        mean = result["zero_shot"].get("mean")
        items["zero-shot mean accuracy (%)"] = None if mean is None else round(100 * float(mean), 2)
    for name, seconds in timings.items():
        items[f"time: {name} (s)"] = round(float(seconds), 2)
    return pd.DataFrame({"value": [str(v) for v in items.values()]}, index=pd.Index(list(items), name="quantity"))


def zero_shot_summary(result: dict) -> pd.DataFrame:
    """The zero-shot numbers of one result dict: a row per task (accuracy and lm-eval's standard
    error in %, or why it is missing, and where the rows came from), ``mean`` last with the tasks
    it is over and its standard error ``sqrt(sum se^2)/k``."""
    scores = result.get("zero_shot") or {}
    details = result.get("zero_shot_details") or {}
    missing = details.get("missing") or {}
    source = details.get("source") or {}
    stderr = details.get("stderr") or {}
    tasks = list(dict.fromkeys([*(result.get("settings") or {}).get("tasks", []), *scores, *missing]))

    def percent(value) -> str:
        return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * float(value):.2f}"

    rows = {}
    for task in tasks:
        if task == "mean":
            continue
        rows[task] = (percent(scores.get(task)), percent(stderr.get(task)), missing.get(task, source.get(task, "")))
    in_mean = details.get("tasks_in_mean") or [t for t in scores if t != "mean"]
    errors = [stderr.get(t) for t in in_mean]
    mean_se = mean_stderr(errors) if in_mean and None not in errors else None
    rows["mean"] = (percent(scores.get("mean")), percent(mean_se), f"over {', '.join(in_mean) or 'no task'}")
    return pd.DataFrame(list(rows.values()), index=pd.Index(list(rows), name="task"),
                        columns=["accuracy (%)", "stderr (%)", "note"])


# ---- allocation (for the allocate notebook) ---------------------------------------------------
def outlier_ratios_for(lod: dict, hyper_m: float) -> list[float]:
    """The LOD for threshold ``M`` out of a ``lod.json`` dict (keys ``"5"``, ``"5.0"`` both work)."""
    ratios = lod["outlier_ratios"]
    for key, values in ratios.items():
        if close(float(key), hyper_m):
            return [float(v) for v in values]
    raise KeyError(f"the statistics hold outlier ratios for M in {sorted(ratios, key=float)}, not M={num(hyper_m)}; "
                   "rerun the statistics pass with that M")


def allocation_record(lod: dict, sparsity_ratio: float, hyper_m: float, lamda: float, owl_weighting: str = "blocks") -> dict:
    """Uniform and OWL per-block sparsities for one (target, M, lambda), from the statistics' LOD."""
    from owl.allocation import owl_sparsities, uniform_sparsities

    ratios = outlier_ratios_for(lod, hyper_m)
    params = lod.get("block_params")
    weights = params if owl_weighting == "params" else None
    owl = owl_sparsities(ratios, sparsity_ratio, lamda, block_weights=weights)
    record = {
        "model": lod.get("model"),
        "sparsity_ratio": float(sparsity_ratio),
        "Hyper_m": float(hyper_m),
        "Lamda": float(lamda),
        "owl_weighting": owl_weighting,
        "outlier_ratios": ratios,
        "uniform": uniform_sparsities(len(ratios), sparsity_ratio),
        "owl": owl,
        "owl_mean": float(np.mean(owl)),
        "owl_min": float(min(owl)),
        "owl_max": float(max(owl)),
    }
    if params:
        record["block_params"] = [int(p) for p in params]
        record["owl_param_weighted_mean"] = float(np.average(owl, weights=params))
    return record


