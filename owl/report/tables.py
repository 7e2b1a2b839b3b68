"""The paper's tables with their uncertainty: numeric tables, their printed form, the files.

A *cells* table (:mod:`owl.report.cells`) has a row per grid point with its statistics over the
seeds; ``*_table`` pivots the geometric means into the paper's shape; ``format_*`` prints the
Markdown form (every cell with its spread and n, OWL's paired ratio rows with their interval);
:func:`wide_csv` is the CSV form (the mean under the column's name, then ``<column>_lower`` ...).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from owl.report.cells import cells_frame, point_stats
from owl.report.common import (
    OWL_BASELINE,
    TABLE_SECTIONS,
    fmt,
    is_owl,
    method_label,
    num,
    pct,
    safe_name,
    uses_calibration,
    write_text,
)
from owl.report.runs import find_runs, model_entries, model_label, owl_args
from owl.uncertainty import CONFIDENCE, RatioSummary, excludes, mean_stderr

CELL_CSV = ("gsd", "lower", "upper", "n")  # beside the mean: geometric sd, min, max, seeds
RATIO_CSV = ("ratio", "ratio_lower", "ratio_upper", "n_pairs", "wins")
UNPAIRED_MARK = "†"


# ---- cells ------------------------------------------------------------------------------------
def main_cells(runs: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """A row per (model, method) of the main table, with its statistics over seeds."""
    main = spec["main"]
    rows = []
    for model in model_entries(spec, main.get("models")):
        for method in main["methods"]:
            rows.append(_point(runs, model, method, main["sparsity"], **owl_args(model)))
    return cells_frame(rows)


def sweep_cells(runs: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """A row per (model, method, sparsity) of the sweep."""
    sweep = spec["sweep"]
    rows = []
    for model in model_entries(spec, sweep.get("models")):
        for method in sweep["methods"]:
            for s in sweep["sparsities"]:
                rows.append(_point(runs, model, method, float(s), **owl_args(model)))
    return cells_frame(rows)


def ablation_cells(runs: pd.DataFrame, spec: dict, model_key: str) -> pd.DataFrame:
    """A row per (M, lambda) of the ablation method at its sparsity, paired with its uniform baseline."""
    ab = spec["ablation"]
    (model,) = model_entries(spec, [model_key])
    rows = [_point(runs, model, ab["method"], ab["sparsity"], hyper_m=float(m), lamda=float(lamda))
            for m in ab["Hyper_m"] for lamda in ab["Lamda"]]
    return cells_frame(rows)


def _point(runs, model: dict, method: str, sparsity: float, hyper_m=None, lamda=None) -> dict:
    identity = {"model": model["key"], "label": model_label(model), "method": method,
                "sparsity": 0.0 if method == "dense" else float(sparsity),
                "Hyper_m": float(hyper_m) if is_owl(method) and hyper_m is not None else math.nan,
                "Lamda": float(lamda) if is_owl(method) and lamda is not None else math.nan}
    return {**identity, **point_stats(runs, model["key"], method, sparsity, hyper_m, lamda)}


# ---- numeric tables (geometric means in the paper's shape) ------------------------------------
def main_table(runs: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """Geometric-mean perplexity at the main sparsity: a row per method, a column per model label."""
    cells = main_cells(runs, spec)
    table = cells.pivot(index="method", columns="label", values="mean")
    labels = [model_label(m) for m in model_entries(spec, spec["main"].get("models"))]
    table = table.reindex(index=list(spec["main"]["methods"]), columns=labels)
    table.columns.name = None
    return table


def sweep_table(runs: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """Geometric-mean perplexity versus sparsity: rows (model label, method), a column per sparsity."""
    cells = sweep_cells(runs, spec)
    sweep = spec["sweep"]
    index = [(model_label(m), method) for m in model_entries(spec, sweep.get("models")) for method in sweep["methods"]]
    table = cells.pivot_table(index=["label", "method"], columns="sparsity", values="mean", dropna=False, aggfunc="first")
    table = table.reindex(index=pd.MultiIndex.from_tuples(index, names=["model", "method"]),
                          columns=[float(s) for s in sweep["sparsities"]])
    table.columns.name = "sparsity"
    return table


def ablation_table(runs: pd.DataFrame, spec: dict, model_key: str) -> pd.DataFrame:
    """Geometric-mean perplexity of the ablation method: a row per M, a column per lambda."""
    ab = spec["ablation"]
    cells = ablation_cells(runs, spec, model_key)
    values = cells["mean"].to_numpy(dtype=float).reshape(len(ab["Hyper_m"]), len(ab["Lamda"]))
    return pd.DataFrame(values, index=pd.Index([float(m) for m in ab["Hyper_m"]], name="Hyper_m"),
                        columns=pd.Index([float(x) for x in ab["Lamda"]], name="Lamda"))


def ablation_baseline(runs: pd.DataFrame, spec: dict, model_key: str) -> tuple[str, float] | None:
    """``(method, geometric-mean perplexity)`` of the ablation method's uniform baseline at the
    ablation's sparsity (Wanda for OWL w. Wanda), or None if it has no run."""
    ab = spec["ablation"]
    baseline = OWL_BASELINE.get(ab["method"])
    if baseline is None:
        return None
    (model,) = model_entries(spec, [model_key])
    stats = _point(runs, model, baseline, ab["sparsity"])
    return None if stats["n"] == 0 else (baseline, float(stats["mean"]))


