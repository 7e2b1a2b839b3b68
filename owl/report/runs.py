"""Reading result files into one table of runs, finding the runs of a grid point (all its seeds),
and guessing a spec from a folder of results."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from owl.report.common import (
    METHOD_ORDER,
    PAPER_OWL,
    RESULT_FILE,
    SWEEP_METHODS,
    ZERO_SHOT_FILE,
    is_owl,
    near,
    read_json,
)
from owl.zoo import ZOO_SECTIONS, allocation_value, section_of_run


# ---- loading ----------------------------------------------------------------------------------
def find_results(results_dir: str | Path) -> list[str]:
    """Every ``result.json`` below ``results_dir``, and every ``zeroshot.json`` without a
    ``result.json`` beside it (one with is merged into that run by :func:`load_runs`), sorted."""
    root = Path(results_dir)
    found = {str(p) for p in root.rglob(RESULT_FILE)}
    found |= {str(p) for p in root.rglob(ZERO_SHOT_FILE) if not (p.parent / RESULT_FILE).exists()}
    return sorted(found)


def _read_run_file(path: Path, merge_zero_shot: bool) -> dict:
    """A run's ``result.json`` (or a ``zeroshot.json``, or a folder holding either); a result
    without zero-shot numbers takes them from a ``zeroshot.json`` beside it."""
    if path.is_dir():
        path = path / RESULT_FILE if (path / RESULT_FILE).exists() or not (path / ZERO_SHOT_FILE).exists() else path / ZERO_SHOT_FILE
    result = read_json(path)
    sibling = path.parent / ZERO_SHOT_FILE
    if merge_zero_shot and path.name != ZERO_SHOT_FILE and not result.get("zero_shot") and sibling.exists():
        extra = read_json(sibling)
        result = {**result, **{k: extra[k] for k in ("zero_shot", "zero_shot_details") if k in extra}}
    return result


def ppl_of(result: dict) -> float:
    """WikiText-2 *test* perplexity (what every table reports); NaN without one (a tuning run's
    validation perplexity is never read here: it stays out of the test tables)."""
    ppl = result.get("ppl") or {}
    value = ppl.get("wikitext2") if isinstance(ppl, dict) else ppl
    return float("nan") if value is None else float(value)


def _zoo_section(identity: dict, path: Path | None, result: dict) -> str | None:
    """The zoo section of a run (owl.zoo): the workflow's ``sections``, else its folder's name
    (``zoo_*``, ``tune_*``), else the folder its settings saved to; None for the paper's runs."""
    if "sections" in identity:
        return next((s for s in identity["sections"] or [] if s in ZOO_SECTIONS), None)
    folder = path.parent if path is not None and path.suffix == ".json" else path
    if folder is None and (result.get("settings") or {}).get("save"):
        folder = Path(result["settings"]["save"])
    return None if folder is None else section_of_run(folder.name)


