"""The paper's tables and figures, with their uncertainty, from result files.

Everything here reads result dicts (the ``result.json`` that ``run_prune`` writes, or a
``zeroshot.json``); nothing runs a model, so restyling a table or a figure is cheap. The workflow
(``rules/report.smk``) and the notebooks ``tables.ipynb`` and ``figures.ipynb`` call
:func:`build_tables` and :func:`build_figures`; :func:`table_files` and :func:`figure_files` name
what those write, so the workflow declares exactly those outputs.

Modules: :mod:`~owl.report.runs` (loading, finding the runs of a grid point, guessing a spec),
:mod:`~owl.report.cells` (a grid point over its seeds), :mod:`~owl.report.tables`,
:mod:`~owl.report.figures`, :mod:`~owl.report.single` (one run, one allocation); the statistics
themselves are pure functions in :mod:`owl.uncertainty`. :mod:`~owl.report.zoo`: the allocation
zoo's tables and figures (a ``zoo`` entry of the spec); the paper's tables never read a zoo run
(``zoo_section`` of :func:`load_runs`, :func:`paper_runs`).

Conventions
- Perplexity is WikiText-2 (``result["ppl"]["wikitext2"]``), printed with two decimals; lower is
  better. A grid point may hold several runs, one per calibration seed (``result["seed"]``); it is
  aggregated on the log scale: geometric mean, min-max range and n (``1459.29 (1402.11–1530.20,
  n=5)``). Dense and uniform magnitude read no calibration data: one run, printed alone.
- OWL's effect is paired: for each seed, OWL / uniform of the same method on the same seed; an OWL
  row is followed by the row of its geometric-mean ratio with a 95% t-interval on the log ratios
  (t with n-1 degrees of freedom) and its wins (``0.771 [0.702, 0.846] better, wins 5/5``). Bold,
  "better" and "worse" only where the interval excludes 1; one seed gives no interval and says so.
  A seed on one side only is left out of the ratio, marked ``†`` and named in the notes.
- CSV files are machine-readable: the geometric mean under each column's name, then
  ``<column>_gsd``, ``_lower``, ``_upper`` (min, max over seeds), ``_n``; with OWL rows also
  ``_ratio``, ``_ratio_lower``, ``_ratio_upper``, ``_n_pairs``, ``_wins``.
- Zero-shot accuracies are printed in percent with lm-eval's standard error (``37.86 ± 0.85``);
  the mean's standard error is ``sqrt(sum se^2)/k`` over its k tasks. They come from
  ``zeroshot.json`` (the workflow's zeroshot jobs, beside the run's ``result.json``) or from a
  ``result.json`` of ``owl prune --eval_zero_shot``. A task a run could not evaluate is ``n/a`` in
  its row, with the reason in a note; the notes also name the tasks the mean is over.

A *spec* says what the tables hold (the workflow derives it from its config; :func:`infer_spec`
guesses one from a folder of results)::

    {"models": [{"key": "smollm2-135m", "label": "SmolLM2-135M", "Hyper_m": 5, "Lamda": 0.08}],
     "main": {"sparsity": 0.7, "models": ["smollm2-135m"], "methods": ["dense", "wanda", ...]},
     "sweep": {"models": [...], "methods": [...], "sparsities": [0.5, 0.6, 0.7, 0.8]} or None,
     "ablation": {"models": [...], "method": "wanda_owl", "sparsity": 0.7,
                  "Hyper_m": [3, 5, 7, 10], "Lamda": [0.04, 0.08]} or None,
     "zero_shot": {"models": [...], "methods": [...], "sparsity": 0.7, "tasks": [...]} or None}

``Hyper_m``/``Lamda`` of a model are the OWL hyper-parameters its main and sweep rows use. The
seeds are not in the spec: every run of a grid point found among the runs is one seed of it.
"""

from owl.report.cells import point_stats, protocol, seed_values
from owl.report.common import (
    CALIBRATION_FREE,
    FIGURE_FORMATS,
    FIGURE_SECTIONS,
    METHOD_LABELS,
    METHOD_ORDER,
    OWL_BASELINE,
    SWEEP_METHODS,
    TABLE_SECTIONS,
    ZERO_SHOT_FILE,
    is_owl,
    method_label,
    pct_change,
    read_json,
    safe_name,
    uses_calibration,
    write_json,
)
from owl.report.figures import build_figures, figure_files, plot_ablation, plot_layerwise, plot_lod, plot_sweep, save_figure
from owl.report.runs import find_results, find_run, find_runs, infer_spec, load_runs, paper_runs, zoo_runs
from owl.report.single import allocation_record, outlier_ratios_for, run_summary, zero_shot_summary
from owl.report.tables import (
    ablation_baseline,
    ablation_cells,
    ablation_table,
    build_tables,
    format_ablation_table,
    format_cell,
    format_main_table,
    format_ppl_block,
    format_ratio,
    format_sweep_table,
    format_zero_shot_table,
    main_cells,
    main_table,
    ppl_notes,
    sweep_cells,
    sweep_table,
    table_files,
    to_markdown,
    wide_csv,
    zero_shot_csv,
    zero_shot_table,
)
from owl.report.zoo import (
    allocator_label,
    build_zoo_figures,
    build_zoo_tables,
    format_tuning_table,
    format_zoo_table,
    plot_zoo_ratios,
    plot_zoo_sparsity,
    tuning_cells,
    zoo_cells,
)

__all__ = [
    "METHOD_ORDER", "METHOD_LABELS", "OWL_BASELINE", "CALIBRATION_FREE", "SWEEP_METHODS", "TABLE_SECTIONS",
    "FIGURE_SECTIONS", "FIGURE_FORMATS", "ZERO_SHOT_FILE",
    "load_runs", "find_results", "infer_spec", "find_run", "find_runs", "seed_values", "point_stats", "protocol",
    "main_cells", "sweep_cells", "ablation_cells", "main_table", "sweep_table", "zero_shot_table", "ablation_table",
    "ablation_baseline", "format_cell", "format_ratio", "format_ppl_block", "format_main_table", "format_sweep_table",
    "format_zero_shot_table", "format_ablation_table", "ppl_notes", "wide_csv", "zero_shot_csv", "pct_change",
    "to_markdown", "table_files", "figure_files", "build_tables", "build_figures", "allocation_record",
    "outlier_ratios_for", "run_summary", "zero_shot_summary", "is_owl", "uses_calibration", "method_label", "safe_name",
    "plot_lod", "plot_layerwise", "plot_sweep", "plot_ablation", "save_figure", "write_json", "read_json",
    "paper_runs", "zoo_runs", "zoo_cells", "tuning_cells", "format_zoo_table", "format_tuning_table", "build_zoo_tables",
    "build_zoo_figures", "plot_zoo_sparsity", "plot_zoo_ratios", "allocator_label",
]