# ---- printed form -----------------------------------------------------------------------------
def format_cell(stats) -> str:
    """``mean (min-max, n=k)``; ``mean (n=1)`` for one seed; a method that reads no calibration
    data is one run and prints its value alone; ``-`` without a run."""
    n = int(stats["n"])
    if n == 0:
        return "-"
    if n == 1:
        return fmt(stats["mean"]) if not stats["calibrated"] else f"{fmt(stats['mean'])} (n=1)"
    return f"{fmt(stats['mean'])} ({fmt(stats['lower'])}–{fmt(stats['upper'])}, n={n})"


def _ratio_summary(stats) -> RatioSummary:
    return RatioSummary(float(stats["ratio"]), float(stats["ratio_lower"]), float(stats["ratio_upper"]),
                        int(stats["n_pairs"]), int(stats["wins"]))


def _unpaired(stats) -> bool:
    """Seeds on one side only of a cell that has runs (a cell with no run at all is a dash, not a note)."""
    if not stats["n"]:
        return False
    return any(isinstance(stats[c], list) and stats[c] for c in ("only_owl", "only_baseline"))


def format_ratio(stats) -> str:
    """OWL / uniform on the same seeds: ``0.771 [0.702, 0.846], wins 5/5``; bold and ``better``
    (``worse``) only where the interval lies below (above) 1; one pair: ``0.771 (n=1)``, no interval."""
    if pd.isna(stats["n_pairs"]) or int(stats["n_pairs"]) == 0:
        return "-"
    summary = _ratio_summary(stats)
    mark = UNPAIRED_MARK if _unpaired(stats) else ""
    if not summary.has_interval:
        return f"{summary.ratio:.3f}{mark} (n=1)"
    side = excludes(summary)
    value = f"{summary.ratio:.3f}"
    if side:
        value = f"**{value}**"
    verdict = {-1: " better", 1: " worse", 0: ""}[side]
    return f"{value}{mark} [{summary.lower:.3f}, {summary.upper:.3f}]{verdict}, wins {summary.wins}/{summary.n_pairs}"


def _ratio_label(method: str) -> str:
    return f"{method_label(method)} / {method_label(OWL_BASELINE[method])}"


def format_ppl_block(cells: pd.DataFrame, column: str) -> pd.DataFrame:
    """Printed perplexities of one block of cells (one model): a row per method (index = method
    key) and, after each OWL row with a paired baseline, its ratio row (index ``<method>/ratio``);
    a column per value of ``cells[column]``."""
    columns = list(dict.fromkeys(cells[column]))
    out: dict[str, list[str]] = {}
    for method in dict.fromkeys(cells["method"]):
        rows = cells[cells["method"] == method].set_index(column)
        out[method] = [format_cell(rows.loc[c]) for c in columns]
        paired = rows["n_pairs"].fillna(0)
        if method in OWL_BASELINE and (paired > 0).any():
            out[f"{method}/ratio"] = [format_ratio(rows.loc[c]) for c in columns]
    return pd.DataFrame(list(out.values()), index=list(out), columns=columns)


