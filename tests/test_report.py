"""Tables and figures from result dicts (owl/report/): numbers, spread over seeds, paired ratios, files."""

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


def make_result(model, method, sparsity, ppl, hyper_m=5, lamda=0.08, n_blocks=4, zero_shot=None, details=None, seed=0):
    sparsity = 0.0 if method == "dense" else sparsity
    if report.is_owl(method):
        layer = [sparsity - lamda + 2 * lamda * i / (n_blocks - 1) for i in range(n_blocks)]
    else:
        layer = [sparsity] * n_blocks
    result = {
        "model": model, "prune_method": method, "sparsity_ratio": sparsity, "sparsity_type": "unstructured",
        "Hyper_m": hyper_m, "Lamda": lamda, "nsamples": 4, "seqlen": 64, "seed": seed,
        "device": "cpu", "dtype": "float32", "eval_dtype": "float32",
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
            assert table.at[method, model] == value  # one seed: the geometric mean is the value itself


def test_main_table_with_one_seed_says_n_and_gives_no_interval():
    cells = report.main_cells(paper_runs(), paper_spec())
    rows = md_rows(report.to_markdown(report.format_main_table(cells)))
    assert rows["Method"] == ["Method", "Layerwise Sparsity", "Weight Update", "LLaMA-7B", "OPT-6.7B"]
    assert rows["Dense"] == ["Dense", "-", "-", "5.68", "10.13"]  # no calibration data: one run, printed alone
    assert rows["Magnitude"][1:] == ["Uniform", "no", "48419.12", "290985.03"]
    assert rows["Wanda"][1:] == ["Uniform", "no", "85.77 (n=1)", "162.92 (n=1)"]
    assert rows["OWL w. Wanda"][1:] == ["Non-Uniform", "no", "24.55 (n=1)", "40.22 (n=1)"]
    # the paired ratio row: one seed is no interval, so no bold and no verdict
    assert rows["OWL w. Wanda / Wanda"][1:] == ["paired ratio", "", f"{24.55 / 85.77:.3f} (n=1)", f"{40.22 / 162.92:.3f} (n=1)"]
    assert rows["OWL w. SparseGPT / SparseGPT"][3:] == [f"{19.49 / 26.30:.3f} (n=1)", f"{22.48 / 20.29:.3f} (n=1)"]
    text = report.to_markdown(report.format_main_table(cells))
    assert "**" not in text and "better" not in text and "worse" not in text
    notes = report.ppl_notes(cells)
    assert "Dense and Magnitude read no calibration data: one run each, shown once (no seed spread)." in notes
    assert any(n.startswith("Ratio: OWL / its uniform method on the same calibration seed") and "t-interval" in n for n in notes)


def test_missing_runs_are_dashes_and_an_owl_row_without_a_baseline_has_no_ratio_row():
    runs = report.load_runs([make_result("a", "wanda", 0.7, 10.0), make_result("a", "sparsegpt_owl", 0.7, 8.0)])
    cells = report.main_cells(runs, paper_spec(("a",)))
    table = report.main_table(runs, paper_spec(("a",)))
    assert math.isnan(table.at["wanda_owl", "a"])
    formatted = report.format_main_table(cells)
    assert formatted.loc[formatted["Method"] == "OWL w. Wanda", "a"].item() == "-"
    assert formatted.loc[formatted["Method"] == "Wanda", "a"].item() == "10.00 (n=1)"
    assert formatted.loc[formatted["Method"] == "OWL w. SparseGPT", "a"].item() == "8.00 (n=1)"
    assert not formatted["Method"].str.contains("/").any()  # no pair anywhere: no ratio rows


def test_main_table_picks_the_models_owl_setting_among_ablation_runs():
    results = [make_result("a", m, 0.7, PAPER["LLaMA-7B"][m]) for m in MAIN_METHODS]
    results.append(make_result("a", "wanda_owl", 0.7, 99.0, hyper_m=3, lamda=0.2))
    results.append(make_result("a", "wanda_owl", 0.7, 98.0, hyper_m=3, lamda=0.2, seed=1))
    results.append(make_result("a", "wanda_owl", 0.5, 7.0))  # another sparsity
    spec = paper_spec(("a",))
    assert report.main_table(report.load_runs(results), spec).at["wanda_owl", "a"] == 24.55
    spec["models"][0].update(Hyper_m=3, Lamda=0.2)
    assert report.main_table(report.load_runs(results), spec).at["wanda_owl", "a"] == pytest.approx(math.sqrt(99.0 * 98.0))


def test_load_runs_identity_from_the_workflow_overrides_the_file(tmp_path):
    path = tmp_path / "run" / "result.json"
    report.write_json(path, make_result("/some/local/path", "wanda_owl", 0.7, 12.5, seed=3))
    runs = report.load_runs([{"path": str(path), "model": "tiny", "method": "wanda_owl", "sparsity": 0.7, "Hyper_m": 5, "Lamda": 0.08}])
    assert runs.loc[0, "model"] == "tiny" and runs.loc[0, "ppl"] == 12.5 and runs.loc[0, "seed"] == 3
    assert report.load_runs([path.parent]).loc[0, "model"] == "/some/local/path"  # a folder works too
    assert report.find_results(tmp_path) == [str(path)]
    no_seed = make_result("a", "wanda", 0.7, 1.0)
    del no_seed["seed"]
    assert report.load_runs([no_seed]).loc[0, "seed"] == 0  # the kit's default seed


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


# ---- several seeds ---------------------------------------------------------------------------
WANDA = [80.0, 90.0, 100.0, 110.0, 85.0]          # seeds 0..4
WANDA_OWL_RATIO = [0.30, 0.28, 0.32, 0.25, 0.31]  # OWL / Wanda per seed: wholly below 1
SPARSEGPT = [20.0, 22.0, 24.0, 21.0, 23.0]
SPARSEGPT_OWL_RATIO = [0.9, 1.1, 1.05, 0.95, 1.0]  # the interval holds 1
T975_4 = 2.7764451051977934  # Student's t, 97.5%, 4 degrees of freedom


def seeded_results(model="a", sparsity=0.7, drop=()):
    """Five seeds of the four calibrated methods, dense and magnitude once; ``drop``: (method, seed) left out."""
    results = [make_result(model, "dense", 0.0, 5.68), make_result(model, "magnitude", sparsity, 1e4)]
    for seed in range(5):
        values = {"wanda": WANDA[seed], "wanda_owl": WANDA[seed] * WANDA_OWL_RATIO[seed],
                  "sparsegpt": SPARSEGPT[seed], "sparsegpt_owl": SPARSEGPT[seed] * SPARSEGPT_OWL_RATIO[seed]}
        results += [make_result(model, m, sparsity, v, seed=seed) for m, v in values.items() if (m, seed) not in drop]
    return results


def geo_mean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


def t_interval(ratios, t=T975_4):
    logs = [math.log(r) for r in ratios]
    mean = sum(logs) / len(logs)
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (len(logs) - 1))
    half = t * sd / math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def test_cells_aggregate_over_seeds_on_the_log_scale():
    cells = report.main_cells(report.load_runs(seeded_results()), paper_spec(("a",))).set_index("method")
    assert cells.at["wanda", "mean"] == pytest.approx(geo_mean(WANDA))
    assert (cells.at["wanda", "lower"], cells.at["wanda", "upper"], cells.at["wanda", "n"]) == (80.0, 110.0, 5)
    assert cells.at["wanda", "seeds"] == [0, 1, 2, 3, 4]
    ratio, lower, upper = t_interval(WANDA_OWL_RATIO)
    assert cells.at["wanda_owl", "ratio"] == pytest.approx(ratio)
    assert (cells.at["wanda_owl", "ratio_lower"], cells.at["wanda_owl", "ratio_upper"]) == (pytest.approx(lower), pytest.approx(upper))
    assert cells.at["wanda_owl", "n_pairs"] == 5 and cells.at["wanda_owl", "wins"] == 5
    assert cells.at["sparsegpt_owl", "wins"] == 2  # 0.9 and 0.95; a ratio of exactly 1 is no win
    assert cells.at["dense", "n"] == 1 and not cells.at["dense", "calibrated"]


