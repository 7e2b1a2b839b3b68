"""Tables and figures from result dicts (owl/report.py): numbers, bold, brackets, files."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from owl import report

# The paper's Table 1, LLaMA-7B and OPT-6.7B columns (GUIDE section 2).
PAPER = {
    "LLaMA-7B": {"dense": 5.68, "magnitude": 48419.12, "wanda": 85.77, "wanda_owl": 24.55, "sparsegpt": 26.30, "sparsegpt_owl": 19.49},
    "OPT-6.7B": {"dense": 10.13, "magnitude": 290985.03, "wanda": 162.92, "wanda_owl": 40.22, "sparsegpt": 20.29, "sparsegpt_owl": 22.48},
}
MAIN_METHODS = ["dense", "magnitude", "wanda", "wanda_owl", "sparsegpt", "sparsegpt_owl"]


def make_result(model, method, sparsity, ppl, hyper_m=5, lamda=0.08, n_blocks=4, zero_shot=None, details=None):
    sparsity = 0.0 if method == "dense" else sparsity
    if report.is_owl(method):
        layer = [sparsity - lamda + 2 * lamda * i / (n_blocks - 1) for i in range(n_blocks)]
    else:
        layer = [sparsity] * n_blocks
    result = {
        "model": model, "prune_method": method, "sparsity_ratio": sparsity, "sparsity_type": "unstructured",
        "Hyper_m": hyper_m, "Lamda": lamda, "nsamples": 4, "seqlen": 64, "seed": 0,
        "achieved_sparsity": sparsity, "layer_sparsities": layer, "layer_achieved_sparsities": layer,
        "outlier_ratios": [1.0 + i for i in range(n_blocks)] if report.is_owl(method) else None,
        "ppl": {"wikitext2": ppl}, "eval_windows": 4, "eval_limit": 4,
        "timings_s": {"calibration": 0.0, "pruning": 1.0, "evaluation": 0.5},
    }
    if zero_shot is not None:
        result["zero_shot"] = zero_shot
        result["zero_shot_details"] = details or {"missing": {}, "tasks_in_mean": [t for t in zero_shot if t != "mean"]}
    return result


def paper_runs(models=("LLaMA-7B", "OPT-6.7B")):
    return report.load_runs([make_result(m, method, 0.7, PAPER[m][method]) for m in models for method in MAIN_METHODS])


def paper_spec(models=("LLaMA-7B", "OPT-6.7B"), **sections):
    spec = {
        "models": [{"key": m, "label": m, "Hyper_m": 5, "Lamda": 0.08} for m in models],
        "main": {"sparsity": 0.7, "models": list(models), "methods": MAIN_METHODS},
        "sweep": None, "ablation": None, "zero_shot": None,
    }
    spec.update(sections)
    return spec


def md_rows(markdown: str) -> dict[str, list[str]]:
    """Markdown table rows keyed by their first cell."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows[cells[0]] = cells
    return rows


# ---- main table ------------------------------------------------------------------------------
def test_main_table_holds_the_numbers_of_the_results():
    table = report.main_table(paper_runs(), paper_spec())
    assert list(table.columns) == ["LLaMA-7B", "OPT-6.7B"]
    assert list(table.index) == MAIN_METHODS
    for model, column in PAPER.items():
        for method, value in column.items():
            assert table.at[method, model] == value


def test_main_table_formats_like_the_paper():
    formatted = report.format_main_table(report.main_table(paper_runs(), paper_spec()))
    rows = md_rows(report.to_markdown(formatted))
    assert rows["Method"] == ["Method", "Layerwise Sparsity", "Weight Update", "LLaMA-7B", "OPT-6.7B"]
    assert rows["Dense"] == ["Dense", "-", "-", "5.68", "10.13"]  # the reference: never bold
    assert rows["Magnitude"][1:] == ["Uniform", "no", "48419.12", "290985.03"]
    # OWL rows: change against the uniform baseline in brackets.
    assert rows["OWL w. Wanda"][1:] == ["Non-Uniform", "no", "24.55 (-61.22)", "40.22 (-122.70)"]
    # Bold: the best pruned entry of each column (OWL w. SparseGPT for LLaMA, SparseGPT for OPT).
    assert rows["OWL w. SparseGPT"][3:] == ["**19.49** (-6.81)", "22.48 (+2.19)"]
    assert rows["SparseGPT"][1:] == ["Uniform", "yes", "26.30", "**20.29**"]
    assert sum(cell.count("**") for row in rows.values() for cell in row) == 4  # one bold per column


