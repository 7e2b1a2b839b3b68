"""Grid points over their seeds: one row of statistics per point (the glue between the runs and
:mod:`owl.uncertainty`). Tables and figures are built from these rows."""

from __future__ import annotations

import math

import pandas as pd

from owl.errors import OwlError
from owl.report.common import OWL_BASELINE, uses_calibration
from owl.report.runs import find_runs
from owl.uncertainty import pair_by_seed, ratio_interval, summarise_cell

# The columns of a cells table, after the point's identity (model, label, method, sparsity, Hyper_m, Lamda).
STAT_COLUMNS = ["mean", "gsd", "lower", "upper", "n", "seeds", "calibrated", "protocols"]
# What a table must not mix silently: where and in which precision a run was computed.
PROTOCOL_FIELDS = ("device", "dtype", "eval_dtype", "attn_implementation")
RATIO_COLUMNS = ["baseline", "baseline_mean", "baseline_n", "ratio", "ratio_lower", "ratio_upper", "n_pairs", "wins",
                 "only_owl", "only_baseline"]


def seed_values(rows: pd.DataFrame) -> dict[int, float]:
    """``{seed: perplexity}`` of the runs of one point (runs without a perplexity left out).

    Two runs of one point with the same seed are an error: picking one would hide the other.
    """
    values: dict[int, float] = {}
    for seed, ppl in zip(rows["seed"], rows["ppl"]):
        if pd.isna(ppl):
            continue
        if int(seed) in values:
            same = rows[rows["seed"] == seed]
            first = same.iloc[0]
            raise OwlError(f"two runs of {first['model']} {first['method']} at sparsity {first['sparsity']:g} with seed {int(seed)} "
                           f"({', '.join(str(p) for p in same['path'])}); keep one per seed")
        values[int(seed)] = float(ppl)
    return values


def protocol(result: dict) -> list[tuple[str, str]]:
    """The recorded ``(field, value)`` pairs of :data:`PROTOCOL_FIELDS` of one result and, for a
    CPU run, what decides its float path: the CPU model, its recorded instruction-set flags and the
    kernel set torch ran (the model name alone does not tell an AVX2 Zen 3 from an AVX-512 Zen 4,
    and the kernels round differently). A field the result does not record is left out: unknown,
    not different."""
    pairs = [(f, str(result[f])) for f in PROTOCOL_FIELDS if result.get(f) is not None]
    precision = result.get("precision") or {}
    cpu = precision.get("cpu") or {}
    if cpu.get("model"):
        pairs.append(("cpu", str(cpu["model"])))
    if cpu.get("flags") is not None:
        pairs.append(("cpu flags", " ".join(cpu["flags"]) or "none"))
    if (precision.get("cpu_kernels") or {}).get("capability"):
        pairs.append(("cpu kernels", str(precision["cpu_kernels"]["capability"])))
    return pairs


def point_stats(runs: pd.DataFrame, model: str, method: str, sparsity: float | None,
                hyper_m: float | None = None, lamda: float | None = None) -> dict:
    """Statistics of one grid point over its seeds and, for an OWL method, its paired ratio to the
    uniform baseline (same model and sparsity).

    ``mean``/``gsd``/``lower``/``upper``/``n``: geometric mean, geometric sd, min, max and number of
    the seeds' perplexities. The ratio pairs OWL and baseline on the same seed; a baseline that
    reads no calibration data (magnitude) has one value for every seed, so each OWL seed is paired
    with it. Seeds on one side only are listed in ``only_owl`` / ``only_baseline``. ``protocols``:
    the device and precision fields recorded by its runs (and its baseline's).
    """
    rows = find_runs(runs, model, method, sparsity, hyper_m, lamda)
    values = seed_values(rows)
    cell = summarise_cell(list(values.values()))
    stats = {"mean": cell.mean, "gsd": cell.gsd, "lower": cell.low, "upper": cell.high, "n": cell.n,
             "seeds": sorted(values), "calibrated": uses_calibration(method),
             "protocols": sorted({pair for r in rows["result"] for pair in protocol(r)})}
    stats.update({c: math.nan for c in RATIO_COLUMNS})
    baseline = OWL_BASELINE.get(method)
    if baseline is None:
        return stats
    base_rows = find_runs(runs, model, baseline, sparsity)
    base_values = seed_values(base_rows)
    base = summarise_cell(list(base_values.values()))
    if not uses_calibration(baseline) and base.n:
        base_values = {seed: base.mean for seed in values}
    pairing = pair_by_seed(values, base_values)
    ratio = ratio_interval(list(pairing.ratios.values()))
    stats.update(baseline=baseline, baseline_mean=base.mean, baseline_n=base.n, ratio=ratio.ratio,
                 ratio_lower=ratio.lower, ratio_upper=ratio.upper, n_pairs=ratio.n_pairs, wins=ratio.wins,
                 only_owl=pairing.only_treated, only_baseline=pairing.only_baseline,
                 protocols=sorted({*stats["protocols"], *(pair for r in base_rows["result"] for pair in protocol(r))}))
    return stats


def cells_frame(rows: list[dict]) -> pd.DataFrame:
    """A cells table from point rows (identity fields, then :func:`point_stats`)."""
    identity = ["model", "label", "method", "sparsity", "Hyper_m", "Lamda"]
    return pd.DataFrame(rows, columns=identity + STAT_COLUMNS + RATIO_COLUMNS)