def _row_method(key: str) -> tuple[str, bool]:
    return (key.removesuffix("/ratio"), key.endswith("/ratio"))


def format_main_table(cells: pd.DataFrame) -> pd.DataFrame:
    """The paper's main table: Method, Layerwise Sparsity, Weight Update, then a column per model;
    under each OWL method the row of its paired ratio to the uniform method."""
    body = format_ppl_block(cells, "label")
    front = []
    for key in body.index:
        method, ratio = _row_method(key)
        if ratio:
            front.append([_ratio_label(method), "paired ratio", ""])
        else:
            front.append([method_label(method),
                          "-" if method == "dense" else ("Non-Uniform" if is_owl(method) else "Uniform"),
                          "-" if method == "dense" else ("yes" if method.startswith("sparsegpt") else "no")])
    front = pd.DataFrame(front, index=body.index, columns=["Method", "Layerwise Sparsity", "Weight Update"])
    return pd.concat([front, body], axis=1).reset_index(drop=True)


def format_sweep_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Sweep table: Model, Method, then a column per sparsity (``50%``), ratio rows under OWL rows."""
    parts = []
    for label in dict.fromkeys(cells["label"]):
        body = format_ppl_block(cells[cells["label"] == label], "sparsity")
        body.columns = [pct(c) for c in body.columns]
        names = [(_ratio_label(m) if ratio else method_label(m)) for m, ratio in map(_row_method, body.index)]
        front = pd.DataFrame({"Model": label, "Method": names}, index=body.index)
        parts.append(pd.concat([front, body], axis=1))
    return pd.concat(parts).reset_index(drop=True) if parts else pd.DataFrame()


def format_ablation_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Ablation table: a row per M, a column per lambda; each cell its perplexity and, where the
    uniform baseline ran, its paired ratio to it (bold only where the interval excludes 1)."""
    out = pd.DataFrame({"M": [num(m) for m in dict.fromkeys(cells["Hyper_m"])]})
    for lamda in dict.fromkeys(cells["Lamda"]):
        texts = []
        for _, stats in cells[cells["Lamda"] == lamda].iterrows():
            text = format_cell(stats)
            ratio = format_ratio(stats)
            texts.append(text if ratio == "-" else f"{text}; ratio {ratio}")
        out[f"λ={num(lamda)}"] = texts
    return out


def _seeds(seeds: Sequence[int]) -> str:
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def _where(row: str, settings: list) -> str:
    """Cells of one table row: ``a OWL w. Wanda at 70% (M=5, λ=0.08)``, or for several OWL settings
    ``... at 70%, (M, λ) = (3, 0.04), (3, 0.08)``."""
    settings = [x for x in settings if x is not None]
    if not settings:
        return row
    if len(settings) == 1:
        return f"{row} (M={settings[0][0]}, λ={settings[0][1]})"
    return f"{row}, (M, λ) = " + ", ".join(f"({m}, {lam})" for m, lam in settings)