def test_main_table_markdown_with_seeds_bolds_only_an_interval_that_excludes_one(tmp_path):
    runs = report.load_runs(seeded_results())
    written = report.build_tables(runs, paper_spec(("a",)), tmp_path, ["main"])
    rows = md_rows(written["main"]["markdown"])
    assert rows["Wanda"][3] == f"{geo_mean(WANDA):.2f} (80.00–110.00, n=5)"
    assert rows["Dense"][3] == "5.68" and rows["Magnitude"][3] == "10000.00"  # once, no spread
    ratio, lower, upper = t_interval(WANDA_OWL_RATIO)
    assert rows["OWL w. Wanda / Wanda"][3] == f"**{ratio:.3f}** [{lower:.3f}, {upper:.3f}] better, wins 5/5"
    ratio, lower, upper = t_interval(SPARSEGPT_OWL_RATIO)
    assert rows["OWL w. SparseGPT / SparseGPT"][3] == f"{ratio:.3f} [{lower:.3f}, {upper:.3f}], wins 2/5"  # holds 1: no claim
    assert written["main"]["markdown"].count("**") == 2
    csv = pd.read_csv(tmp_path / "main.csv", index_col="method")
    assert list(csv.columns) == ["a", "a_gsd", "a_lower", "a_upper", "a_n", "a_ratio", "a_ratio_lower", "a_ratio_upper", "a_n_pairs", "a_wins"]
    assert csv.at["wanda", "a"] == pytest.approx(geo_mean(WANDA), rel=1e-5)
    assert (csv.at["wanda", "a_lower"], csv.at["wanda", "a_upper"], csv.at["wanda", "a_n"]) == (80.0, 110.0, 5)
    ratio, lower, upper = t_interval(WANDA_OWL_RATIO)
    assert csv.at["wanda_owl", "a_ratio_lower"] == pytest.approx(lower, rel=1e-5)
    assert csv.at["wanda_owl", "a_ratio_upper"] == pytest.approx(upper, rel=1e-5)
    assert csv.at["wanda_owl", "a_n_pairs"] == 5 and csv.at["wanda_owl", "a_wins"] == 5
    assert math.isnan(csv.at["wanda", "a_ratio"])  # a uniform row has no ratio