def test_bold_ties_and_missing_runs():
    block = pd.DataFrame({"m": [1.0, 3.0, 2.0, 2.0]}, index=["dense", "wanda", "sparsegpt", "sparsegpt_owl"])
    out = report.format_ppl_block(block)
    assert out.at["dense", "m"] == "1.00"
    assert out.at["sparsegpt", "m"] == "**2.00**"
    assert out.at["sparsegpt_owl", "m"] == "**2.00** (+0.00)"
    runs = report.load_runs([make_result("a", "wanda", 0.7, 10.0)])
    table = report.main_table(runs, paper_spec(("a",)))
    formatted = report.format_main_table(table)
    assert math.isnan(table.at["wanda_owl", "a"])
    assert formatted.loc[formatted["Method"] == "OWL w. Wanda", "a"].item() == "-"
    assert formatted.loc[formatted["Method"] == "Wanda", "a"].item() == "**10.00**"


def test_main_table_picks_the_models_owl_setting_among_ablation_runs():
    results = [make_result("a", m, 0.7, PAPER["LLaMA-7B"][m]) for m in MAIN_METHODS]
    results.append(make_result("a", "wanda_owl", 0.7, 99.0, hyper_m=3, lamda=0.2))
    results.append(make_result("a", "wanda_owl", 0.5, 7.0))  # another sparsity
    spec = paper_spec(("a",))
    assert report.main_table(report.load_runs(results), spec).at["wanda_owl", "a"] == 24.55
    spec["models"][0].update(Hyper_m=3, Lamda=0.2)
    assert report.main_table(report.load_runs(results), spec).at["wanda_owl", "a"] == 99.0


def test_load_runs_identity_from_the_workflow_overrides_the_file(tmp_path):
    path = tmp_path / "run" / "result.json"
    report.write_json(path, make_result("/some/local/path", "wanda_owl", 0.7, 12.5))
    runs = report.load_runs([{"path": str(path), "model": "tiny", "method": "wanda_owl", "sparsity": 0.7, "Hyper_m": 5, "Lamda": 0.08}])
    assert runs.loc[0, "model"] == "tiny" and runs.loc[0, "ppl"] == 12.5
    assert report.load_runs([path.parent]).loc[0, "model"] == "/some/local/path"  # a folder works too
    assert report.find_results(tmp_path) == [str(path)]


def test_zeroshot_json_beside_a_result_is_merged_and_alone_is_a_run(tmp_path):
    zs = {"boolq": 0.6, "rte": 0.5, "mean": 0.55}
    details = {"missing": {}, "tasks_in_mean": ["boolq", "rte"]}
    beside = tmp_path / "a" / "wanda_s0.7"
    report.write_json(beside / "result.json", make_result("a", "wanda", 0.7, 30.0))
    only_zs = make_result("a", "dense", 0.7, None, zero_shot=zs, details=details)
    only_zs["ppl"] = {}  # what a zeroshot job writes: no perplexity
    report.write_json(beside / "zeroshot.json", {**only_zs, "prune_method": "wanda", "sparsity_ratio": 0.7})
    report.write_json(tmp_path / "a" / "dense" / "zeroshot.json", only_zs)
    assert report.find_results(tmp_path) == [str(tmp_path / "a/dense/zeroshot.json"), str(beside / "result.json")]
    runs = report.load_runs(report.find_results(tmp_path))
    merged = runs[runs["method"] == "wanda"].iloc[0]
    assert merged["ppl"] == 30.0 and merged["result"]["zero_shot"] == zs  # perplexity and zero-shot of one run
    alone = runs[runs["method"] == "dense"].iloc[0]
    assert math.isnan(alone["ppl"]) and alone["result"]["zero_shot"] == zs
    assert "zero_shot" not in report.load_runs([beside / "result.json"], merge_zero_shot=False).loc[0, "result"]
    assert report.infer_spec(runs)["zero_shot"]["methods"] == ["dense", "wanda"]


