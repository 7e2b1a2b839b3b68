"""The paper's tables and figures, from result files.

Everything here reads result dicts (the ``result.json`` that ``run_prune`` writes) or the
``lod.json`` of the statistics pass; nothing runs a model, so restyling a table or a figure is
cheap. Numeric tables are pandas DataFrames built by pure functions; ``format_*`` turns them into
the paper's printed form; small I/O helpers write CSV, Markdown, PNG and PDF. The workflow
(``rules/report.smk``) and the notebooks ``tables.ipynb`` and ``figures.ipynb`` call
:func:`build_tables` and :func:`build_figures`; :func:`table_files` and :func:`figure_files` name
what those write, so the workflow declares exactly those outputs.

Conventions
- Perplexity is WikiText-2 (``result["ppl"]["wikitext2"]``), printed with two decimals; lower is
  better.
- An OWL row shows, in brackets, its perplexity minus that of the uniform baseline of the same
  method at the same sparsity (``24.55 (-61.22)``: OWL gains 61.22 over Wanda).
- Bold marks the best pruned entry of a column: the lowest perplexity, or the highest zero-shot
  accuracy; the dense model is never bold (it is the reference, not a contender). Ties are all bold.
- Zero-shot accuracies are printed in percent. They come from ``zeroshot.json`` (the workflow's
  zeroshot jobs, beside the run's ``result.json``) or from a ``result.json`` of ``owl prune
  --eval_zero_shot``. A task a run could not evaluate is ``n/a`` in its row, with the reason in a
  note; the notes also name the tasks the mean is over.

A *spec* says what the tables hold (the workflow derives it from its config; :func:`infer_spec`
guesses one from a folder of results)::

    {"models": [{"key": "smollm2-135m", "label": "SmolLM2-135M", "Hyper_m": 5, "Lamda": 0.08}],
     "main": {"sparsity": 0.7, "models": ["smollm2-135m"], "methods": ["dense", "wanda", ...]},
     "sweep": {"models": [...], "methods": [...], "sparsities": [0.5, 0.6, 0.7, 0.8]} or None,
     "ablation": {"models": [...], "method": "wanda_owl", "sparsity": 0.7,
                  "Hyper_m": [3, 5, 7, 10], "Lamda": [0.04, 0.08]} or None,
     "zero_shot": {"models": [...], "methods": [...], "sparsity": 0.7, "tasks": [...]} or None}

``Hyper_m``/``Lamda`` of a model are the OWL hyper-parameters its main and sweep rows use.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "METHOD_ORDER",
    "METHOD_LABELS",
    "OWL_BASELINE",
    "load_runs",
    "find_results",
    "ZERO_SHOT_FILE",
    "infer_spec",
    "find_run",
    "main_table",
    "sweep_table",
    "zero_shot_table",
    "ablation_table",
    "format_ppl_block",
    "format_main_table",
    "format_sweep_table",
    "format_zero_shot_table",
    "format_ablation_table",
    "ablation_baseline",
    "pct_change",
    "to_markdown",
    "table_files",
    "figure_files",
    "build_tables",
    "build_figures",
    "allocation_record",
    "run_summary",
    "zero_shot_summary",
    "is_owl",
    "method_label",
    "plot_lod",
    "plot_layerwise",
    "plot_sweep",
    "plot_ablation",
    "save_figure",
    "write_json",
    "read_json",
]

METHOD_ORDER = ("dense", "magnitude", "wanda", "wanda_owl", "sparsegpt", "sparsegpt_owl", "magnitude_owl", "wanda_owl_structure")
METHOD_LABELS = {
    "dense": "Dense",
    "magnitude": "Magnitude",
    "wanda": "Wanda",
    "wanda_owl": "OWL w. Wanda",
    "sparsegpt": "SparseGPT",
    "sparsegpt_owl": "OWL w. SparseGPT",
    "magnitude_owl": "OWL w. Magnitude",
    "wanda_owl_structure": "OWL w. Wanda (mixed N:M)",
}
OWL_BASELINE = {"wanda_owl": "wanda", "sparsegpt_owl": "sparsegpt", "magnitude_owl": "magnitude", "wanda_owl_structure": "wanda"}
SWEEP_METHODS = ("wanda", "wanda_owl", "sparsegpt", "sparsegpt_owl")
TABLE_SECTIONS = ("main", "sweep", "zero_shot", "ablation")
RESULT_FILE = "result.json"
ZERO_SHOT_FILE = "zeroshot.json"  # what a zeroshot job of the workflow writes beside result.json
FIGURE_SECTIONS = ("layerwise", "sweep", "ablation")
FIGURE_FORMATS = ("png", "pdf")
_PAPER_OWL = (5.0, 0.08)  # the README's LLaMA-7B setting; used to break ties when guessing a spec
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


# ---- small helpers ----------------------------------------------------------------------------
def is_owl(method: str) -> bool:
    return "_owl" in method


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def safe_name(text: str) -> str:
    """A file-name-safe form of a model key or id (``huggyllama/llama-7b`` -> ``huggyllama_llama-7b``)."""
    return _SAFE.sub("_", str(text)).strip("_") or "model"


def _close(a, b) -> bool:
    return a is not None and b is not None and not pd.isna(a) and not pd.isna(b) and math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)


def _near(column: pd.Series, value) -> np.ndarray:
    """Element-wise :func:`_close` of a column against one value, as a boolean array."""
    return np.array([_close(x, value) for x in column], dtype=bool)


def pct_change(value, baseline):
    """Percent change of ``value`` against ``baseline`` (numbers or aligned Series); negative is lower."""
    return 100.0 * (value / baseline - 1.0)


def _pct(x: float) -> str:
    return f"{100 * float(x):g}%"


def _num(x: float) -> str:
    return f"{float(x):g}"


def read_json(path: str | Path) -> dict:
    with open(path) as handle:
        return json.load(handle)


def write_json(path: str | Path, data) -> Path:
    """Write JSON atomically (a reader never sees half a file)."""
    from owl.results import write_json_atomic

    return write_json_atomic(path, data)


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


def _ppl(result: dict) -> float:
    ppl = result.get("ppl") or {}
    value = ppl.get("wikitext2") if isinstance(ppl, dict) else ppl
    return float("nan") if value is None else float(value)


def load_runs(entries: Iterable[str | Path | dict], merge_zero_shot: bool = True) -> pd.DataFrame:
    """One row per run: model, method, sparsity, Hyper_m, Lamda, ppl, achieved_sparsity, path, result.

    An entry is a path to a ``result.json`` or a ``zeroshot.json`` (or their folder), a result dict,
    or a dict with ``path`` and identity fields (``model``, ``method``, ``sparsity``, ``Hyper_m``,
    ``Lamda``) that override those read from the file; the workflow passes the latter so rows carry
    its model keys. For non-OWL methods ``Hyper_m`` and ``Lamda`` are NaN: they do not change the
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
            "ppl": _ppl(result),
            "achieved_sparsity": result.get("achieved_sparsity", float("nan")),
            "path": None if path is None else str(path),
            "result": result,
        }
        rows.append(row)
    columns = ["model", "method", "sparsity", "Hyper_m", "Lamda", "ppl", "achieved_sparsity", "path", "result"]
    return pd.DataFrame(rows, columns=columns)