def ppl_notes(cells: pd.DataFrame) -> list[str]:
    """What the cells of a perplexity table are, and what a reader must know about them: the
    methods without calibration data, the ratio and its interval, unpaired seeds, mixed protocols."""
    notes = ["Perplexity: geometric mean over calibration seeds (min–max, n = seeds)."]
    free = [m for m in dict.fromkeys(cells["method"]) if not uses_calibration(m) and (cells[cells["method"] == m]["n"] > 0).any()]
    if free:
        names = " and ".join(method_label(m) for m in free)
        text = f"{names} read no calibration data: one run each, shown once (no seed spread)."
        if "magnitude" in free and "magnitude_owl" in set(cells["method"]):
            text += " OWL w. Magnitude's ratio pairs each of its seeds with that one Magnitude run."
        notes.append(text)
    if (cells["n_pairs"].fillna(0) > 0).any():
        notes.append(f"Ratio: OWL / its uniform method on the same calibration seed; geometric mean of the per-seed "
                     f"ratios with a {CONFIDENCE:.0%} t-interval on the log ratios (t with n-1 degrees of freedom); wins: "
                     "seeds where OWL's perplexity is lower. Below 1 OWL is better; bold, better and worse only where the "
                     "interval excludes 1; one seed (n=1) gives no interval and no claim.")
    unpaired: dict[str, dict[str, list]] = {}  # what is unpaired -> row (model, method, sparsity) -> its (M, λ)
    for _, stats in cells.iterrows():
        if not _unpaired(stats):
            continue
        row = f"{stats['label']} {method_label(stats['method'])} at {pct(stats['sparsity'])}"
        setting = None if pd.isna(stats["Hyper_m"]) else (num(stats["Hyper_m"]), num(stats["Lamda"]))
        parts = []
        if stats["only_owl"]:
            parts.append(f"{_seeds(stats['only_owl'])} without a {method_label(stats['baseline'])} run")
        if stats["only_baseline"]:
            parts.append(f"{method_label(stats['baseline'])} {_seeds(stats['only_baseline'])} without an OWL run")
        unpaired.setdefault("; ".join(parts), {}).setdefault(row, []).append(setting)
    if unpaired:
        notes.append(f"{UNPAIRED_MARK} Unpaired seeds, left out of the ratio: "
                     + "; ".join(f"{', '.join(_where(row, settings) for row, settings in rows.items())}: {what}"
                                 for what, rows in unpaired.items()) + ".")
    notes.extend(mixed_protocol_notes(cells))
    return notes


def mixed_protocol_notes(cells: pd.DataFrame) -> list[str]:
    """A note naming every protocol field (precision, evaluation windows, ...) on which the runs of
    a table differ; none when they agree."""
    recorded: dict[str, set[str]] = {}
    for pairs in cells["protocols"]:
        for field, value in pairs:
            recorded.setdefault(field, set()).add(value)
    mixed = [f"{field} ({', '.join(sorted(values))})" for field, values in recorded.items() if len(values) > 1]
    return ["The runs of this table differ in " + ", ".join(mixed) + "."] if mixed else []