def test_a_seed_on_one_side_only_is_reported_not_dropped(tmp_path):
    runs = report.load_runs(seeded_results(drop={("wanda", 4), ("wanda_owl", 1)}))
    cells = report.main_cells(runs, paper_spec(("a",))).set_index("method")
    assert cells.at["wanda_owl", "n_pairs"] == 3  # seeds 0, 2, 3
    assert cells.at["wanda_owl", "only_owl"] == [4] and cells.at["wanda_owl", "only_baseline"] == [1]
    paired = [WANDA_OWL_RATIO[s] for s in (0, 2, 3)]
    assert cells.at["wanda_owl", "ratio"] == pytest.approx(geo_mean(paired))
    assert cells.at["wanda_owl", "ratio_upper"] == pytest.approx(t_interval(paired, t=4.302652729749462)[2])
    text = report.build_tables(runs, paper_spec(("a",)), tmp_path, ["main"])["main"]["markdown"]
    assert md_rows(text)["OWL w. Wanda / Wanda"][3].startswith(f"**{geo_mean(paired):.3f}**†")
    assert ("- † Unpaired seeds, left out of the ratio: a OWL w. Wanda at 70% (M=5, λ=0.08): seed 4 without a Wanda run; "
            "Wanda seed 1 without an OWL run.") in text


def test_two_runs_with_the_same_seed_are_an_error_not_a_silent_pick():
    from owl.errors import OwlError

    runs = report.load_runs([make_result("a", "wanda", 0.7, 10.0, seed=1), make_result("a", "wanda", 0.7, 11.0, seed=1)])
    with pytest.raises(OwlError, match="two runs of a wanda at sparsity 0.7 with seed 1"):
        report.main_cells(runs, paper_spec(("a",)))


def test_a_calibration_free_baseline_pairs_with_every_seed():
    results = [make_result("a", "magnitude", 0.7, 100.0)]
    results += [make_result("a", "magnitude_owl", 0.7, v, seed=s) for s, v in enumerate([50.0, 40.0, 60.0])]
    spec = paper_spec(("a",), main={"sparsity": 0.7, "models": ["a"], "methods": ["magnitude", "magnitude_owl"]})
    cells = report.main_cells(report.load_runs(results), spec).set_index("method")
    assert cells.at["magnitude_owl", "n_pairs"] == 3 and cells.at["magnitude_owl", "only_owl"] == []
    assert cells.at["magnitude_owl", "ratio"] == pytest.approx(geo_mean([0.5, 0.4, 0.6]))
    assert any("OWL w. Magnitude's ratio pairs each of its seeds with that one Magnitude run" in n for n in report.ppl_notes(cells.reset_index()))


