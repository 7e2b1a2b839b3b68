"""The paper's figures with their uncertainty, from result dicts (no model is run).

- layerwise: OWL's per-block sparsity against uniform over the bars of the layerwise outlier
  distribution; with several seeds the bars are the mean with whiskers over the seeds' range and
  the sparsity a mean line in a band over its range;
- sweep: perplexity versus sparsity per method (geometric mean, bars over the seeds' range) and
  OWL's paired ratio to its uniform method with its 95% t-interval (log axis);
- ablation: a heatmap over M x lambda of the mean paired change against the uniform method, cells
  whose interval excludes 0 framed (a perplexity heatmap when the uniform method has no run).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from owl.report.cells import point_stats
from owl.report.common import FIGURE_FORMATS, FIGURE_SECTIONS, OWL_BASELINE, fmt, is_owl, method_label, num, pct, pct_change, safe_name
from owl.report.runs import find_runs, model_entries, model_label, owl_args
from owl.report.tables import ablation_baseline, ablation_cells, sections_of, sweep_cells
from owl.uncertainty import CONFIDENCE


def _figure(width: float = 7.0, height: float = 3.4):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _empty_figure(text: str):
    fig = _figure()
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center")
    return fig


def _integer_ticks(ax, n: int, most: int = 32) -> None:
    """Block numbers 1..n on the x axis: every one up to ``most``, else about ``most // 2`` of them."""
    from matplotlib.ticker import MaxNLocator

    if n <= most:
        ax.set_xticks(range(1, n + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=most // 2, integer=True))
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
        ax.bar(blocks - 0.4 + width * (i + 0.5), ratios[m], width=width, label=f"M={num(m)}")
    ax.set_xlabel("decoder block")
    ax.set_ylabel("outlier ratio (%)")
    _integer_ticks(ax, n)
    ax.legend(ncols=min(4, len(ms)) or 1, fontsize="small")
    ax.set_title(title or f"Layerwise outlier distribution of {lod.get('model', 'the model')}")
    return fig

def _seed_rows(values) -> np.ndarray | None:
    """One run's per-block values (1-D) or several seeds' (2-D) as a 2-D array; None stays None."""
    if values is None:
        return None
    array = np.asarray(values, dtype=float)
    return array[None, :] if array.ndim == 1 else array


def _spread(rows: np.ndarray) -> np.ndarray:
    """``[mean - min, max - mean]`` per column: error bars for the seeds' range."""
    mean = rows.mean(axis=0)
    return np.vstack([mean - rows.min(axis=0), rows.max(axis=0) - mean])


def plot_layerwise(outlier_ratios, sparsities, target: float, *, achieved=None, title: str | None = None,
                   owl_label: str = "OWL"):
    """OWL's per-block sparsity against uniform, over bars of the layerwise outlier distribution (the
    paper's Figure 1). Each argument is one run's per-block values or a row per seed: then the bars
    are the mean outlier ratio with whiskers over the seeds' range and the sparsity a mean line in
    a band over its range."""
    sparsity_rows = _seed_rows(sparsities)
    n = sparsity_rows.shape[1]
    blocks = np.arange(1, n + 1)
    fig = _figure()
    ax = fig.add_subplot()
    handles = []
    ratio_rows = _seed_rows(outlier_ratios)
    if ratio_rows is not None and ratio_rows.shape[1] == n and np.isfinite(ratio_rows).any():  # null: not computed
        ax2 = ax.twinx()
        several = len(ratio_rows) > 1
        handles.append(ax2.bar(blocks, ratio_rows.mean(axis=0), color="0.85", yerr=_spread(ratio_rows) if several else None,
                               error_kw={"ecolor": "0.45", "capsize": 2, "lw": 0.8},
                               label=f"LOD (%), range over {len(ratio_rows)} seeds" if several else "LOD (%)"))
        ax2.set_ylabel("outlier ratio (%)")
        ax.set_zorder(ax2.get_zorder() + 1)
        ax.patch.set_visible(False)
    mean = sparsity_rows.mean(axis=0)
    (owl_line,) = ax.plot(blocks, mean, "o-", color="C3", ms=3, label=f"{owl_label} (target per block)")
    handles.append(owl_line)
    if len(sparsity_rows) > 1:
        handles.append(ax.fill_between(blocks, sparsity_rows.min(axis=0), sparsity_rows.max(axis=0), color="C3", alpha=0.25, lw=0,
                                       label=f"{owl_label}: range over {len(sparsity_rows)} seeds"))
    handles.append(ax.axhline(target, ls="--", color="k", lw=1, label=f"Uniform ({pct(target)})"))
    achieved_rows = _seed_rows(achieved)
    if achieved_rows is not None and achieved_rows.shape[1] == n:
        (ach,) = ax.plot(blocks, achieved_rows.mean(axis=0), "x", color="C0", ms=4, label="achieved")
        handles.append(ach)
    ax.set_xlabel("decoder block")
    ax.set_ylabel("sparsity")
    _integer_ticks(ax, n)
    # Below the axes: inside, it hid the allocation of the first blocks whatever corner it took.
    # A figure legend "outside": the constrained layout makes room for it (also on two rows).
    fig.legend(handles=handles, fontsize="small", loc="outside lower center", ncols=len(handles) if len(handles) <= 4 else 3, frameon=False)
    if title:
        ax.set_title(title, fontsize="medium")
    return fig


_SWEEP_STYLES = {"wanda": ("C0", "--", "o"), "wanda_owl": ("C0", "-", "s"), "sparsegpt": ("C2", "--", "o"),
                 "sparsegpt_owl": ("C2", "-", "s"), "magnitude": ("C7", "--", "o"), "magnitude_owl": ("C7", "-", "s"),
                 "dense": ("k", ":", "")}


def _log_axis(ax, values: np.ndarray) -> None:
    from matplotlib.ticker import FuncFormatter

    positive = values[np.isfinite(values)]
    if not positive.size or (positive <= 0).any():
        return
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    if math.log10(positive.max() / positive.min()) < 1.5:  # label minor ticks only on a narrow range
        ax.yaxis.set_minor_formatter(plain)


def plot_sweep(cells: pd.DataFrame, title: str | None = None, dense: float | None = None):
    """Perplexity versus sparsity (log y; a line per method through the geometric means, bars over
    the seeds' range; ``dense`` a dotted reference) and, beside it, each OWL method's paired ratio to
    its uniform method with its t-interval (hollow: one seed, no interval), on a log axis: the
    interval is symmetric in log ratio, so a wide one (few seeds) stays readable beside narrow ones.
    Below 1 OWL helps.

    ``cells``: the sweep cells of one model (:func:`owl.report.sweep_cells`).
    """
    paired = cells[cells["n_pairs"].fillna(0) > 0]
    fig = _figure(9.0 if not paired.empty else 5.5, 3.6)
    ax = fig.add_subplot(1, 2 if not paired.empty else 1, 1)
    sparsities = sorted(set(cells["sparsity"]))
    ticks = [100 * float(s) for s in sparsities]
    for method in dict.fromkeys(cells["method"]):
        rows = cells[cells["method"] == method].sort_values("sparsity")
        x = 100 * rows["sparsity"].to_numpy(dtype=float)
        mean = rows["mean"].to_numpy(dtype=float)
        bars = np.vstack([mean - rows["lower"].to_numpy(dtype=float), rows["upper"].to_numpy(dtype=float) - mean])
        color, ls, marker = _SWEEP_STYLES.get(method, (None, "-", "o"))
        ax.errorbar(x, mean, yerr=np.clip(np.nan_to_num(bars), 0, None), ls=ls, marker=marker, color=color, capsize=3, label=method_label(method))
    if dense is not None and math.isfinite(dense):
        ax.axhline(dense, color="k", ls=":", lw=1, label=f"Dense ({fmt(dense)})")
    _log_axis(ax, np.concatenate([cells[["lower", "upper"]].to_numpy(dtype=float).ravel(), [dense if dense is not None else np.nan]]))
    ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
    ax.set_xlabel("sparsity (%)")
    ax.set_ylabel("WikiText-2 perplexity")
    ax.legend(fontsize="small")
    if not paired.empty:
        right = fig.add_subplot(1, 2, 2)
        right.axhline(1.0, color="k", lw=0.8)
        owl_methods = list(dict.fromkeys(paired["method"]))
        for i, method in enumerate(owl_methods):
            rows = paired[paired["method"] == method].sort_values("sparsity")
            # Side by side, so overlapping intervals stay apart (0.8 sparsity points between methods).
            x = 100 * rows["sparsity"].to_numpy(dtype=float) + 0.8 * (i - (len(owl_methods) - 1) / 2)
            ratio = rows["ratio"].to_numpy(dtype=float)
            low, high = rows["ratio_lower"].to_numpy(dtype=float), rows["ratio_upper"].to_numpy(dtype=float)
            interval = np.isfinite(low) & np.isfinite(high)
            color, _, marker = _SWEEP_STYLES.get(method, (None, "-", "s"))
            right.plot(x, ratio, ls="-", color=color, label=f"{method_label(method)} / {method_label(OWL_BASELINE[method])}")
            right.errorbar(x[interval], ratio[interval], yerr=np.vstack([ratio - low, high - ratio])[:, interval],
                           ls="none", marker=marker, color=color, capsize=3)
            right.plot(x[~interval], ratio[~interval], ls="none", marker=marker, color=color, markerfacecolor="white")
        _log_axis(right, np.concatenate([paired[["ratio", "ratio_lower", "ratio_upper"]].to_numpy(dtype=float).ravel(), [1.0]]))
        right.set_xticks(ticks, [f"{v:g}" for v in ticks])
        right.set_xlabel("sparsity (%)")
        right.set_ylabel(f"OWL / uniform, paired by seed, {CONFIDENCE:.0%} CI")
        right.legend(fontsize="small", title="hollow: one seed, no interval" if (paired["n_pairs"] < 2).any() else None,
                     title_fontsize="x-small")
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig


def _grid(cells: pd.DataFrame, column: str) -> tuple[np.ndarray, list[float], list[float]]:
    ms, lamdas = list(dict.fromkeys(cells["Hyper_m"])), list(dict.fromkeys(cells["Lamda"]))
    values = cells.set_index(["Hyper_m", "Lamda"])[column].astype(float)
    return np.array([[values.get((m, x), np.nan) for x in lamdas] for m in ms]), ms, lamdas


def plot_ablation(cells: pd.DataFrame, title: str | None = None, baseline: tuple[str, float] | None = None):
    """Heatmap over M (rows) x lambda (columns) of the ablation cells (:func:`owl.report.ablation_cells`).

    With paired ratios: the mean paired change against the uniform method, ``100 (ratio - 1)``, on
    a diverging scale centred on 0, each cell annotated with its interval (or ``n=1``) and framed
    where the interval excludes 0. Without: the geometric-mean perplexity on a log scale.
    ``baseline``: ``(label, perplexity)`` of the uniform method, named under the title.
    """
    from matplotlib.patches import Rectangle

    paired = bool((cells["n_pairs"].fillna(0) > 0).any())
    ratio, ms, lamdas = _grid(cells, "ratio" if paired else "mean")
    fig = _figure(1.4 + 1.15 * max(3, len(lamdas)), 1.3 + 0.65 * max(3, len(ms)))
    ax = fig.add_subplot()
    if paired:
        # colour by the log ratio (symmetric: halving and doubling are equally far from 0), label in percent
        shown = np.log(ratio)
        change = pct_change(ratio, 1.0)
        low, high = (pct_change(_grid(cells, c)[0], 1.0) for c in ("ratio_lower", "ratio_upper"))
        limit = float(np.nanmax(np.abs(shown))) if np.isfinite(shown).any() else 1.0
        image = ax.imshow(shown, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        bar_label = "paired change against uniform (%)"
    else:
        shown = np.log10(np.where(np.isfinite(ratio) & (ratio > 0), ratio, np.nan))
        image = ax.imshow(shown, cmap="viridis_r", aspect="auto")
        bar_label = "log10 perplexity (geometric mean)"
    ax.set_xticks(range(len(lamdas)), [num(x) for x in lamdas])
    ax.set_yticks(range(len(ms)), [num(m) for m in ms])
    ax.set_xlabel("λ (Lamda)")
    ax.set_ylabel("M (Hyper_m)")
    for i in range(len(ms)):
        for j in range(len(lamdas)):
            if not np.isfinite(shown[i, j]):
                continue
            strong = abs(image.norm(shown[i, j]) - 0.5) > 0.3 if paired else image.norm(shown[i, j]) > 0.5
            color = "w" if strong else "k"
            if not paired:
                ax.text(j, i, fmt(ratio[i, j]), ha="center", va="center", fontsize="small", color=color)
                continue
            interval = np.isfinite(low[i, j]) and np.isfinite(high[i, j])
            excluded = interval and (high[i, j] < 0 or low[i, j] > 0)
            second = f"[{low[i, j]:+.1f}, {high[i, j]:+.1f}]" if interval else "n=1"
            ax.text(j, i, f"{change[i, j]:+.1f}%\n{second}", ha="center", va="center", fontsize="x-small", color=color,
                    fontweight="bold" if excluded else "normal")
            if excluded:
                ax.add_patch(Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False, edgecolor="k", lw=2))
    bar = fig.colorbar(image, ax=ax, label=bar_label)
    if paired:
        from matplotlib.ticker import FuncFormatter

        steps = np.log1p(np.array([-90, -75, -50, -25, 0, 33, 100, 300, 900]) / 100)
        bar.set_ticks([v for v in steps if abs(v) <= limit + 1e-12])
        bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{pct_change(math.exp(v), 1.0):+.0f}"))
    notes = []
    if baseline is not None:
        notes.append(f"{baseline[0]}: {fmt(baseline[1])}")
    if paired:
        notes.append(f"framed: {CONFIDENCE:.0%} CI excludes 0")
    if notes:
        title = f"{title or ''}\n({'; '.join(notes)})".lstrip("\n")
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


# ---- what gets written ------------------------------------------------------------------------
def _layerwise_method(spec: dict) -> str | None:
    return next((m for m in spec["main"]["methods"] if is_owl(m)), None) if spec.get("main") else None


def figure_files(spec: dict, sections: Iterable[str] | None = None) -> list[str]:
    """File names :func:`build_figures` writes for ``spec`` (each figure as PNG and PDF)."""
    stems = []
    for section in sections_of(sections, FIGURE_SECTIONS):
        if section == "layerwise" and _layerwise_method(spec):
            stems += [f"layerwise_{safe_name(k)}" for k in spec["main"]["models"]]
        elif section in ("sweep", "ablation") and spec.get(section):
            stems += [f"{section}_{safe_name(k)}" for k in spec[section]["models"]]
        elif section == "zoo":
            from owl.report.zoo import zoo_figure_stems

            stems += zoo_figure_stems(spec)
    return [f"{stem}.{ext}" for stem in stems for ext in FIGURE_FORMATS]


def _layerwise_figure(runs: pd.DataFrame, spec: dict, model: dict):
    """The layerwise figure of one model: its first OWL method of the main table that has runs, every seed."""
    main = spec["main"]
    for method in (m for m in main["methods"] if is_owl(m)):
        rows = find_runs(runs, model["key"], method, main["sparsity"], **owl_args(model))
        results = [r for r in rows["result"] if r.get("layer_sparsities")]
        if not results:
            continue
        n = len(results[0]["layer_sparsities"])

        def stack(field: str):
            values = [r.get(field) for r in results]
            return None if any(v is None or len(v) != n for v in values) else values

        first = rows.iloc[0]
        seeds = f", {len(results)} seeds" if len(results) > 1 else ""
        title = (f"{model_label(model)}: {method_label(method)} at {pct(main['sparsity'])} "
                 f"(M={num(first['Hyper_m'])}, λ={num(first['Lamda'])}{seeds})")
        return plot_layerwise(stack("outlier_ratios"), stack("layer_sparsities"), main["sparsity"],
                              achieved=stack("layer_achieved_sparsities"), title=title)
    return _empty_figure(f"{model_label(model)}: no OWL run at {pct(main['sparsity'])}")


def build_figures(runs: pd.DataFrame, spec: dict, out_dir: str | Path, sections: Iterable[str] | None = None) -> dict[str, list[Path]]:
    """Write every figure of ``spec`` (``sections``: a subset of layerwise, sweep, ablation, zoo) as PNG and PDF.

    Returns ``{stem: [png, pdf]}``. A figure whose runs are missing is drawn with what there is.
    """
    out_dir = Path(out_dir)
    written: dict[str, list[Path]] = {}
    for section in sections_of(sections, FIGURE_SECTIONS):
        if section == "layerwise" and _layerwise_method(spec):
            for model in model_entries(spec, spec["main"]["models"]):
                stem = f"layerwise_{safe_name(model['key'])}"
                written[stem] = save_figure(_layerwise_figure(runs, spec, model), out_dir, stem)
        elif section == "sweep" and spec.get("sweep"):
            cells = sweep_cells(runs, spec)
            for model in model_entries(spec, spec["sweep"]["models"]):
                stem = f"sweep_{safe_name(model['key'])}"
                dense = point_stats(runs, model["key"], "dense", None)["mean"]
                fig = plot_sweep(cells[cells["model"] == model["key"]], dense=None if math.isnan(dense) else dense,
                                 title=f"{model_label(model)}: WikiText-2 perplexity versus sparsity")
                written[stem] = save_figure(fig, out_dir, stem)
        elif section == "ablation" and spec.get("ablation"):
            ab = spec["ablation"]
            for model in model_entries(spec, ab["models"]):
                stem = f"ablation_{safe_name(model['key'])}"
                baseline = ablation_baseline(runs, spec, model["key"])
                fig = plot_ablation(ablation_cells(runs, spec, model["key"]),
                                    title=f"{model_label(model)}: {method_label(ab['method'])} at {pct(ab['sparsity'])}",
                                    baseline=None if baseline is None else (f"uniform {method_label(baseline[0])}", baseline[1]))
                written[stem] = save_figure(fig, out_dir, stem)
        elif section == "zoo":
            from owl.report.zoo import build_zoo_figures

            written.update(build_zoo_figures(runs, spec, out_dir))
    return written
