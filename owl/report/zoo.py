"""The allocation zoo's tables and figures (:mod:`owl.zoo`), from result dicts: no model is run.

- ``zoo_tuning`` table: per model, method and allocator, each trial value's WikiText-2 *validation*
  perplexity (geometric mean over the tuning seeds every value has) and the value
  :func:`owl.zoo.choose_tuned` picks, in bold. Validation numbers appear here only.
- ``zoo`` table: per model, method, allocator and setting (paper default, tuned), the WikiText-2
  *test* perplexity over the reported seeds (geometric mean, range, n), then the paired ratio to
  uniform and to OWL at its paper default, both of the same method on the same seeds, with the main
  table's 95% t-interval and printing (:func:`owl.report.format_ratio`, :mod:`owl.uncertainty`).
- ``zoo_pairs`` table: per model and method, every two reported settings other than uniform and OWL
  (DLP, AlphaPruning, ATP, ...), the first's perplexity over the second's, paired by seed as above.
- figures per model: ``zoo_sparsity_<model>``, every allocator's per-block sparsity (mean over
  seeds, band over their range) over the bars of OWL's outlier ratios, one panel per method; and
  ``zoo_ratios_<model>``, a forest plot of the paired ratios with their intervals (log axis).

The spec's ``zoo`` entry is the config's zoo section with ``seeds`` a mapping from model key to its
reported seeds (rules/common.smk); None without a zoo. Only zoo runs are read (``zoo_section``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from owl.allocators import get_allocator
from owl.report.captions import seed_phrase
from owl.report.cells import protocol, seed_values
from owl.report.common import fmt, method_label, near, num, pct, safe_name
from owl.report.runs import model_entries, model_label, zoo_runs
from owl.uncertainty import CONFIDENCE, pair_by_seed, ratio_interval, summarise_cell
from owl.zoo import HYPER_SYMBOLS, TUNING_DATASET, choose_tuned, reported_settings, trial_records, tuned_with, tuning_methods

REFERENCES = ("uniform", "owl")  # what every setting is paired with: uniform, and OWL at its paper default
ORIGIN_LABELS = {"default": "paper default", "tuned": "tuned", "default, tuned": "paper default = tuned"}
RATIO_FIELDS = ("ratio", "ratio_lower", "ratio_upper", "n_pairs", "wins")
ALLOCATOR_COLORS = {"uniform": "k", "owl": "C3", "dlp": "C0", "dsa": "C4", "alphapruning": "C2", "atp": "C1"}


# ---- what the spec holds ----------------------------------------------------------------------
def reported_models(spec: dict) -> list[str]:
    """Model keys of the zoo with reported seeds (the zoo table and figures are theirs)."""
    zoo = spec.get("zoo")
    return [m for m in zoo["models"] if zoo["seeds"].get(m)] if zoo else []


def tuning_models(spec: dict) -> list[str]:
    """Model keys with tuning trials (an empty ``zoo.tuning.values`` has none)."""
    tuning = (spec.get("zoo") or {}).get("tuning") or {}
    return list(tuning.get("models") or []) if tuning.get("values") else []


def is_reference(allocation: str, origin: str, ref: str) -> bool:
    """Whether a setting is reference ``ref``: uniform, or OWL at its paper default."""
    return allocation == ref and (ref == "uniform" or "default" in origin)


def _challengers(settings) -> list:
    """The reported settings that are neither reference: those the ``zoo_pairs`` table pairs with each other."""
    return [(a, v, o) for a, v, o in settings if not any(is_reference(a, o, ref) for ref in REFERENCES)]


def has_pairs(spec: dict) -> bool:
    """Whether some reported (model, method) has two settings besides uniform and OWL to pair."""
    zoo = spec.get("zoo")
    return any(len(_challengers(reported_settings(zoo, m, method))) > 1
               for m in reported_models(spec) for method in zoo["methods"])


def zoo_table_stems(spec: dict) -> list[str]:
    return ((["zoo_tuning"] if tuning_models(spec) else []) + (["zoo"] if reported_models(spec) else [])
            + (["zoo_pairs"] if has_pairs(spec) else []))


def zoo_figure_stems(spec: dict) -> list[str]:
    return [f"zoo_{kind}_{safe_name(m)}" for m in reported_models(spec) for kind in ("sparsity", "ratios")]


def _seeds(seeds) -> str:
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def allocator_label(allocation: str) -> str:
    return get_allocator(allocation).label


def setting_label(allocation: str, value, origin: str) -> str:
    """``paper default (α=0.15)``; ``-`` for uniform (no hyperparameter)."""
    if allocation not in HYPER_SYMBOLS or value is None or pd.isna(value):
        return "-"
    return f"{ORIGIN_LABELS.get(origin, origin)} ({HYPER_SYMBOLS[allocation]}={num(value)})"


# ---- cells: one row per reported setting --------------------------------------------------------
def _base(method: str) -> str:
    return str(method).split("_")[0]


def zoo_setting_runs(runs: pd.DataFrame, model: str, method: str, allocation: str, value, sparsity: float,
                     section: str = "zoo") -> pd.DataFrame:
    """The zoo runs (every seed) of one setting: base ``method`` with ``allocation`` at ``value``."""
    rows = zoo_runs(runs, section)
    rows = rows[(rows["model"] == model) & (rows["allocation"] == allocation) & (rows["method"].map(_base) == method).to_numpy()]
    rows = rows[near(rows["sparsity"], sparsity)]
    if value is not None:
        rows = rows[near(rows["alloc_value"], value)]
    return rows.sort_values("seed", kind="stable")


def paired_ratio(values: dict[int, float], reference: dict[int, float]) -> dict:
    """``values`` over ``reference`` paired by seed (:mod:`owl.uncertainty`), in the fields
    :func:`owl.report.format_ratio` prints; seeds on one side only are named, not dropped."""
    pairing = pair_by_seed(values, reference)
    summary = ratio_interval(list(pairing.ratios.values()))
    return {"n": len(values), "ratio": summary.ratio, "ratio_lower": summary.lower, "ratio_upper": summary.upper,
            "n_pairs": summary.n_pairs, "wins": summary.wins, "only_owl": pairing.only_treated,
            "only_baseline": pairing.only_baseline}


def zoo_cells(runs: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """A row per (model, method, allocator, setting) of the zoo: identity, the perplexity over seeds
    (``mean``, ``gsd``, ``lower``, ``upper``, ``n``, ``seeds``), and for each reference ``r`` in
    uniform, owl the paired ratio ``r_ratio``, ``r_ratio_lower``, ``r_ratio_upper``, ``r_n_pairs``,
    ``r_wins``, ``r_only`` (seeds without a partner), ``r_reference`` (the row is the reference)."""
    zoo = spec["zoo"]
    sparsity = float(zoo["sparsity"])
    rows = []
    for model in model_entries(spec, reported_models(spec)):
        for method in zoo["methods"]:
            settings = reported_settings(zoo, model["key"], method)
            found = {}
            for allocation, value, origin in settings:
                sel = zoo_setting_runs(runs, model["key"], method, allocation, value, sparsity)
                found[(allocation, value, origin)] = (sel, seed_values(sel))
            references = {
                "uniform": next((v for (a, _, _), (_, v) in found.items() if a == "uniform"), None),
                "owl": next((v for (a, _, o), (_, v) in found.items() if a == "owl" and "default" in o), None),
            }
            for (allocation, value, origin), (sel, values) in found.items():
                cell = summarise_cell(list(values.values()))
                row = {"model": model["key"], "label": model_label(model), "method": method, "allocation": allocation,
                       "value": math.nan if value is None else float(value), "origin": origin, "mean": cell.mean,
                       "gsd": cell.gsd, "lower": cell.low, "upper": cell.high, "n": cell.n, "seeds": sorted(values),
                       "protocols": sorted({pair for r in sel["result"] for pair in protocol(r)}),
                       "results": list(sel["result"]), "values": values}
                for ref in REFERENCES:
                    row[f"{ref}_reference"] = is_reference(allocation, origin, ref)
                    stats = None if row[f"{ref}_reference"] or references[ref] is None or not values else paired_ratio(values, references[ref])
                    for field in RATIO_FIELDS:
                        row[f"{ref}_{field}"] = math.nan if stats is None else stats[field]
                    row[f"{ref}_only"] = [] if stats is None else [*stats["only_owl"], *stats["only_baseline"]]
                    row[f"{ref}_unpaired"] = stats if stats is not None and row[f"{ref}_only"] else None
                rows.append(row)
    return pd.DataFrame(rows)


def _ratio_stats(row, ref: str) -> dict:
    stats = {"n": row["n"], **{f: row[f"{ref}_{f}"] for f in RATIO_FIELDS}}
    unpaired = row[f"{ref}_unpaired"]
    stats["only_owl"] = unpaired["only_owl"] if unpaired else []
    stats["only_baseline"] = unpaired["only_baseline"] if unpaired else []
    return stats


def format_zoo_table(cells: pd.DataFrame) -> pd.DataFrame:
    """The zoo table: Model, Method, Allocator, Setting, Perplexity, then ``/ Uniform`` and ``/ OWL``
    (the paired ratios, printed as the main table's; ``reference`` on the reference's own row)."""
    from owl.report.tables import format_cell, format_ratio

    out = []
    for _, row in cells.iterrows():
        texts = []
        for ref in REFERENCES:
            texts.append("reference" if row[f"{ref}_reference"] else format_ratio(_ratio_stats(row, ref)))
        out.append([row["label"], method_label(row["method"]), allocator_label(row["allocation"]),
                    setting_label(row["allocation"], row["value"], row["origin"]),
                    format_cell({**row, "calibrated": True}), *texts])
    return pd.DataFrame(out, columns=["Model", "Method", "Allocator", "Setting", "Perplexity", "/ Uniform",
                                      "/ OWL (paper default)"])


def zoo_csv(cells: pd.DataFrame) -> pd.DataFrame:
    """The zoo CSV: a row per (model, method, allocation, value, origin); the perplexity's mean, gsd,
    lower, upper, n, then ``uniform_ratio``, ``uniform_ratio_lower`` ... ``owl_wins``."""
    columns = ["mean", "gsd", "lower", "upper", "n", *(f"{ref}_{f}" for ref in REFERENCES for f in RATIO_FIELDS)]
    out = cells.set_index(["model", "method", "allocation", "value", "origin"])[columns].astype(float)
    return out


def _verdicts(cells: pd.DataFrame, ref: str) -> tuple[list[str], list[str], int]:
    """Rows whose interval against ``ref`` lies below 1 (better), above 1 (worse), and how many have one."""
    better, worse, with_interval = [], [], 0
    for _, row in cells.iterrows():
        low, high = row[f"{ref}_ratio_lower"], row[f"{ref}_ratio_upper"]
        if not (np.isfinite(low) and np.isfinite(high)):
            continue
        with_interval += 1
        name = f"{row['label']} {method_label(row['method'])} {_setting_name(row)}"
        if high < 1:
            better.append(name)
        elif low > 1:
            worse.append(name)
    return better, worse, with_interval


def zoo_notes(cells: pd.DataFrame, spec: dict) -> list[str]:
    """What the zoo table's cells are, which intervals exclude 1, and what a reader must know."""
    zoo = spec["zoo"]
    pinned = ", ".join(f"{k} {v}" for k, v in (zoo.get("settings") or {}).items())
    notes = ["Perplexity: WikiText-2 test, geometric mean over calibration seeds (min–max, n = seeds). Every allocator "
             "prunes with the same statistics, calibration windows and pruning code"
             + (f"; every zoo run, uniform and OWL included, is evaluated with {pinned}, so its numbers are not the main "
                "table's" if pinned else "") + "."]
    notes.append(f"/ Uniform, / OWL: the setting's perplexity over uniform's (over OWL's at its paper default) of the same "
                 f"method on the same calibration seed; geometric mean of the per-seed ratios with a {CONFIDENCE:.0%} "
                 "t-interval on the log ratios (t with n-1 degrees of freedom); wins: seeds where the setting is lower. "
                 "Below 1 the setting is better; bold, better and worse only where the interval excludes 1.")
    if ((cells["uniform_n_pairs"].fillna(0) == 1) | (cells["owl_n_pairs"].fillna(0) == 1)).any():
        notes.append("n=1: one seed gives no interval and no claim.")
    for ref, name in (("uniform", "uniform"), ("owl", "OWL")):
        better, worse, total = _verdicts(cells, ref)
        if total:
            text = f"Against {name}: {len(better)} of {total} settings with an interval are better"
            text += f" ({'; '.join(better)})" if better else ""
            text += f", {len(worse)} worse" + (f" ({'; '.join(worse)})" if worse else "")
            notes.append(text + "; the others are not distinguished from it at these seeds.")
    unpaired = [f"{row['label']} {method_label(row['method'])} {allocator_label(row['allocation'])} "
                f"{setting_label(row['allocation'], row['value'], row['origin'])} against {ref}: seeds {', '.join(map(str, row[f'{ref}_only']))}"
                for _, row in cells.iterrows() for ref in REFERENCES if row[f"{ref}_only"]]
    if unpaired:
        notes.append("Unpaired seeds, left out of the ratio: " + "; ".join(unpaired) + ".")
    if tuning_models(spec):
        tuning = zoo["tuning"]
        notes.append(f"Tuned: the value of lowest geometric-mean WikiText-2 validation perplexity at {_seeds(tuning['seeds'])} "
                     "(the zoo_tuning table), which no reported run uses.")
        borrowed = [m for m in zoo["methods"] if tuned_with(zoo, m) != m]
        if borrowed:
            notes.append(f"{', '.join(method_label(m) for m in borrowed)} {'take' if len(borrowed) > 1 else 'takes'} the values tuned with "
                         f"{method_label(tuned_with(zoo, borrowed[0]))}, as every official code uses one value for both.")
    from owl.report.tables import mixed_protocol_notes

    notes.extend(mixed_protocol_notes(cells))
    return notes