def test_a_table_that_mixes_devices_says_so():
    results = seeded_results()
    results[-1] = {**results[-1], "device": "cuda", "eval_dtype": "bfloat16"}
    cells = report.main_cells(report.load_runs(results), paper_spec(("a",)))
    assert "The runs of this table differ in device (cpu, cuda), eval_dtype (bfloat16, float32)." in report.ppl_notes(cells)
    same = seeded_results()
    same[-1] = {**same[-1], "attn_implementation": "sdpa"}  # recorded on one run only: unknown elsewhere, not different
    assert not any("differ in" in n for n in report.ppl_notes(report.main_cells(report.load_runs(same), paper_spec(("a",)))))


def test_a_table_that_mixes_cpu_models_says_so():
    def on(cpu):
        return {"device_type": "cpu", "native_bf16": True, "cpu": {"model": cpu, "flags": ["avx2"]}}
    results = [{**r, "precision": on("AMD EPYC")} for r in seeded_results()]
    cells = report.main_cells(report.load_runs(results), paper_spec(("a",)))
    assert not any("differ in" in n for n in report.ppl_notes(cells))
    results[-1] = {**results[-1], "precision": on("Intel(R) Xeon(R) Processor")}
    cells = report.main_cells(report.load_runs(results), paper_spec(("a",)))
    assert "The runs of this table differ in cpu (AMD EPYC, Intel(R) Xeon(R) Processor)." in report.ppl_notes(cells)


def test_one_cpu_name_with_other_flags_or_kernels_is_a_mixed_float_path():
    # "AMD EPYC" names both an AVX2-only Zen 3 and an AVX-512 Zen 4: the flags and kernels tell them apart
    def on(flags, kernels=None):
        record = {"device_type": "cpu", "native_bf16": False, "cpu": {"model": "AMD EPYC", "flags": flags}}
        return {**record, "cpu_kernels": {"capability": kernels, "settings": {}}} if kernels else record
    results = [{**r, "precision": on(["avx2"])} for r in seeded_results()]
    results[-1] = {**results[-1], "precision": on(["avx2", "avx512f"])}
    notes = report.ppl_notes(report.main_cells(report.load_runs(results), paper_spec(("a",))))
    assert "The runs of this table differ in cpu flags (avx2, avx2 avx512f)." in notes
    results = [{**r, "precision": on(["avx2", "avx512f"], "AVX512")} for r in seeded_results()]
    results[0] = {**results[0], "precision": on(["avx2", "avx512f"], "AVX2")}  # the same CPU with kernels pinned to AVX2
    results[1] = {**results[1], "precision": on(["avx2", "avx512f"])}  # no kernel record: unknown, not different
    notes = report.ppl_notes(report.main_cells(report.load_runs(results), paper_spec(("a",))))
    assert "The runs of this table differ in cpu kernels (AVX2, AVX512)." in notes


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
    formatted = report.format_sweep_table(report.sweep_cells(runs, spec))
    assert list(formatted.columns) == ["Model", "Method", "50%", "60%", "70%"]
    assert list(formatted["Method"]) == ["Wanda", "OWL w. Wanda", "OWL w. Wanda / Wanda", "SparseGPT", "OWL w. SparseGPT",
                                         "OWL w. SparseGPT / SparseGPT"]
    owl = formatted[formatted["Method"] == "OWL w. Wanda"].iloc[0]
    assert owl["70%"] == "24.60 (n=1)"
    assert formatted[formatted["Method"] == "OWL w. Wanda / Wanda"].iloc[0]["60%"] == f"{9.5 / 10.7:.3f} (n=1)"


def test_sweep_with_seeds_in_csv_and_markdown(tmp_path):
    results = seeded_results(sparsity=0.7) + [r for r in seeded_results(sparsity=0.5) if r["prune_method"] != "dense"]
    spec = paper_spec(("a",), sweep={"models": ["a"], "methods": ["wanda", "wanda_owl"], "sparsities": [0.5, 0.7]})
    text = report.build_tables(report.load_runs(results), spec, tmp_path, ["sweep"])["sweep"]["markdown"]
    assert f"| a | Wanda | {geo_mean(WANDA):.2f} (80.00–110.00, n=5) |" in text
    csv = pd.read_csv(tmp_path / "sweep.csv", index_col=["model", "method"])
    assert csv.loc[("a", "wanda_owl"), "0.5_ratio"] == pytest.approx(geo_mean(WANDA_OWL_RATIO), rel=1e-5)
    assert csv.loc[("a", "wanda_owl"), "0.7_n_pairs"] == 5 and csv.loc[("a", "wanda"), "0.7_n"] == 5