# ---- sweep, zero-shot, ablation --------------------------------------------------------------
def sweep_runs():
    values = {"wanda": [7.3, 10.7, 85.8], "wanda_owl": [7.2, 9.5, 24.6], "sparsegpt": [7.2, 10.4, 26.3], "sparsegpt_owl": [7.2, 9.8, 19.5]}
    return report.load_runs([make_result("a", m, s, v) for m, vs in values.items() for s, v in zip([0.5, 0.6, 0.7], vs)]), values


def test_sweep_table_and_its_format():
    runs, values = sweep_runs()
    spec = paper_spec(("a",), sweep={"models": ["a"], "methods": list(values), "sparsities": [0.5, 0.6, 0.7]})
    table = report.sweep_table(runs, spec)
    for method, vs in values.items():
        assert list(table.loc[("a", method)]) == vs
    formatted = report.format_sweep_table(table)
    assert list(formatted.columns) == ["Model", "Method", "50%", "60%", "70%"]
    owl = formatted[formatted["Method"] == "OWL w. Wanda"].iloc[0]
    assert owl["70%"] == "24.60 (-61.20)"
    assert owl["60%"] == "**9.50** (-1.20)"
    assert formatted[formatted["Method"] == "OWL w. SparseGPT"].iloc[0]["70%"] == "**19.50** (-6.80)"


def test_owl_change_against_the_uniform_baseline():
    runs, values = sweep_runs()
    spec = paper_spec(("a",), sweep={"models": ["a"], "methods": list(values), "sparsities": [0.5, 0.6, 0.7]})
    block = report.sweep_table(runs, spec).xs("a", level="model")
    block.loc["sparsegpt_owl", 0.5] = float("nan")  # a missing run stays missing
    change = report.owl_change(block)
    assert list(change.index) == ["wanda_owl", "sparsegpt_owl"]
    assert change.loc["wanda_owl", 0.7] == pytest.approx(100 * (24.6 / 85.8 - 1))
    assert change.loc["sparsegpt_owl", 0.6] == pytest.approx(100 * (9.8 / 10.4 - 1))
    assert math.isnan(change.loc["sparsegpt_owl", 0.5])
    assert report.owl_change(block.loc[["wanda", "sparsegpt"]]).empty  # no OWL row: nothing to compare
    fig = report.plot_sweep(block, title="a", dense=5.68)
    assert len(fig.axes) == 2 and fig.axes[0].get_yscale() == "log"
    assert "Dense (5.68)" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_zero_shot_table_in_percent_with_mean_last_and_notes():
    zs_dense = {"boolq": 0.75, "rte": 0.60, "arc_easy": 0.70, "mean": 0.6833333}
    zs_owl = {"boolq": 0.65, "rte": 0.55, "mean": 0.60}
    details = {"missing": {"arc_easy": "no local data"}, "tasks_in_mean": ["boolq", "rte"]}
    runs = report.load_runs([
        make_result("a", "dense", 0.7, 5.0, zero_shot=zs_dense),
        make_result("a", "wanda_owl", 0.7, 20.0, zero_shot=zs_owl, details=details),
        make_result("a", "wanda", 0.7, 30.0, zero_shot={"boolq": 0.62, "rte": 0.56, "mean": 0.59}),
    ])
    spec = paper_spec(("a",), zero_shot={"models": ["a"], "methods": ["dense", "wanda", "wanda_owl"], "sparsity": 0.7,
                                         "tasks": ["boolq", "rte", "hellaswag", "arc_easy"]})
    table, notes = report.zero_shot_table(runs, spec)
    assert list(table.columns) == ["boolq", "rte", "hellaswag", "arc_easy", "Mean"]  # every task asked for, Mean last
    assert table.loc[("a", "wanda_owl"), "boolq"] == pytest.approx(65.0)
    assert table.loc[("a", "wanda_owl"), "Mean"] == pytest.approx(60.0)
    assert math.isnan(table.loc[("a", "wanda_owl"), "arc_easy"])
    assert "n/a: arc_easy not evaluated (no local data): a OWL w. Wanda" in notes
    formatted = report.format_zero_shot_table(table)
    owl = formatted[formatted["Method"] == "OWL w. Wanda"].iloc[0]
    # n/a: the run could not evaluate it; -: no number at all (wanda has no arc_easy, no run has hellaswag)
    assert (owl["boolq"], owl["rte"], owl["hellaswag"], owl["arc_easy"], owl["Mean"]) == ("**65.00**", "55.00", "-", "n/a", "**60.00**")
    assert formatted[formatted["Method"] == "Wanda"].iloc[0]["arc_easy"] == "-"
    assert formatted[formatted["Method"] == "Dense"].iloc[0]["boolq"] == "75.00"  # dense never bold
    # the runs' means cover different tasks: each stated
    assert "Mean: over boolq, rte, arc_easy (3 tasks): a Dense" in notes
    assert "Mean: over boolq, rte (2 tasks): a Wanda, a OWL w. Wanda" in notes