# ---- pairs: the allocators besides uniform and OWL, each against each other ------------------------
def pair_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """A row per (model, method) and pair of settings that are neither reference, in table order:
    the first's perplexity over the second's, paired by seed (:func:`paired_ratio`)."""
    rows = []
    for (_, method), group in cells.groupby(["model", "method"], sort=False):
        settings = [r for _, r in group.iterrows() if not (r["uniform_reference"] or r["owl_reference"])]
        for i, first in enumerate(settings):
            for second in settings[i + 1:]:
                if not first["values"] or not second["values"]:
                    continue
                rows.append({"label": first["label"], "method": method, "first": first, "second": second,
                             **paired_ratio(first["values"], second["values"])})
    return pd.DataFrame(rows)


def _setting_name(row) -> str:
    setting = setting_label(row["allocation"], row["value"], row["origin"])
    return allocator_label(row["allocation"]) + ("" if setting == "-" else f" {setting}")


def format_pairs_table(pairs: pd.DataFrame) -> pd.DataFrame:
    """Model, Method, Setting, Against, then ``Setting / Against`` printed as the zoo table's ratios."""
    from owl.report.tables import format_ratio

    out = [[row["label"], method_label(row["method"]), _setting_name(row["first"]), _setting_name(row["second"]),
            format_ratio(row.to_dict())] for _, row in pairs.iterrows()]
    return pd.DataFrame(out, columns=["Model", "Method", "Setting", "Against", "Setting / Against"])