# ---- zero-shot --------------------------------------------------------------------------------
def zero_shot_table(runs: pd.DataFrame, spec: dict) -> tuple[pd.DataFrame, list[str]]:
    """Zero-shot accuracy in percent: rows (model label, method), a column per task, ``Mean`` last.

    Every task of the spec is a column (then any other task a result has), also one that no run
    could evaluate: its cells are NaN and ``table.attrs["missing"]`` maps each row to
    ``{task: reason}``, which :func:`format_zero_shot_table` prints as ``n/a``. ``Mean`` is the
    result's own mean (over the tasks it evaluated). ``table.attrs["stderr"]`` is a table of the
    same shape with lm-eval's standard errors (percent; the mean's is ``sqrt(sum se^2)/k`` over its
    k tasks), ``attrs["n"]`` the seeds per row and ``attrs["range"]`` each cell's (min, max) over
    seeds. With several seeds a cell is the mean over seeds and its standard error the root mean
    square of theirs (every seed is scored on the same examples). Returns the table and notes.
    """
    zs = spec["zero_shot"]
    tasks = list(zs.get("tasks") or [])
    found: list[tuple[tuple[str, str], list[dict]]] = []
    missing: dict[tuple[str, str], dict[str, str]] = {}
    in_means: dict[tuple[str, str], list[str]] = {}
    absent: list[tuple[str, str]] = []
    for model in model_entries(spec, zs.get("models")):
        for method in zs["methods"]:
            key = (model_label(model), method)
            rows = find_runs(runs, model["key"], method, zs["sparsity"], **owl_args(model))
            results = [r for r in rows["result"] if r.get("zero_shot") or r.get("zero_shot_details")]
            if not results:
                absent.append(key)
            missing[key] = {str(t): str(r) for res in results for t, r in ((res.get("zero_shot_details") or {}).get("missing") or {}).items()}
            for res in results:
                scores, details = res.get("zero_shot") or {}, res.get("zero_shot_details") or {}
                if scores and key not in in_means:
                    in_means[key] = list(details.get("tasks_in_mean") or [t for t in scores if t != "mean" and scores[t] is not None])
                for task in [*scores, *missing[key]]:
                    if task != "mean" and task not in tasks:
                        tasks.append(task)
            found.append((key, results))
    columns = tasks + ["Mean"]
    means, errors, ranges, counts = [], [], {}, {}
    for key, results in found:
        per_seed = [_zero_shot_row(res, tasks) for res in results]
        acc_row, se_row = [], []
        for i, column in enumerate(columns):
            values = [(a[i], s[i]) for a, s in per_seed if not math.isnan(a[i])]
            acc_row.append(float(np.mean([a for a, _ in values])) if values else math.nan)
            se_row.append(math.sqrt(float(np.mean([s * s for _, s in values]))) if values else math.nan)
            if len(values) > 1:
                ranges[(key, column)] = (min(a for a, _ in values), max(a for a, _ in values))
        counts[key] = len(results)
        means.append(acc_row)
        errors.append(se_row)
    index = pd.MultiIndex.from_tuples([k for k, _ in found], names=["model", "method"])
    table = pd.DataFrame(means, index=index, columns=pd.Index(columns, name="task"))
    table.attrs["missing"] = {k: v for k, v in missing.items() if v}
    table.attrs["stderr"] = pd.DataFrame(errors, index=index, columns=pd.Index(columns, name="task"))
    table.attrs["n"] = counts
    table.attrs["range"] = ranges
    return table, _zero_shot_notes(found, missing, in_means, absent, counts)


def _zero_shot_row(result: dict, tasks: Sequence[str]) -> tuple[list[float], list[float]]:
    """Accuracies and standard errors (percent) of one result for ``tasks`` then its mean."""
    scores = result.get("zero_shot") or {}
    details = result.get("zero_shot_details") or {}
    stderr = details.get("stderr") or {}
    acc = [100 * float(scores[t]) if scores.get(t) is not None else math.nan for t in tasks]
    se = [100 * float(stderr[t]) if stderr.get(t) is not None else math.nan for t in tasks]
    in_mean = list(details.get("tasks_in_mean") or [t for t in tasks if scores.get(t) is not None])
    if scores.get("mean") is not None:
        mean = 100 * float(scores["mean"])
    else:
        present = [a for a in acc if not math.isnan(a)]
        mean = float(np.mean(present)) if present else math.nan
    se_in_mean = [stderr.get(t) for t in in_mean]
    mean_se = 100 * mean_stderr(se_in_mean) if in_mean and None not in se_in_mean else math.nan
    return acc + [mean], se + [mean_se]


def _zero_shot_notes(found, missing, in_means, absent, counts) -> list[str]:
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
    if any(k not in absent for k, _ in found):
        text = ("±: lm-eval's standard error of each accuracy (sampling of the test examples); the Mean's is "
                "sqrt(sum se²)/k over its k tasks (the tasks taken as independent).")
        if any(n > 1 for n in counts.values()):
            text += (" With several calibration seeds: the mean over seeds, the root mean square of their standard "
                     "errors (every seed is scored on the same examples), then the seeds' range and n.")
        notes.append(text)
    return notes