def test_zero_shot_table_a_task_missing_everywhere_is_a_column_of_na(tmp_path):
    missing = {"hellaswag": "no local mirror; Hugging Face offline mode is set"}
    runs = report.load_runs([
        make_result(m, method, 0.7, 1.0, zero_shot={"boolq": acc, "rte": acc, "mean": acc},
                    details={"missing": missing, "tasks_in_mean": ["boolq", "rte"]})
        for m in ("a", "b") for method, acc in (("dense", 0.7), ("wanda", 0.6))
    ])
    spec = paper_spec(("a", "b"), zero_shot={"models": ["a", "b"], "methods": ["dense", "wanda", "wanda_owl"], "sparsity": 0.7,
                                             "tasks": ["boolq", "hellaswag", "rte"]})
    table, notes = report.zero_shot_table(runs, spec)
    assert list(table.columns) == ["boolq", "hellaswag", "rte", "Mean"]
    assert notes == ["n/a: hellaswag not evaluated (no local mirror; Hugging Face offline mode is set): every run",
                     "Mean: over boolq, rte (2 tasks)", "-: no zero-shot result: a OWL w. Wanda, b OWL w. Wanda"]
    formatted = report.format_zero_shot_table(table)
    assert list(formatted["hellaswag"]) == ["n/a", "n/a", "-"] * 2
    assert list(formatted.columns) == ["Model", "Method", "boolq", "hellaswag", "rte", "Mean"]
    text = report.build_tables(runs, spec, tmp_path, ["zero_shot"])["zero_shot"]["markdown"]
    assert "| b | Wanda | **60.00** | n/a | **60.00** | **60.00** |" in text
    assert "- Mean: over boolq, rte (2 tasks)" in text


def test_ablation_table_bolds_the_lowest_perplexity():
    grid = {(3, 0.04): 30.0, (3, 0.08): 28.0, (5, 0.04): 26.0, (5, 0.08): 24.55}
    runs = report.load_runs([make_result("a", "wanda_owl", 0.7, v, hyper_m=m, lamda=l) for (m, l), v in grid.items()])
    spec = paper_spec(("a",), ablation={"models": ["a"], "method": "wanda_owl", "sparsity": 0.7, "Hyper_m": [3, 5], "Lamda": [0.04, 0.08]})
    table = report.ablation_table(runs, spec, "a")
    for (m, l), v in grid.items():
        assert table.at[float(m), float(l)] == v
    formatted = report.format_ablation_table(table)
    assert list(formatted.columns) == ["M", "λ=0.04", "λ=0.08"]
    assert formatted.iloc[1].tolist() == ["5", "26.00", "**24.55**"]
    assert report.ablation_baseline(runs, spec, "a") is None  # no uniform Wanda run at 70%