def pairs_csv(pairs: pd.DataFrame) -> pd.DataFrame:
    """The pairs CSV: a row per pair, its two settings' (allocation, value, origin), then the ratio fields."""
    rows = []
    for _, row in pairs.iterrows():
        ids = {f"{side}_{k}": row[side][k] for side in ("first", "second") for k in ("allocation", "value", "origin")}
        rows.append({"model": row["first"]["model"], "method": row["method"], **ids, **{f: row[f] for f in RATIO_FIELDS}})
    return pd.DataFrame(rows).set_index(["model", "method"])


def pairs_notes(pairs: pd.DataFrame) -> list[str]:
    """What the pairs table is, which intervals exclude 1, and how many intervals it holds."""
    notes = ["Setting / Against: the setting's WikiText-2 test perplexity over the other's, same model, method and "
             f"calibration seed, as the zoo table's ratios ({CONFIDENCE:.0%} t-interval, wins: seeds where the setting is "
             "lower); below 1 the setting is better, bold only where the interval excludes 1. Uniform and OWL are in the "
             "zoo table."]
    separated = [f"{row['label']} {method_label(row['method'])}: {_setting_name(row['first'])} "
                 f"{'below' if row['ratio_upper'] < 1 else 'above'} {_setting_name(row['second'])}"
                 for _, row in pairs.iterrows()
                 if np.isfinite(row["ratio_lower"]) and (row["ratio_upper"] < 1 or row["ratio_lower"] > 1)]
    with_interval = int(np.isfinite(pairs["ratio_lower"].astype(float)).sum()) if len(pairs) else 0
    notes.append(f"{len(separated)} of {with_interval} intervals exclude 1" + (f" ({'; '.join(separated)})" if separated else "")
                 + "; the others are not distinguished at these seeds. With the zoo table's intervals, no correction for "
                 "multiplicity: about one interval in twenty excludes 1 by chance alone.")
    return notes