def zs_details(stderr, missing=None, tasks_in_mean=None):
    return {"missing": missing or {}, "tasks_in_mean": tasks_in_mean or list(stderr), "stderr": stderr}


def test_zero_shot_table_in_percent_with_stderr_mean_last_and_notes():
    zs_dense = {"boolq": 0.75, "rte": 0.60, "arc_easy": 0.70, "mean": 0.6833333}
    zs_owl = {"boolq": 0.65, "rte": 0.55, "mean": 0.60}
    runs = report.load_runs([
        make_result("a", "dense", 0.7, 5.0, zero_shot=zs_dense, details=zs_details({"boolq": 0.01, "rte": 0.03, "arc_easy": 0.02})),
        make_result("a", "wanda_owl", 0.7, 20.0, zero_shot=zs_owl,
                    details=zs_details({"boolq": 0.03, "rte": 0.04}, missing={"arc_easy": "no local data"})),
        make_result("a", "wanda", 0.7, 30.0, zero_shot={"boolq": 0.62, "rte": 0.56, "mean": 0.59}),  # no stderr recorded
    ])
    spec = paper_spec(("a",), zero_shot={"models": ["a"], "methods": ["dense", "wanda", "wanda_owl"], "sparsity": 0.7,
                                         "tasks": ["boolq", "rte", "hellaswag", "arc_easy"]})
    table, notes = report.zero_shot_table(runs, spec)
    assert list(table.columns) == ["boolq", "rte", "hellaswag", "arc_easy", "Mean"]  # every task asked for, Mean last
    assert table.loc[("a", "wanda_owl"), "boolq"] == pytest.approx(65.0)
    assert table.loc[("a", "wanda_owl"), "Mean"] == pytest.approx(60.0)
    assert table.attrs["stderr"].loc[("a", "wanda_owl"), "Mean"] == pytest.approx(2.5)  # sqrt(3² + 4²) / 2 in %
    assert math.isnan(table.loc[("a", "wanda_owl"), "arc_easy"])
    assert "n/a: arc_easy not evaluated (no local data): a OWL w. Wanda" in notes
    formatted = report.format_zero_shot_table(table)
    owl = formatted[formatted["Method"] == "OWL w. Wanda"].iloc[0]
    # n/a: the run could not evaluate it; -: no number at all (wanda has no arc_easy, no run has hellaswag)
    assert (owl["boolq"], owl["rte"], owl["hellaswag"], owl["arc_easy"], owl["Mean"]) == ("65.00 ± 3.00", "55.00 ± 4.00", "-", "n/a", "60.00 ± 2.50")
    assert formatted[formatted["Method"] == "Wanda"].iloc[0]["arc_easy"] == "-"
    assert formatted[formatted["Method"] == "Wanda"].iloc[0]["boolq"] == "62.00"  # no stderr recorded: none shown
    assert formatted[formatted["Method"] == "Dense"].iloc[0]["boolq"] == "75.00 ± 1.00"
    # the runs' means cover different tasks: each stated
    assert "Mean: over boolq, rte, arc_easy (3 tasks): a Dense" in notes
    assert "Mean: over boolq, rte (2 tasks): a Wanda, a OWL w. Wanda" in notes
    assert any(n.startswith("±: lm-eval's standard error of each accuracy") and "sqrt(sum se²)/k" in n for n in notes)
    csv = report.zero_shot_csv(table)
    assert list(csv.columns) == ["boolq", "boolq_stderr", "rte", "rte_stderr", "hellaswag", "hellaswag_stderr", "arc_easy",
                                 "arc_easy_stderr", "Mean", "Mean_stderr", "n"]
    assert csv.loc[("a", "dense"), "Mean_stderr"] == pytest.approx(100 * math.sqrt(0.01**2 + 0.03**2 + 0.02**2) / 3)