def load_runs(entries: Iterable[str | Path | dict], merge_zero_shot: bool = True) -> pd.DataFrame:
    """One row per run: model, method, sparsity, Hyper_m, Lamda, seed, ppl, achieved_sparsity, path,
    result, then its allocation (``allocation``, its hyperparameter ``alloc_value``) and
    ``zoo_section`` (owl.zoo's section of an allocation-zoo run, None for the paper's runs: the
    paper's tables never read zoo runs, :func:`find_runs`).

    An entry is a path to a ``result.json`` or a ``zeroshot.json`` (or their folder), a result dict,
    or a dict with ``path`` and identity fields (``model``, ``method``, ``sparsity``, ``Hyper_m``,
    ``Lamda``, ``seed``) that override those read from the file; the workflow passes the latter so
    rows carry its model keys. ``seed`` is the calibration seed (the result's ``seed``; 0, the
    kit's default, where it has none); several seeds of one grid point are several rows. For non-OWL methods ``Hyper_m`` and ``Lamda`` are NaN: they do not change the
    run. A ``zeroshot.json`` has no perplexity (``ppl`` NaN); with ``merge_zero_shot`` a
    ``result.json`` without zero-shot numbers takes them from a ``zeroshot.json`` beside it.
    """
    rows = []
    for entry in entries:
        identity: dict = {}
        if isinstance(entry, dict) and "path" in entry:
            identity = {k: v for k, v in entry.items() if k != "path"}
            path = Path(entry["path"])
            result = _read_run_file(path, merge_zero_shot)
        elif isinstance(entry, dict):
            path, result = None, entry
        else:
            path = Path(entry)
            result = _read_run_file(path, merge_zero_shot)
        method = identity.get("method", result.get("prune_method"))
        dense = method == "dense"
        row = {
            "model": identity.get("model", result.get("model")),
            "method": method,
            "sparsity": 0.0 if dense else float(identity.get("sparsity", result.get("sparsity_ratio", float("nan")))),
            "Hyper_m": float(identity.get("Hyper_m", result.get("Hyper_m"))) if is_owl(method) else float("nan"),
            "Lamda": float(identity.get("Lamda", result.get("Lamda"))) if is_owl(method) else float("nan"),
            "seed": _seed(identity.get("seed", result.get("seed"))),
            "ppl": ppl_of(result),
            "achieved_sparsity": result.get("achieved_sparsity", float("nan")),
            "path": None if path is None else str(path),
            "result": result,
            "allocation": identity.get("allocation", result.get("allocation")),
            "alloc_value": identity.get("alloc_value", allocation_value(result)),
            "zoo_section": _zoo_section(identity, path, result),
        }
        rows.append(row)
    columns = ["model", "method", "sparsity", "Hyper_m", "Lamda", "seed", "ppl", "achieved_sparsity", "path", "result",
               "allocation", "alloc_value", "zoo_section"]
    return pd.DataFrame(rows, columns=columns).astype({"seed": int})


def _seed(value) -> int:
    return 0 if value is None or (isinstance(value, float) and math.isnan(value)) else int(value)


def paper_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of the paper's sections: allocation-zoo runs (same method names, other settings) left out."""
    return runs[runs["zoo_section"].isna()] if "zoo_section" in runs else runs


def zoo_runs(runs: pd.DataFrame, section: str = "zoo") -> pd.DataFrame:
    """The allocation-zoo runs of one section (``zoo``: reported, ``zoo_tuning``: trials)."""
    return runs[runs["zoo_section"] == section] if "zoo_section" in runs else runs.iloc[:0]


def find_runs(runs: pd.DataFrame, model: str, method: str, sparsity: float | None = None,
              hyper_m: float | None = None, lamda: float | None = None) -> pd.DataFrame:
    """Every run (one per seed) of one grid point of the paper's sections: ``model`` and ``method``
    at ``sparsity`` (ignored for dense), sorted by seed; empty if there is none. Zoo runs are never
    a paper grid point's (:func:`paper_runs`).

    For OWL methods, ``hyper_m``/``lamda`` select the hyper-parameters when given; when several
    settings still match, the one nearest the paper's (5, 0.08) wins.
    """
    runs = paper_runs(runs)
    sel = runs[(runs["model"] == model) & (runs["method"] == method)]
    if method != "dense" and sparsity is not None:
        sel = sel[near(sel["sparsity"], sparsity)]
    if is_owl(method):
        if hyper_m is not None:
            sel = sel[near(sel["Hyper_m"], hyper_m)]
        if lamda is not None:
            sel = sel[near(sel["Lamda"], lamda)]
        if len(sel) > 1:
            distance = (sel["Hyper_m"] - PAPER_OWL[0]).abs() + 10 * (sel["Lamda"] - PAPER_OWL[1]).abs()
            best = sel.loc[distance.idxmin()]
            sel = sel[near(sel["Hyper_m"], best["Hyper_m"]) & near(sel["Lamda"], best["Lamda"])]
    return sel.sort_values("seed", kind="stable")


def find_run(runs: pd.DataFrame, model: str, method: str, sparsity: float | None = None,
             hyper_m: float | None = None, lamda: float | None = None) -> pd.Series | None:
    """The run of the lowest seed of the grid point :func:`find_runs` selects, or None."""
    sel = find_runs(runs, model, method, sparsity, hyper_m, lamda)
    return None if sel.empty else sel.iloc[0]


def model_entries(spec: dict, keys: Sequence[str] | None) -> list[dict]:
    by_key = {m["key"]: m for m in spec["models"]}
    return [by_key[k] for k in (keys if keys is not None else list(by_key))]