def find_run(runs: pd.DataFrame, model: str, method: str, sparsity: float | None = None,
             hyper_m: float | None = None, lamda: float | None = None) -> pd.Series | None:
    """The run of ``model`` and ``method`` at ``sparsity`` (ignored for dense), or None.

    For OWL methods, ``hyper_m``/``lamda`` select the hyper-parameters when given; when several
    runs still match, the one nearest the paper's (5, 0.08) wins.
    """
    sel = runs[(runs["model"] == model) & (runs["method"] == method)]
    if method != "dense" and sparsity is not None:
        sel = sel[_near(sel["sparsity"], sparsity)]
    if is_owl(method):
        if hyper_m is not None:
            sel = sel[_near(sel["Hyper_m"], hyper_m)]
        if lamda is not None:
            sel = sel[_near(sel["Lamda"], lamda)]
    if sel.empty:
        return None
    if len(sel) > 1 and is_owl(method):
        distance = (sel["Hyper_m"] - _PAPER_OWL[0]).abs() + 10 * (sel["Lamda"] - _PAPER_OWL[1]).abs()
        return sel.loc[distance.idxmin()]
    return sel.iloc[0]


def _model_entries(spec: dict, keys: Sequence[str] | None) -> list[dict]:
    by_key = {m["key"]: m for m in spec["models"]}
    return [by_key[k] for k in (keys if keys is not None else list(by_key))]


def _label(model: dict) -> str:
    return model.get("label") or model["key"]


def _owl_args(model: dict) -> dict:
    return {"hyper_m": model.get("Hyper_m"), "lamda": model.get("Lamda")}


def infer_spec(runs: pd.DataFrame, main_sparsity: float | None = None) -> dict:
    """Guess a spec from whatever runs there are (for the notebooks run by hand on a folder).

    Models in order of appearance, labelled by the last part of their id; their OWL
    hyper-parameters are the most frequent among their OWL runs (ties: nearest the paper's 5, 0.08);
    the main sparsity is ``main_sparsity`` or the most frequent one of the pruned runs; a sweep when
    runs cover several sparsities; an ablation for each model whose OWL runs at the main sparsity
    vary M or lambda; a zero-shot table when some result has zero-shot accuracies.
    """
    models, keys = [], list(dict.fromkeys(runs["model"]))
    for key in keys:
        owl_runs = runs[(runs["model"] == key) & runs["method"].map(is_owl)]
        pairs = Counter(zip(owl_runs["Hyper_m"], owl_runs["Lamda"]))
        if pairs:
            best = max(pairs.items(), key=lambda kv: (kv[1], -abs(kv[0][0] - _PAPER_OWL[0]) - 10 * abs(kv[0][1] - _PAPER_OWL[1])))[0]
            hyper_m, lamda = float(best[0]), float(best[1])
        else:
            hyper_m, lamda = _PAPER_OWL
        models.append({"key": key, "label": Path(str(key)).name or str(key), "Hyper_m": hyper_m, "Lamda": lamda})
    pruned = runs[runs["method"] != "dense"]
    if main_sparsity is None:
        main_sparsity = Counter(pruned["sparsity"]).most_common(1)[0][0] if len(pruned) else 0.7
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
        sel = runs[(runs["method"] == method).to_numpy() & _near(runs["sparsity"], main_sparsity)]
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