def test_ablation_cells_show_their_change_against_the_uniform_baseline(tmp_path):
    grid = {(3, 0.04): 30.0, (3, 0.08): 20.0, (5, 0.04): 25.0, (5, 0.08): 24.55}
    results = [make_result("a", "wanda_owl", 0.7, v, hyper_m=m, lamda=l) for (m, l), v in grid.items()]
    results += [make_result("a", "wanda", 0.7, 25.0), make_result("a", "wanda", 0.6, 1.0)]  # only the 70% run counts
    runs = report.load_runs(results)
    spec = paper_spec(("a",), ablation={"models": ["a"], "method": "wanda_owl", "sparsity": 0.7, "Hyper_m": [3, 5], "Lamda": [0.04, 0.08]})
    assert report.ablation_baseline(runs, spec, "a") == ("wanda", 25.0)
    formatted = report.format_ablation_table(report.ablation_table(runs, spec, "a"), baseline=25.0)
    assert formatted.iloc[0].tolist() == ["3", "30.00 (+20.0%)", "**20.00** (-20.0%)"]
    assert formatted.iloc[1].tolist() == ["5", "25.00 (+0.0%)", "24.55 (-1.8%)"]
    text = report.build_tables(runs, spec, tmp_path, ["ablation"])["ablation_a"]["markdown"]
    assert "- In brackets: change against uniform Wanda at 70% (25.00); negative is better." in text


# ---- files -----------------------------------------------------------------------------------
def full_spec_and_runs():
    runs, values = sweep_runs()
    extra = [make_result("a", m, 0.7, PAPER["LLaMA-7B"][m], zero_shot={"boolq": 0.6, "mean": 0.6}) for m in ("dense", "magnitude")]
    extra += [make_result("a", "wanda_owl", 0.7, 30.0, hyper_m=3, lamda=0.04)]
    runs = pd.concat([runs, report.load_runs(extra)], ignore_index=True)
    spec = paper_spec(
        ("a",),
        sweep={"models": ["a"], "methods": list(values), "sparsities": [0.5, 0.6, 0.7]},
        ablation={"models": ["a"], "method": "wanda_owl", "sparsity": 0.7, "Hyper_m": [3, 5], "Lamda": [0.04, 0.08]},
        zero_shot={"models": ["a"], "methods": ["dense", "magnitude"], "sparsity": 0.7, "tasks": ["boolq"]},
    )
    return runs, spec