# ---- tuning --------------------------------------------------------------------------------------
def tuning_trials(runs: pd.DataFrame) -> list[dict]:
    """Trial records (owl.zoo.trial_records) of the tuning runs that have a validation perplexity."""
    rows = zoo_runs(runs, "zoo_tuning")
    keep = [TUNING_DATASET in (r.get("ppl") or {}) for r in rows["result"]]
    rows = rows[np.array(keep, dtype=bool)]
    return trial_records(list(rows["result"]), list(rows["model"]))


def tuning_cells(runs: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """A row per (model, method, allocator, trial value): its geometric-mean validation perplexity
    over the seeds every value has (NaN: no trial yet), whether it is the choice, how many of the
    listed values have trials, and the value ``zoo.tuned`` holds."""
    zoo = spec["zoo"]
    choice = choose_tuned(tuning_trials(runs))
    rows = []
    for model in model_entries(spec, tuning_models(spec)):
        for method in tuning_methods(zoo):
            for allocation, values in zoo["tuning"]["values"].items():
                chosen = choice.get(model["key"], {}).get(method, {}).get(allocation)
                gmeans = {} if chosen is None else chosen["values"]
                tuned = ((zoo.get("tuned") or {}).get(model["key"]) or {}).get(method, {}).get(allocation)
                for value in values:
                    gmean = next((g for v, g in gmeans.items() if math.isclose(v, float(value))), math.nan)
                    rows.append({"model": model["key"], "label": model_label(model), "method": method, "allocation": allocation,
                                 "value": float(value), "gmean": gmean, "seeds": [] if chosen is None else chosen["seeds"],
                                 "chosen": chosen is not None and math.isclose(chosen["value"], float(value)),
                                 "done": sum(1 for v in values if any(math.isclose(float(v), x) for x in gmeans)),
                                 "listed": len(values), "config": math.nan if tuned is None else float(tuned)})
    return pd.DataFrame(rows)


def format_tuning_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Model, Method, Allocator, a column per trial (``α=0.15: 41.23``, the choice bold), Chosen."""
    out = []
    width = int(cells.groupby(["model", "method", "allocation"]).size().max()) if len(cells) else 0
    for (_, method, allocation), group in cells.groupby(["model", "method", "allocation"], sort=False):
        symbol = HYPER_SYMBOLS[allocation]
        trials = []
        for _, row in group.iterrows():
            text = f"{symbol}={num(row['value'])}: {fmt(row['gmean'])}"
            trials.append(f"**{text}**" if row["chosen"] else text)
        trials += [""] * (width - len(trials))
        first = group.iloc[0]
        chosen = group[group["chosen"]]
        if chosen.empty:
            verdict = "-"
        else:
            verdict = f"{symbol}={num(chosen.iloc[0]['value'])}"
            if first["done"] < first["listed"]:
                verdict += f" (so far: {first['done']} of {first['listed']} values)"
        out.append([first["label"], method_label(method), allocator_label(allocation), *trials, verdict])
    return pd.DataFrame(out, columns=["Model", "Method", "Allocator", *(f"Trial {i + 1}" for i in range(width)), "Chosen"])


def tuning_notes(cells: pd.DataFrame, spec: dict) -> list[str]:
    tuning = spec["zoo"]["tuning"]
    windows = f"the first {tuning['eval_limit']} windows" if tuning.get("eval_limit") else "every window"
    notes = [f"WikiText-2 validation perplexity ({windows}), geometric mean over the tuning seeds every value of the "
             f"allocator has ({_seeds(tuning['seeds'])}, which no reported run uses); bold: the "
             "choice, the lowest (python -m owl.zoo choose), a rule fixed before any trial ran. OWL's trials are λ at "
             "the model's M. Validation numbers appear in this table only."]
    missing = cells[cells["gmean"].isna()]
    if len(missing):
        notes.append(f"{len(missing)} trial value(s) have no result yet: a choice marked 'so far' may still change.")
    differ = []
    for _, row in cells[cells["chosen"]].iterrows():
        if not (np.isfinite(row["config"]) and math.isclose(row["config"], row["value"])):
            config = "nothing" if not np.isfinite(row["config"]) else num(row["config"])
            differ.append(f"{row['label']} {method_label(row['method'])} {allocator_label(row['allocation'])}: "
                          f"{num(row['value'])} chosen, zoo.tuned has {config}")
    if differ:
        notes.append("The config's zoo.tuned differs from the choice: " + "; ".join(differ) + ".")
    return notes


def tuning_csv(cells: pd.DataFrame) -> pd.DataFrame:
    out = cells.set_index(["model", "method", "allocation", "value"])[["gmean", "chosen"]].copy()
    out["n_seeds"] = [len(s) for s in cells["seeds"]]
    out["chosen"] = out["chosen"].astype(int)
    return out


def build_zoo_tables(runs: pd.DataFrame, spec: dict, out_dir: str | Path) -> dict[str, dict]:
    """Write the tuning table and the zoo table that :func:`zoo_table_stems` names."""
    from owl.report.tables import _write_table

    out_dir = Path(out_dir)
    written = {}
    sparsity = pct(spec["zoo"]["sparsity"])
    cells = zoo_cells(runs, spec) if reported_models(spec) else None  # the zoo and zoo_pairs tables share them
    for stem in zoo_table_stems(spec):
        if stem == "zoo_tuning":
            trials = tuning_cells(runs, spec)
            written[stem] = _write_table(out_dir, stem, tuning_csv(trials), format_tuning_table(trials),
                                         f"Allocation zoo: tuning on WikiText-2 validation at {sparsity} sparsity",
                                         tuning_notes(trials, spec))
        elif stem == "zoo_pairs":
            pairs = pair_cells(cells)
            written[stem] = _write_table(out_dir, stem, pairs_csv(pairs), format_pairs_table(pairs),
                                         f"Allocation zoo: the allocators besides uniform and OWL, each against each other, "
                                         f"at {sparsity} unstructured sparsity", pairs_notes(pairs))
        else:
            written[stem] = _write_table(out_dir, stem, zoo_csv(cells), format_zoo_table(cells),
                                         f"Allocation zoo: WikiText-2 perplexity at {sparsity} unstructured sparsity, "
                                         "paired with uniform and OWL", zoo_notes(cells, spec))
    return written


# ---- figures -------------------------------------------------------------------------------------
def _stack(results: list[dict], field: str) -> np.ndarray | None:
    values = [r.get(field) for r in results]
    if not values or any(v is None for v in values) or len({len(v) for v in values}) != 1:
        return None
    return np.asarray(values, dtype=float)


def plot_zoo_sparsity(cells: pd.DataFrame, target: float, title: str | None = None):
    """Every setting's per-block sparsity (mean over seeds, band over their range), one panel per
    method, over the bars of OWL's outlier ratios (its paper-default runs' LOD, whiskers over the
    seeds). ``cells``: one model's :func:`zoo_cells`."""
    from owl.report.figures import _figure, _integer_ticks, _spread

    methods = list(dict.fromkeys(cells["method"]))
    fig = _figure(max(7.0, 4.6 * len(methods)), 4.0)
    axes = fig.subplots(1, max(1, len(methods)), sharey=True, squeeze=False)[0]
    handles = {}
    for ax, method in zip(axes, methods):
        rows = cells[cells["method"] == method]
        lod = None
        for _, row in rows[rows["owl_reference"]].iterrows():
            lod = _stack(row["results"], "outlier_ratios")
        n = None
        if lod is not None:
            ax2 = ax.twinx()
            several = len(lod) > 1
            bars = ax2.bar(np.arange(1, lod.shape[1] + 1), lod.mean(axis=0), color="0.85", yerr=_spread(lod) if several else None,
                           error_kw={"ecolor": "0.45", "capsize": 2, "lw": 0.8})
            handles.setdefault("LOD", (bars, f"OWL's outlier ratio (%), {'range over ' + str(len(lod)) + ' seeds' if several else 'one seed'}"))
            ax2.set_ylabel("outlier ratio (%)")
            ax.set_zorder(ax2.get_zorder() + 1)
            ax.patch.set_visible(False)
        for _, row in rows.iterrows():
            stacked = _stack(row["results"], "layer_sparsities")
            if stacked is None:
                continue
            n = stacked.shape[1]
            blocks = np.arange(1, n + 1)
            color = ALLOCATOR_COLORS.get(row["allocation"])
            tuned_only = row["origin"] == "tuned"
            label = allocator_label(row["allocation"])
            setting = setting_label(row["allocation"], row["value"], row["origin"])
            label += "" if setting == "-" else f", {setting}"
            (line,) = ax.plot(blocks, stacked.mean(axis=0), ls=":" if tuned_only else "-", marker="s" if tuned_only else "o",
                              ms=2.5, lw=1.2, color=color)
            if len(stacked) > 1:
                ax.fill_between(blocks, stacked.min(axis=0), stacked.max(axis=0), color=color, alpha=0.18, lw=0)
            handles.setdefault(label, (line, label))
        ax.axhline(target, color="0.3", lw=0.6, ls="--")
        ax.set_title(method_label(method), fontsize="medium")
        ax.set_xlabel("decoder block")
        if n:
            _integer_ticks(ax, n, most=16)  # a panel is narrower than the LOD figure
    axes[0].set_ylabel("sparsity (mean over seeds, band: range)")
    if handles:
        fig.legend([h for h, _ in handles.values()], [l for _, l in handles.values()], fontsize="x-small",
                   loc="outside lower center", ncols=2 if len(methods) < 2 else 3, frameon=False)
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig


def _ratio_ticks(low: float, high: float, most: int = 9) -> list[float]:
    """Readable ticks of a log ratio axis from ``low`` to ``high``: 1, then round ratios before less
    round ones, each kept only if it is at least 1/``most`` of the axis (in log) from every kept
    tick, so that no two labels collide (0.95 beside 1 did)."""
    tiers = [[1.0], [0.5, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0], [round(k / 10, 1) for k in range(1, 10)]
             + [round(1 + k / 10, 1) for k in range(1, 10)] + [3.0], [round(k / 100, 2) for k in range(5, 200, 10)],
             [round(k / 100, 2) for k in range(90, 111)]]
    gap = math.log(high / low) / most
    kept: list[float] = []
    for tier in tiers:
        for t in sorted((t for t in tier if low <= t <= high), key=lambda t: abs(math.log(t))):
            if all(abs(math.log(t / k)) >= gap for k in kept):
                kept.append(t)
    return sorted(kept)


def plot_zoo_ratios(cells: pd.DataFrame, title: str | None = None):
    """Forest plot of one model's paired ratios: a row per setting, a panel per reference (uniform,
    OWL at its paper default); the ratio with its t-interval on a log axis, hollow where one seed
    gives no interval; intervals that exclude 1 drawn thick."""
    from matplotlib.ticker import FuncFormatter, NullLocator

    from owl.report.figures import _figure

    rows = cells.reset_index(drop=True)
    names = [f"{method_label(r['method'])}: {allocator_label(r['allocation'])}"
             + ("" if setting_label(r["allocation"], r["value"], r["origin"]) == "-" else f" {setting_label(r['allocation'], r['value'], r['origin'])}")
             for _, r in rows.iterrows()]
    fig = _figure(9.5, 1.2 + 0.28 * max(4, len(rows)))
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(rows))[::-1]
    for ax, ref, name in zip(axes, REFERENCES, ("uniform", "OWL (paper default)")):
        ax.axvline(1.0, color="k", lw=0.8)
        shown = []
        for i, (_, row) in enumerate(rows.iterrows()):
            ratio, low, high = row[f"{ref}_ratio"], row[f"{ref}_ratio_lower"], row[f"{ref}_ratio_upper"]
            color = ALLOCATOR_COLORS.get(row["allocation"])
            if row[f"{ref}_reference"] or not np.isfinite(ratio):
                continue
            shown += [ratio]
            if np.isfinite(low) and np.isfinite(high):
                excluded = high < 1 or low > 1
                ax.errorbar([ratio], [y[i]], xerr=[[ratio - low], [high - ratio]], fmt="o", color=color, ms=4, capsize=2,
                            lw=2.2 if excluded else 1.0)
                shown += [low, high]
            else:
                ax.plot([ratio], [y[i]], "o", color=color, ms=4, markerfacecolor="white")
        if shown:
            low, high = min(shown + [1.0]) / 1.05, max(shown + [1.0]) * 1.05
            ax.set_xscale("log")
            ax.set_xlim(low, high)
            ax.set_xticks(_ratio_ticks(low, high))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.tick_params(axis="x", labelsize="small")
        ax.set_xlabel(f"perplexity / {name} (paired by seed, {CONFIDENCE:.0%} CI)", fontsize="small")
        ax.grid(axis="y", color="0.92", lw=0.6)
    axes[0].set_yticks(y, names, fontsize="x-small")
    if title:
        fig.suptitle(f"{title}\n(below 1: better; hollow: one seed, no interval; thick: interval excludes 1)", fontsize="medium")
    return fig