# ---- numeric tables ---------------------------------------------------------------------------
def main_table(runs: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """Perplexity at the main sparsity: a row per method (index = method keys), a column per model label."""
    main = spec["main"]
    data = {}
    for model in _model_entries(spec, main.get("models")):
        column = []
        for method in main["methods"]:
            run = find_run(runs, model["key"], method, main["sparsity"], **_owl_args(model))
            column.append(float("nan") if run is None else run["ppl"])
        data[_label(model)] = column
    return pd.DataFrame(data, index=pd.Index(list(main["methods"]), name="method"))


def sweep_table(runs: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """Perplexity versus sparsity: rows (model label, method), a column per sparsity."""
    sweep = spec["sweep"]
    rows, index = [], []
    for model in _model_entries(spec, sweep.get("models")):
        for method in sweep["methods"]:
            values = []
            for s in sweep["sparsities"]:
                run = find_run(runs, model["key"], method, s, **_owl_args(model))
                values.append(float("nan") if run is None else run["ppl"])
            rows.append(values)
            index.append((_label(model), method))
    return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["model", "method"]),
                        columns=pd.Index([float(s) for s in sweep["sparsities"]], name="sparsity"))


def zero_shot_table(runs: pd.DataFrame, spec: dict) -> tuple[pd.DataFrame, list[str]]:
    """Zero-shot accuracy in percent: rows (model label, method), a column per task, ``Mean`` last.

    Every task of the spec is a column (then any other task a result has), also one that no run
    could evaluate: its cells are NaN and ``table.attrs["missing"]`` maps each row to
    ``{task: reason}``, which :func:`format_zero_shot_table` prints as ``n/a``. ``Mean`` is the
    result's own mean (over the tasks it evaluated). Returns the table and notes: each task not
    evaluated and why (``every run`` or the runs), the tasks the mean is over, and rows without a
    result.
    """
    zs = spec["zero_shot"]
    tasks = list(zs.get("tasks") or [])
    found: list[tuple[tuple[str, str], dict]] = []
    missing: dict[tuple[str, str], dict[str, str]] = {}
    in_means: dict[tuple[str, str], list[str]] = {}
    absent: list[tuple[str, str]] = []
    for model in _model_entries(spec, zs.get("models")):
        for method in zs["methods"]:
            key = (_label(model), method)
            run = find_run(runs, model["key"], method, zs["sparsity"], **_owl_args(model))
            result = {} if run is None else run["result"]
            scores = dict(result.get("zero_shot") or {})
            details = result.get("zero_shot_details") or {}
            if not scores and not details:
                absent.append(key)
            missing[key] = {str(t): str(r) for t, r in (details.get("missing") or {}).items()}
            if scores:
                evaluated = [t for t in scores if t != "mean" and scores[t] is not None]
                in_means[key] = list(details.get("tasks_in_mean") or evaluated)
            for task in [*scores, *missing[key]]:
                if task != "mean" and task not in tasks:
                    tasks.append(task)
            found.append((key, scores))
    rows = []
    for _, scores in found:
        row = [100 * float(scores[t]) if scores.get(t) is not None else float("nan") for t in tasks]
        mean = scores.get("mean")
        if mean is None:
            present = [v for v in row if not math.isnan(v)]
            mean_pct = float(np.mean(present)) if present else float("nan")
        else:
            mean_pct = 100 * float(mean)
        rows.append(row + [mean_pct])
    table = pd.DataFrame(rows, index=pd.MultiIndex.from_tuples([k for k, _ in found], names=["model", "method"]),
                         columns=pd.Index(tasks + ["Mean"], name="task"))
    table.attrs["missing"] = {k: v for k, v in missing.items() if v}

    def who(keys: list[tuple[str, str]]) -> str:
        with_result = [k for k, _ in found if k not in absent]
        if len(keys) == len(with_result) and len(keys) > 1:
            return "every run"
        return ", ".join(f"{m} {method_label(x)}" for m, x in keys)

    notes: list[str] = []
    by_reason: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for key, items in missing.items():
        for task, reason in items.items():
            by_reason.setdefault((task, reason), []).append(key)
    for (task, reason), keys in by_reason.items():
        notes.append(f"n/a: {task} not evaluated ({reason}): {who(keys)}")
    groups: dict[tuple[str, ...], list[tuple[str, str]]] = {}
    for key, covered in in_means.items():
        groups.setdefault(tuple(covered), []).append(key)
    for covered, keys in groups.items():
        text = ", ".join(covered) if covered else "no task"
        notes.append(f"Mean: over {text} ({len(covered)} task{'s' if len(covered) != 1 else ''})"
                     + ("" if len(groups) == 1 else f": {who(keys)}"))
    if absent:
        notes.append(f"-: no zero-shot result: {who(absent)}")
    return table, notes