def test_zero_shot_with_seeds_averages_and_shows_the_range():
    runs = report.load_runs([make_result("a", "wanda", 0.7, 30.0, seed=s, zero_shot={"boolq": acc, "mean": acc},
                                         details=zs_details({"boolq": se})) for s, (acc, se) in enumerate([(0.60, 0.03), (0.64, 0.04)])])
    spec = paper_spec(("a",), zero_shot={"models": ["a"], "methods": ["wanda"], "sparsity": 0.7, "tasks": ["boolq"]})
    table, notes = report.zero_shot_table(runs, spec)
    assert table.loc[("a", "wanda"), "boolq"] == pytest.approx(62.0)
    assert table.attrs["stderr"].loc[("a", "wanda"), "boolq"] == pytest.approx(math.sqrt((9 + 16) / 2))
    assert report.format_zero_shot_table(table).iloc[0]["boolq"] == f"62.00 ± {math.sqrt(12.5):.2f} (60.00–64.00, n=2)"
    assert any("With several calibration seeds" in n for n in notes)


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
    assert notes[:3] == ["n/a: hellaswag not evaluated (no local mirror; Hugging Face offline mode is set): every run",
                         "Mean: over boolq, rte (2 tasks)", "-: no zero-shot result: a OWL w. Wanda, b OWL w. Wanda"]
    formatted = report.format_zero_shot_table(table)
    assert list(formatted["hellaswag"]) == ["n/a", "n/a", "-"] * 2
    assert list(formatted.columns) == ["Model", "Method", "boolq", "hellaswag", "rte", "Mean"]
    text = report.build_tables(runs, spec, tmp_path, ["zero_shot"])["zero_shot"]["markdown"]
    assert "| b | Wanda | 60.00 | n/a | 60.00 | 60.00 |" in text
    assert "- Mean: over boolq, rte (2 tasks)" in text


def ablation_spec():
    return paper_spec(("a",), ablation={"models": ["a"], "method": "wanda_owl", "sparsity": 0.7, "Hyper_m": [3, 5], "Lamda": [0.04, 0.08]})


def test_ablation_table_holds_the_geometric_means():
    grid = {(3, 0.04): 30.0, (3, 0.08): 28.0, (5, 0.04): 26.0, (5, 0.08): 24.55}
    runs = report.load_runs([make_result("a", "wanda_owl", 0.7, v, hyper_m=m, lamda=l) for (m, l), v in grid.items()])
    table = report.ablation_table(runs, ablation_spec(), "a")
    for (m, l), v in grid.items():
        assert table.at[float(m), float(l)] == v
    formatted = report.format_ablation_table(report.ablation_cells(runs, ablation_spec(), "a"))
    assert list(formatted.columns) == ["M", "λ=0.04", "λ=0.08"]
    assert formatted.iloc[1].tolist() == ["5", "26.00 (n=1)", "24.55 (n=1)"]  # no baseline run: no ratio
    assert report.ablation_baseline(runs, ablation_spec(), "a") is None


def test_ablation_cells_show_their_paired_ratio_to_the_uniform_baseline(tmp_path):
    results = [make_result("a", "wanda", 0.7, w, seed=s) for s, w in enumerate([25.0, 20.0, 30.0])]
    results.append(make_result("a", "wanda", 0.6, 1.0))  # only the 70% runs count
    ratios = {(3, 0.04): [1.2, 1.25, 1.3], (3, 0.08): [0.8, 0.75, 0.85], (5, 0.04): [0.9, 1.1, 1.0]}
    for (m, l), rs in ratios.items():
        results += [make_result("a", "wanda_owl", 0.7, w * r, hyper_m=m, lamda=l, seed=s) for s, (w, r) in enumerate(zip([25.0, 20.0, 30.0], rs))]
    results.append(make_result("a", "wanda_owl", 0.7, 24.55, hyper_m=5, lamda=0.08))  # a corner with one seed
    runs = report.load_runs(results)
    assert report.ablation_baseline(runs, ablation_spec(), "a") == ("wanda", pytest.approx(geo_mean([25.0, 20.0, 30.0])))
    cells = report.ablation_cells(runs, ablation_spec(), "a")
    formatted = report.format_ablation_table(cells)
    ratio, lower, upper = t_interval(ratios[(3, 0.08)], t=4.302652729749462)
    assert formatted.iloc[0]["λ=0.08"].endswith(f"; ratio **{ratio:.3f}** [{lower:.3f}, {upper:.3f}] better, wins 3/3")
    ratio, lower, upper = t_interval(ratios[(3, 0.04)], t=4.302652729749462)
    assert formatted.iloc[0]["λ=0.04"].endswith(f"; ratio **{ratio:.3f}** [{lower:.3f}, {upper:.3f}] worse, wins 0/3")
    assert "**" not in formatted.iloc[1]["λ=0.04"]  # holds 1
    # seed 0 only: no interval; the baseline's seeds 1 and 2 have no partner here, and the notes say so
    assert formatted.iloc[1]["λ=0.08"] == f"24.55 (n=1); ratio {24.55 / 25.0:.3f}† (n=1)"
    text = report.build_tables(runs, ablation_spec(), tmp_path, ["ablation"])["ablation_a"]["markdown"]
    assert f"- Each ratio is the change against uniform Wanda at 70% ({geo_mean([25.0, 20.0, 30.0]):.2f}, geometric mean of 3 seeds) on the same seed." in text
    assert "a OWL w. Wanda at 70% (M=5, λ=0.08): Wanda seeds 1, 2 without an OWL run." in text
    csv = pd.read_csv(tmp_path / "ablation_a.csv", index_col="Hyper_m")
    assert csv.at[3.0, "0.08_n_pairs"] == 3 and csv.at[5.0, "0.08_n_pairs"] == 1 and math.isnan(csv.at[5.0, "0.08_ratio_lower"])
    fig = report.plot_ablation(cells, title="a", baseline=("uniform Wanda", 25.0))
    framed = [p for p in fig.axes[0].patches if p.get_linewidth() == 2]
    assert len(framed) == 2  # the two cells whose interval excludes 0
    assert "framed: 95% CI excludes 0" in fig.axes[0].get_title()


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
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no temporary file left
    assert set(written) == {"main", "sweep", "zero_shot", "ablation_a"}
    main = pd.read_csv(tmp_path / "main.csv", index_col="method")
    assert main.at["wanda_owl", "a"] == pytest.approx(24.6)  # the sweep's 0.7 run
    assert main.at["wanda_owl", "a_ratio"] == pytest.approx(24.6 / 85.8, rel=1e-5)
    assert "24.60 (n=1)" in (tmp_path / "main.md").read_text()
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