def test_build_tables_writes_what_table_files_names(tmp_path):
    runs, spec = full_spec_and_runs()
    written = report.build_tables(runs, spec, tmp_path)
    names = report.table_files(spec)
    assert names == ["main.md", "main.csv", "sweep.md", "sweep.csv", "zero_shot.md", "zero_shot.csv", "ablation_a.md", "ablation_a.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    assert set(written) == {"main", "sweep", "zero_shot", "ablation_a"}
    main = pd.read_csv(tmp_path / "main.csv", index_col="method")
    assert main.at["wanda_owl", "a"] == pytest.approx(24.6)  # the sweep's 0.7 run
    assert "24.60 (-61.20)" in (tmp_path / "main.md").read_text()
    assert report.table_files(spec, ["ablation"]) == ["ablation_a.md", "ablation_a.csv"]
    with pytest.raises(ValueError, match="unknown section"):
        report.table_files(spec, ["nope"])


def test_build_figures_writes_png_and_pdf(tmp_path):
    runs, spec = full_spec_and_runs()
    written = report.build_figures(runs, spec, tmp_path)
    names = report.figure_files(spec)
    assert names == ["layerwise_a.png", "layerwise_a.pdf", "sweep_a.png", "sweep_a.pdf", "ablation_a.png", "ablation_a.pdf"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    assert {k: [p.name for p in v] for k, v in written.items()}["sweep_a"] == ["sweep_a.png", "sweep_a.pdf"]
    for name in names:
        data = (tmp_path / name).read_bytes()
        assert data[:4] == (b"\x89PNG" if name.endswith(".png") else b"%PDF")
    again = tmp_path / "again"
    report.build_figures(runs, spec, again)
    for name in names:  # a rebuild from the same results is byte for byte the same (no dates)
        assert (again / name).read_bytes() == (tmp_path / name).read_bytes(), name
        assert b"/CreationDate" not in (again / name).read_bytes(), name  # not only the same second


def test_infer_spec_from_a_folder_of_results():
    runs, _ = full_spec_and_runs()
    spec = report.infer_spec(runs)
    assert spec["main"]["sparsity"] == 0.7
    assert spec["models"][0]["Hyper_m"] == 5 and spec["models"][0]["Lamda"] == 0.08
    assert spec["sweep"]["sparsities"] == [0.5, 0.6, 0.7]
    assert spec["ablation"]["Hyper_m"] == [3.0, 5.0] and spec["ablation"]["Lamda"] == [0.04, 0.08]
    assert spec["zero_shot"]["tasks"] == ["boolq"]


# ---- allocation and one run ------------------------------------------------------------------
def test_allocation_record_from_lod():
    lod = {"model": "m", "n_blocks": 4, "block_params": [10, 10, 20, 20],
           "outlier_ratios": {"3": [4.0, 3.0, 2.0, 1.0], "5": [1.0, 2.0, 3.0, 4.0]}}
    record = report.allocation_record(lod, 0.7, 5.0, 0.08)
    assert record["uniform"] == [0.7] * 4
    assert record["owl_mean"] == pytest.approx(0.7)
    assert record["owl_max"] - record["owl_min"] == pytest.approx(0.16)
    assert record["owl"][0] > record["owl"][-1]  # more outliers, less pruning
    assert "owl_param_weighted_mean" in record
    weighted = report.allocation_record(lod, 0.7, 5, 0.08, owl_weighting="params")
    assert weighted["owl_param_weighted_mean"] == pytest.approx(0.7)
    with pytest.raises(KeyError, match="not M=7"):
        report.allocation_record(lod, 0.7, 7, 0.08)


def test_run_summary_and_single_run_figures():
    result = make_result("a", "wanda_owl", 0.7, 24.5512, zero_shot={"boolq": 0.6, "mean": 0.6})
    summary = report.run_summary(result)
    assert summary.at["WikiText-2 perplexity", "value"] == "24.5512"
    assert summary.at["method", "value"] == "OWL w. Wanda"
    assert summary.at["zero-shot mean accuracy (%)", "value"] == "60.0"
    zs_only = {**result, "ppl": {}, "zero_shot_details": {"missing": {"rte": "no rows"}, "tasks_in_mean": ["boolq"],
                                                           "source": {"boolq": "local:x"}}, "settings": {"tasks": ["boolq", "rte"]}}
    assert "WikiText-2 perplexity" not in report.run_summary(zs_only).index  # a zeroshot.json has none
    tasks = report.zero_shot_summary(zs_only)
    assert tasks.to_dict("index") == {"boolq": {"accuracy (%)": "60.00", "note": "local:x"},
                                      "rte": {"accuracy (%)": "n/a", "note": "no rows"},
                                      "mean": {"accuracy (%)": "60.00", "note": "over boolq"}}
    fig = report.plot_layerwise(result["outlier_ratios"], result["layer_sparsities"], 0.7, achieved=result["layer_achieved_sparsities"])
    assert len(fig.axes) == 2  # sparsity and the LOD bars
    assert len(report.plot_layerwise(None, [0.7] * 4, 0.7).axes) == 1
    lod = {"model": "m", "outlier_ratios": {"3": [1.0, 2.0], "5": [0.5, 1.0]}}
    assert len(report.plot_lod(lod).axes[0].patches) == 4


def test_markdown_escapes_pipes():
    text = report.to_markdown(pd.DataFrame({"a|b": ["x|y"]}))
    assert text.splitlines()[0] == "| a\\|b |"
    assert text.splitlines()[2] == "| x\\|y |"