def ablation_baseline(runs: pd.DataFrame, spec: dict, model_key: str) -> tuple[str, float] | None:
    """``(method, perplexity)`` of the ablation method's uniform baseline at the ablation's sparsity
    (Wanda for OWL w. Wanda), or None if that run is missing: the reference every cell is judged by."""
    ab = spec["ablation"]
    baseline = OWL_BASELINE.get(ab["method"])
    run = None if baseline is None else find_run(runs, model_key, baseline, ab["sparsity"])
    return None if run is None or pd.isna(run["ppl"]) else (baseline, float(run["ppl"]))


def ablation_table(runs: pd.DataFrame, spec: dict, model_key: str) -> pd.DataFrame:
    """Perplexity of the ablation method at its sparsity: a row per M, a column per lambda."""
    ab = spec["ablation"]
    data = []
    for m in ab["Hyper_m"]:
        row = []
        for lamda in ab["Lamda"]:
            run = find_run(runs, model_key, ab["method"], ab["sparsity"], hyper_m=m, lamda=lamda)
            row.append(float("nan") if run is None else run["ppl"])
        data.append(row)
    return pd.DataFrame(data, index=pd.Index([float(m) for m in ab["Hyper_m"]], name="Hyper_m"),
                        columns=pd.Index([float(x) for x in ab["Lamda"]], name="Lamda"))