def build_zoo_figures(runs: pd.DataFrame, spec: dict, out_dir: str | Path) -> dict[str, list[Path]]:
    """Write the figures :func:`zoo_figure_stems` names (PNG and PDF)."""
    from owl.report.figures import _empty_figure, save_figure

    written: dict[str, list[Path]] = {}
    if not reported_models(spec):
        return written
    zoo = spec["zoo"]
    cells = zoo_cells(runs, spec)
    for model in model_entries(spec, reported_models(spec)):
        own = cells[cells["model"] == model["key"]]
        seeds = sorted({s for row in own["seeds"] for s in row})
        where = f"{model_label(model)} at {pct(zoo['sparsity'])}, {seed_phrase(seeds) if seeds else 'no seed yet'}"
        stem = f"zoo_sparsity_{safe_name(model['key'])}"
        fig = (plot_zoo_sparsity(own, float(zoo["sparsity"]), title=f"{where}: per-block sparsity of every allocator")
               if (own["n"] > 0).any() else _empty_figure(f"{model_label(model)}: no zoo run yet"))
        written[stem] = save_figure(fig, out_dir, stem)
        stem = f"zoo_ratios_{safe_name(model['key'])}"
        fig = plot_zoo_ratios(own, title=f"{where}: paired ratios") if (own["n"] > 0).any() else _empty_figure(
            f"{model_label(model)}: no zoo run yet")
        written[stem] = save_figure(fig, out_dir, stem)
    return written