def format_zero_shot_table(table: pd.DataFrame, missing: dict | None = None) -> pd.DataFrame:
    """Zero-shot table: Model, Method, a column per task, Mean; each accuracy ``acc ± se`` (with the
    seeds' range and n when there are several); ``n/a`` for a task a run could not evaluate
    (``missing``, default ``table.attrs["missing"]``: ``{(model label, method): {task: reason}}``),
    ``-`` where there is no number at all."""
    missing = table.attrs.get("missing", {}) if missing is None else missing
    stderr = table.attrs.get("stderr")
    ranges = table.attrs.get("range", {})
    counts = table.attrs.get("n", {})
    parts = []
    for model in dict.fromkeys(table.index.get_level_values(0)):
        block = table.xs(model, level="model")
        methods = list(block.index)
        body = pd.DataFrame(index=block.index, columns=block.columns, dtype=object)
        for column in block.columns:
            for method in methods:
                value = block.at[method, column]
                if pd.isna(value):
                    text = "n/a" if column in missing.get((model, method), {}) else "-"
                else:
                    text = fmt(value)
                    se = math.nan if stderr is None else stderr.at[(model, method), column]
                    if not pd.isna(se):
                        text += f" ± {fmt(se)}"
                    if ((model, method), column) in ranges:
                        low, high = ranges[((model, method), column)]
                        text += f" ({fmt(low)}–{fmt(high)}, n={counts[(model, method)]})"
                body.at[method, column] = text
        front = pd.DataFrame({"Model": model, "Method": [method_label(m) for m in methods]}, index=block.index)
        parts.append(pd.concat([front, body], axis=1))
    return pd.concat(parts).reset_index(drop=True) if parts else pd.DataFrame()


def zero_shot_csv(table: pd.DataFrame) -> pd.DataFrame:
    """The zero-shot CSV: each task's accuracy then ``<task>_stderr``, ``Mean``, ``Mean_stderr``, ``n`` (seeds)."""
    stderr = table.attrs.get("stderr")
    out = pd.DataFrame(index=table.index)
    for column in table.columns:
        out[column] = table[column]
        out[f"{column}_stderr"] = math.nan if stderr is None else stderr[column]
    out["n"] = [table.attrs.get("n", {}).get(key, math.nan) for key in table.index]
    return out


# ---- CSV --------------------------------------------------------------------------------------
def wide_csv(cells: pd.DataFrame, index: str | Sequence[str], column: str) -> pd.DataFrame:
    """The CSV form of a cells table: a row per ``index``, for each value ``c`` of ``cells[column]``
    the geometric mean under ``c`` and its ``c_gsd``, ``c_lower``, ``c_upper`` (min, max over
    seeds), ``c_n``; with OWL rows also ``c_ratio``, ``c_ratio_lower``, ``c_ratio_upper`` (the
    paired ratio and its interval), ``c_n_pairs``, ``c_wins`` (NaN on rows without a ratio)."""
    keys = [index] if isinstance(index, str) else list(index)
    with_ratio = bool((cells["n_pairs"].fillna(0) > 0).any())
    fields = [("mean", None), *[(f, f) for f in CELL_CSV], *([(f, f) for f in RATIO_CSV] if with_ratio else [])]
    frames = []
    for value in dict.fromkeys(cells[column]):
        part = cells[cells[column] == value].set_index(keys)
        frames.append(pd.DataFrame({(value if suffix is None else f"{value}_{suffix}"): part[field].astype(float)
                                    for field, suffix in fields}))
    out = pd.concat(frames, axis=1)
    out.index.names = keys
    return out