# ---- formatting -------------------------------------------------------------------------------
def _fmt(x: float, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if math.isinf(x):
        return "inf"
    return f"{x:.{digits}f}"


def _best_mask(values: pd.Series, eligible: Sequence[bool], lower_is_better: bool) -> list[bool]:
    candidates = [float(v) for v, ok in zip(values, eligible) if ok and not pd.isna(v)]
    if not candidates:
        return [False] * len(values)
    best = min(candidates) if lower_is_better else max(candidates)
    return [bool(ok and not pd.isna(v) and math.isclose(float(v), best, rel_tol=1e-12, abs_tol=0.0)) for v, ok in zip(values, eligible)]


def format_ppl_block(block: pd.DataFrame) -> pd.DataFrame:
    """Format perplexities of one block (index = method keys, any columns) the paper's way.

    Bold: the lowest perplexity of a column among the pruned rows. An OWL row whose uniform
    baseline is in the block gets its difference to it in brackets.
    """
    methods = list(block.index)
    out = pd.DataFrame(index=block.index, columns=block.columns, dtype=object)
    pruned = [m != "dense" for m in methods]
    for column in block.columns:
        bold = _best_mask(block[column], pruned, lower_is_better=True)
        for i, method in enumerate(methods):
            value = block.at[method, column]
            text = _fmt(value)
            if bold[i]:
                text = f"**{text}**"
            baseline = OWL_BASELINE.get(method)
            if baseline in block.index and not pd.isna(value) and not pd.isna(block.at[baseline, column]):
                gain = float(value) - float(block.at[baseline, column])
                text += f" ({gain:+.2f})"
            out.at[method, column] = text
    return out


def format_main_table(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's main table: Method, Layerwise Sparsity, Weight Update, then a column per model."""
    body = format_ppl_block(table)
    front = pd.DataFrame({
        "Method": [method_label(m) for m in table.index],
        "Layerwise Sparsity": ["-" if m == "dense" else ("Non-Uniform" if is_owl(m) else "Uniform") for m in table.index],
        "Weight Update": ["-" if m == "dense" else ("yes" if m.startswith("sparsegpt") else "no") for m in table.index],
    }, index=table.index)
    return pd.concat([front, body], axis=1).reset_index(drop=True)


def format_sweep_table(table: pd.DataFrame) -> pd.DataFrame:
    """Sweep table: Model, Method, then a column per sparsity (``50%``); bold/brackets per model."""
    parts = []
    for model in dict.fromkeys(table.index.get_level_values(0)):
        block = table.xs(model, level="model")
        body = format_ppl_block(block)
        body.columns = [_pct(c) for c in block.columns]
        front = pd.DataFrame({"Model": model, "Method": [method_label(m) for m in block.index]}, index=block.index)
        parts.append(pd.concat([front, body], axis=1))
    return pd.concat(parts).reset_index(drop=True) if parts else pd.DataFrame()


def format_zero_shot_table(table: pd.DataFrame, missing: dict | None = None) -> pd.DataFrame:
    """Zero-shot table: Model, Method, a column per task, Mean; the best pruned accuracy per model in
    bold; ``n/a`` for a task a run could not evaluate (``missing``, default ``table.attrs["missing"]``:
    ``{(model label, method): {task: reason}}``), ``-`` where there is no number at all."""
    missing = table.attrs.get("missing", {}) if missing is None else missing
    parts = []
    for model in dict.fromkeys(table.index.get_level_values(0)):
        block = table.xs(model, level="model")
        methods = list(block.index)
        body = pd.DataFrame(index=block.index, columns=block.columns, dtype=object)
        for column in block.columns:
            bold = _best_mask(block[column], [m != "dense" for m in methods], lower_is_better=False)
            for i, method in enumerate(methods):
                value = block.at[method, column]
                if pd.isna(value) and column in missing.get((model, method), {}):
                    text = "n/a"
                else:
                    text = _fmt(value)
                body.at[method, column] = f"**{text}**" if bold[i] else text
        front = pd.DataFrame({"Model": model, "Method": [method_label(m) for m in methods]}, index=block.index)
        parts.append(pd.concat([front, body], axis=1))
    return pd.concat(parts).reset_index(drop=True) if parts else pd.DataFrame()


def format_ablation_table(table: pd.DataFrame, baseline: float | None = None) -> pd.DataFrame:
    """Ablation table: a row per M, a column per lambda; the lowest perplexity in bold and, given
    the uniform ``baseline`` perplexity, each cell's percent change against it."""
    flat = table.to_numpy(dtype=float)
    finite = flat[~np.isnan(flat)]
    best = float(finite.min()) if finite.size else None
    out = pd.DataFrame({"M": [_num(m) for m in table.index]})
    for column in table.columns:
        texts = []
        for value in table[column]:
            text = _fmt(value)
            if best is not None and not pd.isna(value) and math.isclose(float(value), best, rel_tol=1e-12, abs_tol=0.0):
                text = f"**{text}**"
            if baseline is not None and not pd.isna(value):
                text += f" ({pct_change(float(value), baseline):+.1f}%)"
            texts.append(text)
        out[f"λ={_num(column)}"] = texts
    return out


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of a DataFrame of strings (its index is not printed)."""
    def cell(x) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in table.columns) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    body = ["| " + " | ".join(cell(x) for x in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


# ---- what gets written ------------------------------------------------------------------------
def _sections(requested: Iterable[str] | None, allowed: Sequence[str]) -> list[str]:
    if requested is None:
        return list(allowed)
    requested = list(requested)
    unknown = sorted(set(requested) - set(allowed))
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; allowed: {', '.join(allowed)}")
    return [s for s in allowed if s in requested]


def _layerwise_method(spec: dict) -> str | None:
    return next((m for m in spec["main"]["methods"] if is_owl(m)), None) if spec.get("main") else None


def table_files(spec: dict, sections: Iterable[str] | None = None) -> list[str]:
    """File names :func:`build_tables` writes for ``spec`` (each table as ``.md`` and ``.csv``)."""
    stems = []
    for section in _sections(sections, TABLE_SECTIONS):
        if not spec.get(section):
            continue
        if section == "ablation":
            stems += [f"ablation_{safe_name(k)}" for k in spec["ablation"]["models"]]
        else:
            stems.append(section)
    return [f"{stem}.{ext}" for stem in stems for ext in ("md", "csv")]


def figure_files(spec: dict, sections: Iterable[str] | None = None) -> list[str]:
    """File names :func:`build_figures` writes for ``spec`` (each figure as PNG and PDF)."""
    stems = []
    for section in _sections(sections, FIGURE_SECTIONS):
        if section == "layerwise" and _layerwise_method(spec):
            stems += [f"layerwise_{safe_name(k)}" for k in spec["main"]["models"]]
        elif section in ("sweep", "ablation") and spec.get(section):
            stems += [f"{section}_{safe_name(k)}" for k in spec[section]["models"]]
    return [f"{stem}.{ext}" for stem in stems for ext in FIGURE_FORMATS]


def _write_table(out_dir: Path, stem: str, numeric: pd.DataFrame, formatted: pd.DataFrame, title: str, notes: Sequence[str] = ()) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    numeric.to_csv(csv_path, float_format="%.6g")
    text = f"### {title}\n\n{to_markdown(formatted)}"
    if notes:
        text += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    md_path.write_text(text)
    return {"csv": csv_path, "md": md_path, "markdown": text}


def build_tables(runs: pd.DataFrame, spec: dict, out_dir: str | Path, sections: Iterable[str] | None = None) -> dict[str, dict]:
    """Write every table of ``spec`` (``sections``: a subset of main, sweep, zero_shot, ablation).

    Returns ``{stem: {"csv": path, "md": path, "markdown": text}}``.
    """
    out_dir = Path(out_dir)
    written: dict[str, dict] = {}
    for section in _sections(sections, TABLE_SECTIONS):
        if not spec.get(section):
            continue
        if section == "main":
            table = main_table(runs, spec)
            title = f"WikiText-2 perplexity at {_pct(spec['main']['sparsity'])} unstructured sparsity"
            written["main"] = _write_table(out_dir, "main", table, format_main_table(table), title,
                                           ["OWL rows: (difference to the uniform baseline of the same method); bold: best pruned entry of a column."])
        elif section == "sweep":
            table = sweep_table(runs, spec)
            written["sweep"] = _write_table(out_dir, "sweep", table, format_sweep_table(table), "WikiText-2 perplexity versus sparsity")
        elif section == "zero_shot":
            table, notes = zero_shot_table(runs, spec)
            title = f"Zero-shot accuracy (%) at {_pct(spec['zero_shot']['sparsity'])} sparsity"
            written["zero_shot"] = _write_table(out_dir, "zero_shot", table, format_zero_shot_table(table), title, notes)
        elif section == "ablation":
            ab = spec["ablation"]
            for model in _model_entries(spec, ab["models"]):
                stem = f"ablation_{safe_name(model['key'])}"
                table = ablation_table(runs, spec, model["key"])
                baseline = ablation_baseline(runs, spec, model["key"])
                title = f"{_label(model)}: {method_label(ab['method'])} at {_pct(ab['sparsity'])}, perplexity over M x λ"
                notes = [] if baseline is None else [
                    f"In brackets: change against uniform {method_label(baseline[0])} at {_pct(ab['sparsity'])} ({_fmt(baseline[1])}); negative is better."]
                written[stem] = _write_table(out_dir, stem, table, format_ablation_table(table, None if baseline is None else baseline[1]),
                                             title, notes)
    return written


def build_figures(runs: pd.DataFrame, spec: dict, out_dir: str | Path, sections: Iterable[str] | None = None) -> dict[str, list[Path]]:
    """Write every figure of ``spec`` (``sections``: a subset of layerwise, sweep, ablation) as PNG and PDF.

    Returns ``{stem: [png, pdf]}``. A figure whose runs are missing is drawn with what there is.
    """
    out_dir = Path(out_dir)
    written: dict[str, list[Path]] = {}
    for section in _sections(sections, FIGURE_SECTIONS):
        if section == "layerwise" and _layerwise_method(spec):
            main = spec["main"]
            owl_methods = [m for m in main["methods"] if is_owl(m)]
            for model in _model_entries(spec, main["models"]):
                stem = f"layerwise_{safe_name(model['key'])}"
                run = next((r for m in owl_methods if (r := find_run(runs, model["key"], m, main["sparsity"], **_owl_args(model))) is not None), None)
                if run is None:
                    fig = _empty_figure(f"{_label(model)}: no OWL run at {_pct(main['sparsity'])}")
                else:
                    result = run["result"]
                    title = (f"{_label(model)}: {method_label(run['method'])} at {_pct(main['sparsity'])} "
                             f"(M={_num(run['Hyper_m'])}, λ={_num(run['Lamda'])})")
                    fig = plot_layerwise(result.get("outlier_ratios"), result["layer_sparsities"], main["sparsity"],
                                         achieved=result.get("layer_achieved_sparsities"), title=title)
                written[stem] = save_figure(fig, out_dir, stem)
        elif section == "sweep" and spec.get("sweep"):
            table = sweep_table(runs, spec)
            for model in _model_entries(spec, spec["sweep"]["models"]):
                stem = f"sweep_{safe_name(model['key'])}"
                dense = find_run(runs, model["key"], "dense")
                fig = plot_sweep(table.xs(_label(model), level="model"), dense=None if dense is None else dense["ppl"],
                                 title=f"{_label(model)}: WikiText-2 perplexity versus sparsity")
                written[stem] = save_figure(fig, out_dir, stem)
        elif section == "ablation" and spec.get("ablation"):
            ab = spec["ablation"]
            for model in _model_entries(spec, ab["models"]):
                stem = f"ablation_{safe_name(model['key'])}"
                baseline = ablation_baseline(runs, spec, model["key"])
                fig = plot_ablation(ablation_table(runs, spec, model["key"]),
                                    title=f"{_label(model)}: {method_label(ab['method'])} at {_pct(ab['sparsity'])}",
                                    baseline=None if baseline is None else (f"uniform {method_label(baseline[0])}", baseline[1]))
                written[stem] = save_figure(fig, out_dir, stem)
    return written


# ---- one run (for the prune notebook) ----------------------------------------------------------
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
    if result.get("ppl") or not result.get("zero_shot"):  # a zeroshot.json has no perplexity
        items["WikiText-2 perplexity"] = None if math.isnan(_ppl(result)) else round(_ppl(result), 4)
        items["evaluation windows"] = result.get("eval_windows")
    if result.get("zero_shot"):
        mean = result["zero_shot"].get("mean")
        items["zero-shot mean accuracy (%)"] = None if mean is None else round(100 * float(mean), 2)
    for name, seconds in timings.items():
        items[f"time: {name} (s)"] = round(float(seconds), 2)
    return pd.DataFrame({"value": [str(v) for v in items.values()]}, index=pd.Index(list(items), name="quantity"))


def zero_shot_summary(result: dict) -> pd.DataFrame:
    """The zero-shot numbers of one result dict: a row per task (accuracy in %, or why it is
    missing, and where the rows came from), ``mean`` last with the tasks it is over."""
    scores = result.get("zero_shot") or {}
    details = result.get("zero_shot_details") or {}
    missing = details.get("missing") or {}
    source = details.get("source") or {}
    tasks = list(dict.fromkeys([*(result.get("settings") or {}).get("tasks", []), *scores, *missing]))
    rows = {}
    for task in tasks:
        if task == "mean":
            continue
        value = scores.get(task)
        rows[task] = ("n/a" if value is None else f"{100 * float(value):.2f}", missing.get(task, source.get(task, "")))
    mean = scores.get("mean")
    in_mean = details.get("tasks_in_mean") or [t for t in scores if t != "mean"]
    rows["mean"] = ("n/a" if mean is None else f"{100 * float(mean):.2f}", f"over {', '.join(in_mean) or 'no task'}")
    return pd.DataFrame(list(rows.values()), index=pd.Index(list(rows), name="task"), columns=["accuracy (%)", "note"])


# ---- allocation (for the allocate notebook) ---------------------------------------------------
def outlier_ratios_for(lod: dict, hyper_m: float) -> list[float]:
    """The LOD for threshold ``M`` out of a ``lod.json`` dict (keys ``"5"``, ``"5.0"`` both work)."""
    ratios = lod["outlier_ratios"]
    for key, values in ratios.items():
        if _close(float(key), hyper_m):
            return [float(v) for v in values]
    raise KeyError(f"the statistics hold outlier ratios for M in {sorted(ratios, key=float)}, not M={_num(hyper_m)}; "
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


# ---- figures ----------------------------------------------------------------------------------
def _figure(width: float = 7.0, height: float = 3.4):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _empty_figure(text: str):
    fig = _figure()
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center")
    return fig


def _integer_ticks(ax, n: int) -> None:
    from matplotlib.ticker import MaxNLocator

    if n <= 32:
        ax.set_xticks(range(1, n + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=16, integer=True))
    ax.set_xlim(0.4, n + 0.6)


def plot_lod(lod: dict, title: str | None = None):
    """Layerwise outlier distribution: grouped bars per block, one bar per M."""
    ratios = {float(k): v for k, v in lod["outlier_ratios"].items()}
    ms = sorted(ratios)
    n = len(next(iter(ratios.values()))) if ratios else 0
    fig = _figure(max(7.0, 0.25 * n * max(1, len(ms)) ** 0.5), 3.4)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(ms))
    blocks = np.arange(1, n + 1)
    for i, m in enumerate(ms):
        ax.bar(blocks - 0.4 + width * (i + 0.5), ratios[m], width=width, label=f"M={_num(m)}")
    ax.set_xlabel("decoder block")
    ax.set_ylabel("outlier ratio (%)")
    _integer_ticks(ax, n)
    ax.legend(ncols=min(4, len(ms)) or 1, fontsize="small")
    ax.set_title(title or f"Layerwise outlier distribution of {lod.get('model', 'the model')}")
    return fig


def plot_layerwise(outlier_ratios: Sequence[float] | None, sparsities: Sequence[float], target: float, *,
                   achieved: Sequence[float] | None = None, title: str | None = None, owl_label: str = "OWL"):
    """OWL's per-block sparsity against uniform, over bars of the layerwise outlier distribution (the paper's Figure 1)."""
    n = len(sparsities)
    blocks = np.arange(1, n + 1)
    fig = _figure()
    ax = fig.add_subplot()
    handles = []
    if outlier_ratios is not None and len(outlier_ratios) == n:
        ax2 = ax.twinx()
        handles.append(ax2.bar(blocks, outlier_ratios, color="0.85", label="LOD (%)"))
        ax2.set_ylabel("outlier ratio (%)")
        ax.set_zorder(ax2.get_zorder() + 1)
        ax.patch.set_visible(False)
    (owl_line,) = ax.plot(blocks, sparsities, "o-", color="C3", ms=3, label=f"{owl_label} (target per block)")
    handles.append(owl_line)
    handles.append(ax.axhline(target, ls="--", color="k", lw=1, label=f"Uniform ({_pct(target)})"))
    if achieved is not None and len(achieved) == n:
        (ach,) = ax.plot(blocks, achieved, "x", color="C0", ms=4, label="achieved")
        handles.append(ach)
    ax.set_xlabel("decoder block")
    ax.set_ylabel("sparsity")
    _integer_ticks(ax, n)
    # Below the axes: inside, it hid the allocation of the first blocks whatever corner it took.
    ax.legend(handles=handles, fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=len(handles), frameon=False)
    if title:
        ax.set_title(title, fontsize="medium")
    return fig


def owl_change(block: pd.DataFrame) -> pd.DataFrame:
    """Percent change of each OWL method's perplexity against its uniform baseline, per sparsity.

    ``block``: index methods, columns sparsities. A row per OWL method whose baseline is in the
    block (index = the OWL method); NaN where either run is missing.
    """
    rows = {m: pct_change(block.loc[m], block.loc[OWL_BASELINE[m]])
            for m in block.index if OWL_BASELINE.get(m) in block.index}
    return pd.DataFrame(rows).T.reindex(columns=block.columns) if rows else pd.DataFrame(columns=block.columns)


_SWEEP_STYLES = {"wanda": ("C0", "--", "o"), "wanda_owl": ("C0", "-", "s"), "sparsegpt": ("C2", "--", "o"),
                 "sparsegpt_owl": ("C2", "-", "s"), "magnitude": ("C7", "--", "o"), "magnitude_owl": ("C7", "-", "s"),
                 "dense": ("k", ":", "")}


def plot_sweep(block: pd.DataFrame, title: str | None = None, dense: float | None = None):
    """Perplexity versus sparsity (log y, a line per method, ``dense`` as a dotted reference) and,
    beside it, each OWL method's percent change against its uniform baseline (below 0: OWL helps).

    ``block``: index methods, columns sparsities.
    """
    change = owl_change(block)
    fig = _figure(9.0 if not change.empty else 5.5, 3.6)
    ax = fig.add_subplot(1, 2 if not change.empty else 1, 1)
    x = [100 * float(s) for s in block.columns]
    for method, values in block.iterrows():
        color, ls, marker = _SWEEP_STYLES.get(method, (None, "-", "o"))
        ax.plot(x, values.to_numpy(dtype=float), ls=ls, marker=marker, color=color, label=method_label(method))
    if dense is not None and math.isfinite(dense):
        ax.axhline(dense, color="k", ls=":", lw=1, label=f"Dense ({_fmt(dense)})")
    finite = block.to_numpy(dtype=float)
    if dense is not None:
        finite = np.append(finite, dense)
    if np.isfinite(finite).any() and (finite[np.isfinite(finite)] > 0).all():
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        positive = finite[np.isfinite(finite)]
        if math.log10(positive.max() / positive.min()) < 1.5:  # label minor ticks only on a narrow range
            ax.yaxis.set_minor_formatter(plain)
    ax.set_xticks(x, [f"{v:g}" for v in x])
    ax.set_xlabel("sparsity (%)")
    ax.set_ylabel("WikiText-2 perplexity")
    ax.legend(fontsize="small")
    if not change.empty:
        right = fig.add_subplot(1, 2, 2)
        right.axhline(0.0, color="k", lw=0.8)
        for method, values in change.iterrows():
            color, _, marker = _SWEEP_STYLES.get(method, (None, "-", "s"))
            right.plot(x, values.to_numpy(dtype=float), ls="-", marker=marker, color=color,
                       label=f"{method_label(method)} vs {method_label(method.removesuffix('_owl'))}")
        right.set_xticks(x, [f"{v:g}" for v in x])
        right.set_xlabel("sparsity (%)")
        right.set_ylabel("perplexity change with OWL (%)")
        right.legend(fontsize="small")
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig


def plot_ablation(table: pd.DataFrame, title: str | None = None, baseline: tuple[str, float] | None = None):
    """Heatmap of perplexity over M (rows) x lambda (columns); colour on a log scale, values annotated.
    ``baseline``: ``(label, perplexity)`` of the uniform method, named under the title and drawn as a
    line on the colour bar when it falls within the bar's range."""
    values = table.to_numpy(dtype=float)
    fig = _figure(1.2 + 1.0 * max(3, values.shape[1]), 1.2 + 0.6 * max(3, values.shape[0]))
    ax = fig.add_subplot()
    finite = values[np.isfinite(values)]
    shown = np.log10(np.where(np.isfinite(values) & (values > 0), values, np.nan))
    image = ax.imshow(shown, cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(values.shape[1]), [_num(x) for x in table.columns])
    ax.set_yticks(range(values.shape[0]), [_num(m) for m in table.index])
    ax.set_xlabel("λ (Lamda)")
    ax.set_ylabel("M (Hyper_m)")
    best = float(finite.min()) if finite.size else None
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            if np.isfinite(v):
                light = image.norm(shown[i, j]) < 0.5 if np.isfinite(shown[i, j]) else False  # viridis_r: low = light
                ax.text(j, i, _fmt(v), ha="center", va="center", fontsize="small",
                        fontweight="bold" if best is not None and v == best else "normal", color="k" if light else "w")
    bar = fig.colorbar(image, ax=ax, label="log10 perplexity")
    if baseline is not None:
        label, value = baseline
        low, high = image.norm.vmin, image.norm.vmax
        marked = value > 0 and low is not None and low <= math.log10(value) <= high
        if marked:  # outside the bar's range a line would stretch the bar
            bar.ax.axhline(math.log10(value), color="r", linewidth=2)
        title = f"{title or ''}\n({label}: {_fmt(value)}{', marked on the colour bar' if marked else ''})".lstrip("\n")
    if title:
        ax.set_title(title, fontsize="medium")
    return fig


def save_figure(fig, out_dir: str | Path, stem: str, formats: Sequence[str] = FIGURE_FORMATS) -> list[Path]:
    """Save ``fig`` as ``out_dir/stem.<format>`` for each format; return the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in formats:
        path = out_dir / f"{stem}.{ext}"
        # No creation date in a PDF: a rebuild from the same results gives the same bytes, so a
        # committed figure changes in git only when its numbers do.
        fig.savefig(path, dpi=150 if ext == "png" else None, metadata={"CreationDate": None} if ext == "pdf" else None)
        paths.append(path)
    return paths