def test_figures_with_seeds_draw_bars_bands_and_whiskers(tmp_path):
    results = seeded_results(sparsity=0.7) + [r for r in seeded_results(sparsity=0.5) if r["prune_method"] != "dense"]
    for seed, r in enumerate(r for r in results if r["prune_method"] == "wanda_owl" and r["sparsity_ratio"] == 0.7):
        r["outlier_ratios"] = [1.0 + seed, 2.0, 3.0 - 0.1 * seed, 4.0]
        r["layer_sparsities"] = [0.62 + 0.01 * seed, 0.68, 0.72, 0.78 - 0.01 * seed]
    runs = report.load_runs(results)
    spec = paper_spec(("a",), sweep={"models": ["a"], "methods": ["wanda", "wanda_owl", "sparsegpt", "sparsegpt_owl"], "sparsities": [0.5, 0.7]})
    cells = report.sweep_cells(runs, spec)
    fig = report.plot_sweep(cells, title="a", dense=5.68)
    left, right = fig.axes
    assert left.get_yscale() == "log" and "Dense (5.68)" in [t.get_text() for t in left.get_legend().get_texts()]
    bars = [c for c in left.containers if c.has_yerr]
    assert len(bars) == 4  # a bar over the seeds' range per method
    caps = bars[0].lines[1]  # Wanda: from the min to the max seed at each sparsity
    assert (float(caps[0].get_ydata()[0]), float(caps[1].get_ydata()[0])) == (pytest.approx(80.0), pytest.approx(110.0))
    intervals = [c for c in right.containers if c.has_yerr]
    assert len(intervals) == 2  # OWL w. Wanda and OWL w. SparseGPT, each with its t-interval
    ratio, lower, upper = t_interval(WANDA_OWL_RATIO)
    caps = intervals[0].lines[1]
    assert float(caps[0].get_ydata()[0]) == pytest.approx(lower)
    assert float(caps[1].get_ydata()[0]) == pytest.approx(upper)
    assert right.get_yscale() == "log"  # t-intervals on log ratios: symmetric on this axis
    written = report.build_figures(runs, spec, tmp_path, ["layerwise"])
    assert [p.name for p in written["layerwise_a"]] == ["layerwise_a.png", "layerwise_a.pdf"]
    owl = [r for r in results if r["prune_method"] == "wanda_owl" and r["sparsity_ratio"] == 0.7]
    fig = report.plot_layerwise([r["outlier_ratios"] for r in owl], [r["layer_sparsities"] for r in owl], 0.7)
    ax, ax2 = fig.axes
    assert len(ax.collections) == 1  # the band of OWL's per-block sparsity over the seeds
    whiskers = [c for c in ax2.containers if getattr(c, "errorbar", None) is not None]
    assert whiskers and len(whiskers[0].errorbar.lines[2][0].get_segments()) == 4  # a whisker per block