# ---- files ------------------------------------------------------------------------------------
def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of a DataFrame of strings (its index is not printed)."""
    def cell(x) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in table.columns) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    body = ["| " + " | ".join(cell(x) for x in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def sections_of(requested: Iterable[str] | None, allowed: Sequence[str]) -> list[str]:
    if requested is None:
        return list(allowed)
    requested = list(requested)
    unknown = sorted(set(requested) - set(allowed))
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; allowed: {', '.join(allowed)}")
    return [s for s in allowed if s in requested]


def table_files(spec: dict, sections: Iterable[str] | None = None) -> list[str]:
    """File names :func:`build_tables` writes for ``spec`` (each table as ``.md`` and ``.csv``)."""
    stems = []
    for section in sections_of(sections, TABLE_SECTIONS):
        if not spec.get(section):
            continue
        if section == "ablation":
            stems += [f"ablation_{safe_name(k)}" for k in spec["ablation"]["models"]]
        elif section == "zoo":
            from owl.report.zoo import zoo_table_stems

            stems += zoo_table_stems(spec)
        else:
            stems.append(section)
    return [f"{stem}.{ext}" for stem in stems for ext in ("md", "csv")]


def _write_table(out_dir: Path, stem: str, numeric: pd.DataFrame, formatted: pd.DataFrame, title: str, notes: Sequence[str] = ()) -> dict:
    text = f"### {title}\n\n{to_markdown(formatted)}"
    if notes:
        text += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    csv_path, md_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    write_text(csv_path, numeric.to_csv(float_format="%.6g"))
    write_text(md_path, text)
    return {"csv": csv_path, "md": md_path, "markdown": text}


def build_tables(runs: pd.DataFrame, spec: dict, out_dir: str | Path, sections: Iterable[str] | None = None) -> dict[str, dict]:
    """Write every table of ``spec`` (``sections``: a subset of main, sweep, zero_shot, ablation, zoo).

    Returns ``{stem: {"csv": path, "md": path, "markdown": text}}``.
    """
    out_dir = Path(out_dir)
    written: dict[str, dict] = {}
    for section in sections_of(sections, TABLE_SECTIONS):
        if not spec.get(section):
            continue
        if section == "main":
            cells = main_cells(runs, spec)
            title = f"WikiText-2 perplexity at {pct(spec['main']['sparsity'])} unstructured sparsity"
            written["main"] = _write_table(out_dir, "main", wide_csv(cells, "method", "label"), format_main_table(cells),
                                           title, ppl_notes(cells))
        elif section == "sweep":
            cells = sweep_cells(runs, spec)
            written["sweep"] = _write_table(out_dir, "sweep", wide_csv(cells.rename(columns={"model": "key", "label": "model"}),
                                                                       ["model", "method"], "sparsity"),
                                            format_sweep_table(cells), "WikiText-2 perplexity versus sparsity", ppl_notes(cells))
        elif section == "zero_shot":
            table, notes = zero_shot_table(runs, spec)
            title = f"Zero-shot accuracy (%) at {pct(spec['zero_shot']['sparsity'])} sparsity"
            written["zero_shot"] = _write_table(out_dir, "zero_shot", zero_shot_csv(table), format_zero_shot_table(table), title, notes)
        elif section == "ablation":
            ab = spec["ablation"]
            for model in model_entries(spec, ab["models"]):
                stem = f"ablation_{safe_name(model['key'])}"
                cells = ablation_cells(runs, spec, model["key"])
                title = f"{model_label(model)}: {method_label(ab['method'])} at {pct(ab['sparsity'])}, perplexity over M x λ"
                notes = ppl_notes(cells)
                baseline = OWL_BASELINE.get(ab["method"])
                base = None if baseline is None else _point(runs, model, baseline, ab["sparsity"])
                if base is not None and base["n"]:
                    seeds = "" if base["n"] == 1 else f", geometric mean of {base['n']} seeds"
                    notes.append(f"Each ratio is the change against uniform {method_label(baseline)} at {pct(ab['sparsity'])} "
                                 f"({fmt(base['mean'])}{seeds}) on the same seed.")
                elif baseline is not None:
                    notes.append(f"No uniform {method_label(baseline)} run at {pct(ab['sparsity'])}: no ratio.")
                written[stem] = _write_table(out_dir, stem, wide_csv(cells, "Hyper_m", "Lamda"), format_ablation_table(cells),
                                             title, notes)
        elif section == "zoo":
            from owl.report.zoo import build_zoo_tables

            written.update(build_zoo_tables(runs, spec, out_dir))
    return written


__all__ = [
    "main_cells", "sweep_cells", "ablation_cells", "main_table", "sweep_table", "ablation_table", "ablation_baseline",
    "zero_shot_table", "format_cell", "format_ratio", "format_ppl_block", "format_main_table", "format_sweep_table",
    "format_ablation_table", "format_zero_shot_table", "ppl_notes", "zero_shot_csv", "wide_csv", "to_markdown",
    "table_files", "build_tables",
]