def model_label(model: dict) -> str:
    return model.get("label") or model["key"]


def owl_args(model: dict) -> dict:
    return {"hyper_m": model.get("Hyper_m"), "lamda": model.get("Lamda")}


def infer_spec(runs: pd.DataFrame, main_sparsity: float | None = None) -> dict:
    """Guess a spec from whatever runs there are (for the notebooks run by hand on a folder).

    Models in order of appearance, labelled by the last part of their id; their OWL
    hyper-parameters are the most frequent among their OWL runs (ties: nearest the paper's 5, 0.08);
    the main sparsity is ``main_sparsity`` or the most frequent one of the pruned runs; a sweep when
    runs cover several sparsities; an ablation for each model whose OWL runs at the main sparsity
    vary M or lambda; a zero-shot table when some result has zero-shot accuracies. Allocation-zoo
    runs are left out (no zoo section: its spec comes from a config).
    """
    runs = paper_runs(runs)
    models, keys = [], list(dict.fromkeys(runs["model"]))
    for key in keys:
        owl_runs = runs[(runs["model"] == key) & runs["method"].map(is_owl)]
        # count grid points, not runs: a point with five seeds is still one point
        points = set(zip(owl_runs["method"], owl_runs["sparsity"], owl_runs["Hyper_m"], owl_runs["Lamda"]))
        pairs = Counter((m, lamda) for _, _, m, lamda in points)
        if pairs:
            best = max(pairs.items(), key=lambda kv: (kv[1], -abs(kv[0][0] - PAPER_OWL[0]) - 10 * abs(kv[0][1] - PAPER_OWL[1])))[0]
            hyper_m, lamda = float(best[0]), float(best[1])
        else:
            hyper_m, lamda = PAPER_OWL
        models.append({"key": key, "label": Path(str(key)).name or str(key), "Hyper_m": hyper_m, "Lamda": lamda})
    pruned = runs[runs["method"] != "dense"]
    if main_sparsity is None:
        points = set(zip(pruned["model"], pruned["method"], pruned["sparsity"], pruned["Hyper_m"].fillna(-1), pruned["Lamda"].fillna(-1)))
        main_sparsity = Counter(p[2] for p in points).most_common(1)[0][0] if points else 0.7
    present = [m for m in METHOD_ORDER if m in set(runs["method"])] + sorted(set(runs["method"]) - set(METHOD_ORDER))
    spec: dict = {
        "models": models,
        "main": {"sparsity": float(main_sparsity), "models": keys, "methods": present},
        "sweep": None,
        "ablation": None,
        "zero_shot": None,
    }
    sweep_methods = [m for m in SWEEP_METHODS if m in present]
    sparsities = sorted(set(pruned[pruned["method"].isin(sweep_methods)]["sparsity"]))
    if len(sparsities) > 1:
        sweep_keys = [k for k in keys if len(set(pruned[(pruned["model"] == k) & pruned["method"].isin(sweep_methods)]["sparsity"])) > 1]
        spec["sweep"] = {"models": sweep_keys, "methods": sweep_methods, "sparsities": [float(s) for s in sparsities]}
    for method in ("wanda_owl", "sparsegpt_owl", "magnitude_owl"):
        sel = runs[(runs["method"] == method).to_numpy() & near(runs["sparsity"], main_sparsity)]
        ab_keys = [k for k in keys if len(set(zip(sel[sel["model"] == k]["Hyper_m"], sel[sel["model"] == k]["Lamda"]))) > 1]
        if ab_keys:
            spec["ablation"] = {
                "models": ab_keys, "method": method, "sparsity": float(main_sparsity),
                "Hyper_m": sorted({float(x) for x in sel["Hyper_m"]}), "Lamda": sorted({float(x) for x in sel["Lamda"]}),
            }
            break
    with_zs = runs[np.array([bool(r.get("zero_shot")) for r in runs["result"]], dtype=bool)]
    if len(with_zs):
        tasks = list(dict.fromkeys(t for r in with_zs["result"] for t in r["zero_shot"] if t != "mean"))
        spec["zero_shot"] = {
            "models": list(dict.fromkeys(with_zs["model"])),
            "methods": [m for m in present if m in set(with_zs["method"])],
            "sparsity": float(main_sparsity),
            "tasks": tasks,
        }
    return spec