def test_seeded_result_files_in_folders_give_tables_and_figures_with_intervals(tmp_path):
    """Result files as a workflow with seeds writes them (the seed only inside each file), read
    back by find_results / load_runs / infer_spec, as the notebooks do by hand."""
    results = seeded_results(sparsity=0.7) + [r for r in seeded_results(sparsity=0.5) if r["prune_method"] not in ("dense", "magnitude")]
    for i, result in enumerate(results):
        report.write_json(tmp_path / "runs" / "a" / f"run{i:02d}" / "result.json", result)
    runs = report.load_runs(report.find_results(tmp_path / "runs"))
    assert sorted(set(runs["seed"])) == [0, 1, 2, 3, 4] and len(runs) == len(results)
    spec = report.infer_spec(runs)
    assert spec["main"]["sparsity"] == 0.7 and spec["sweep"]["sparsities"] == [0.5, 0.7]
    assert (spec["models"][0]["Hyper_m"], spec["models"][0]["Lamda"]) == (5.0, 0.08)
    written = report.build_tables(runs, spec, tmp_path / "tables")
    ratio, lower, upper = t_interval(WANDA_OWL_RATIO)
    assert f"**{ratio:.3f}** [{lower:.3f}, {upper:.3f}] better, wins 5/5" in written["main"]["markdown"]
    sweep = pd.read_csv(tmp_path / "tables" / "sweep.csv", index_col=["model", "method"])
    assert sweep.loc[("a", "sparsegpt_owl"), "0.7_ratio_lower"] < 1 < sweep.loc[("a", "sparsegpt_owl"), "0.7_ratio_upper"]
    figures = report.build_figures(runs, spec, tmp_path / "figures")
    assert sorted(figures) == ["layerwise_a", "sweep_a"]


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
    assert tasks.to_dict("index") == {"boolq": {"accuracy (%)": "60.00", "stderr (%)": "n/a", "note": "local:x"},
                                      "rte": {"accuracy (%)": "n/a", "stderr (%)": "n/a", "note": "no rows"},
                                      "mean": {"accuracy (%)": "60.00", "stderr (%)": "n/a", "note": "over boolq"}}
    with_se = {**zs_only, "zero_shot": {"boolq": 0.6, "rte": 0.5, "mean": 0.55},
               "zero_shot_details": {"missing": {}, "tasks_in_mean": ["boolq", "rte"], "stderr": {"boolq": 0.03, "rte": 0.04}}}
    tasks = report.zero_shot_summary(with_se)
    assert tasks.at["rte", "stderr (%)"] == "4.00" and tasks.at["mean", "stderr (%)"] == "2.50"  # sqrt(3² + 4²) / 2
    fig = report.plot_layerwise(result["outlier_ratios"], result["layer_sparsities"], 0.7, achieved=result["layer_achieved_sparsities"])
    assert len(fig.axes) == 2  # sparsity and the LOD bars
    assert len(report.plot_layerwise(None, [0.7] * 4, 0.7).axes) == 1
    assert len(report.plot_layerwise([None] * 4, [0.7] * 4, 0.7).axes) == 1  # ratios not computed: no bars
    lod = {"model": "m", "outlier_ratios": {"3": [1.0, 2.0], "5": [0.5, 1.0]}}
    assert len(report.plot_lod(lod).axes[0].patches) == 4


def test_markdown_escapes_pipes():
    text = report.to_markdown(pd.DataFrame({"a|b": ["x|y"]}))
    assert text.splitlines()[0] == "| a\\|b |"
    assert text.splitlines()[2] == "| x\\|y |"


def test_unpaired_seeds_of_several_ablation_cells_are_named_once_per_row(tmp_path):
    results = [make_result("a", "wanda", 0.7, w, seed=s) for s, w in enumerate([25.0, 20.0, 30.0])]
    results += [make_result("a", "wanda_owl", 0.7, 20.0, hyper_m=m, lamda=l) for m, l in ((3, 0.04), (5, 0.08))]
    text = report.build_tables(report.load_runs(results), ablation_spec(), tmp_path, ["ablation"])["ablation_a"]["markdown"]
    assert ("- † Unpaired seeds, left out of the ratio: a OWL w. Wanda at 70%, (M, λ) = (3, 0.04), (5, 0.08): "
            "Wanda seeds 1, 2 without an OWL run.") in text
