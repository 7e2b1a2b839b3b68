"""The allocation zoo's report side (owl/report/zoo.py, owl.zoo choose): tables and figures from
synthetic result dicts, zoo runs kept out of the paper's tables, the committed choice."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from owl import grid, report, zoo
from owl.report import zoo as zoo_report
from owl.report.zoo import _ratio_ticks

REPO = Path(__file__).resolve().parents[1]
T975_2 = 4.302652729911275  # Student's t, 97.5% quantile, 2 degrees of freedom
N_BLOCKS = 4


def zoo_result(model, method, allocation, ppl, seed, value=None, tuning=False, n_blocks=N_BLOCKS):
    """A result.json of a zoo run as run_prune writes it (the fields the report reads)."""
    prune_method = zoo.zoo_method(method, allocation)
    hyper = {"owl": "Lamda", "dlp": "dlp_alpha", "dsa": "dsa_lambda", "alphapruning": "epsilon", "atp": "beta"}.get(allocation)
    params = {} if hyper is None else {hyper: value}
    if allocation == "owl":
        params.update(Hyper_m=5.0, owl_weighting="blocks")
    step = 0.0 if value is None else value
    layer = [0.7 - step + 2 * step * i / (n_blocks - 1) for i in range(n_blocks)]
    prefix = "tune" if tuning else "zoo"
    point = zoo.zoo_point_id(prefix, method, allocation, 0.7, value, 5.0)
    return {
        "model": model, "prune_method": prune_method, "sparsity_ratio": 0.7, "sparsity_type": "unstructured",
        "Hyper_m": 5.0, "Lamda": value if allocation == "owl" else 0.08, "seed": seed, "device": "cpu",
        "dtype": "float32", "eval_dtype": "float32", "achieved_sparsity": 0.7, "allocation": allocation,
        "allocation_params": params, "layer_sparsities": layer, "layer_achieved_sparsities": layer,
        "outlier_ratios": [1.0 + i + seed for i in range(n_blocks)] if allocation == "owl" else None,
        "ppl": {"wikitext2_validation" if tuning else "wikitext2": ppl},
        "settings": {"model": model, "prune_method": prune_method, "save": f"results/x/runs/{model}/{point}_seed{seed}"},
    }


def zoo_spec(seeds=(0, 1, 2), values=None, tuned=None):
    values = {"owl": [0.04, 0.08], "dlp": [0.05, 0.15], "atp": [0.01, 0.02]} if values is None else values
    tuned = {"a": {"wanda": {"owl": 0.08, "dlp": 0.05, "atp": 0.01}}} if tuned is None else tuned
    return {
        "models": [{"key": "a", "label": "A", "Hyper_m": 5, "Lamda": 0.08}],
        "main": {"sparsity": 0.7, "models": ["a"], "methods": ["wanda", "wanda_owl"]},
        "sweep": None, "ablation": None, "zero_shot": None,
        "zoo": {"models": ["a"], "methods": ["wanda"], "allocators": ["uniform", "owl", "dlp", "atp"], "sparsity": 0.7,
                "settings": {"eval_dtype": "float32"}, "seeds": {"a": list(seeds)}, "defaults": {},
                "tuning": {"models": ["a"], "seeds": [100], "eval_limit": 32, "values": values}, "tuned": tuned},
    }


# per seed: uniform, OWL (default = tuned 0.08), DLP at its paper default 0.15 and tuned 0.05, ATP tuned 0.01
PPL = {
    ("uniform", None): [100.0, 110.0, 90.0],
    ("owl", 0.08): [80.0, 90.0, 70.0],
    ("dlp", 0.15): [78.0, 92.0, 72.0],
    ("dlp", 0.05): [60.0, 66.0, 54.0],
    ("atp", 0.01): [88.0, 100.0, 76.0],
}


def zoo_results(drop=()):
    return [zoo_result("a", "wanda", a, ppls[s], s, v) for (a, v), ppls in PPL.items() for s in range(3) if (a, v, s) not in drop]


def t_interval(ratios, t):
    logs = np.log(ratios)
    half = t * logs.std(ddof=1) / math.sqrt(len(logs))
    return math.exp(logs.mean()), math.exp(logs.mean() - half), math.exp(logs.mean() + half)


def row_of(cells, allocation, origin=None):
    sel = cells[(cells["allocation"] == allocation) & ((cells["origin"] == origin) if origin else True)]
    assert len(sel) == 1
    return sel.iloc[0]


# ---- the paper's tables never read a zoo run --------------------------------------------------
def test_zoo_runs_are_not_duplicates_of_the_paper_runs(tmp_path):
    from tests.test_report import make_result

    paper = [make_result("a", "wanda", 0.7, 120.0), make_result("a", "wanda_owl", 0.7, 95.0)]
    runs = report.load_runs(paper + zoo_results())  # same method names, same seed 0 at the same sparsity
    assert report.main_table(runs, zoo_spec()).at["wanda", "A"] == 120.0
    assert report.main_table(runs, zoo_spec()).at["wanda_owl", "A"] == 95.0
    assert list(report.infer_spec(runs)["main"]["methods"]) == ["wanda", "wanda_owl"]  # no wanda_dlp, wanda_atp
    # by hand, from a folder: the run's folder name says it is a zoo run
    for i, result in enumerate(paper + zoo_results()[:3]):
        name = Path(result.get("settings", {}).get("save", f"run{i}")).name
        report.write_json(tmp_path / "runs" / "a" / name / "result.json", {k: v for k, v in result.items() if k != "settings"})
    loaded = report.load_runs(report.find_results(tmp_path))
    assert sorted(loaded["zoo_section"].fillna("paper")) == ["paper", "paper", "zoo", "zoo", "zoo"]
    assert report.main_table(loaded, zoo_spec()).at["wanda", "A"] == 120.0


def test_the_workflows_sections_decide_over_the_folder_name(tmp_path):
    path = tmp_path / "zoo_wanda_s0.7_seed0" / "result.json"
    report.write_json(path, zoo_result("a", "wanda", "uniform", 50.0, 0))
    entry = {"path": str(path), "model": "a", "method": "wanda", "sparsity": 0.7, "Hyper_m": 5, "Lamda": 0.08, "seed": 0}
    assert report.load_runs([{**entry, "sections": ["zoo"]}])["zoo_section"][0] == "zoo"
    assert report.load_runs([{**entry, "sections": ["main"]}])["zoo_section"][0] is None


# ---- the zoo table --------------------------------------------------------------------------
def test_zoo_cells_pair_each_setting_with_uniform_and_owl_by_seed():
    cells = zoo_report.zoo_cells(report.load_runs(zoo_results()), zoo_spec())
    assert [(r.allocation, r.origin) for r in cells.itertuples()] == [
        ("uniform", "default"), ("owl", "default, tuned"), ("dlp", "default"), ("dlp", "tuned"), ("atp", "tuned")]
    dlp = row_of(cells, "dlp", "tuned")
    assert dlp["mean"] == pytest.approx(math.exp(np.log([60.0, 66.0, 54.0]).mean())) and dlp["n"] == 3
    for ref, base in (("uniform", ("uniform", None)), ("owl", ("owl", 0.08))):
        ratio, low, high = t_interval(np.array(PPL[("dlp", 0.05)]) / np.array(PPL[base]), T975_2)
        assert dlp[f"{ref}_ratio"] == pytest.approx(ratio)
        assert dlp[f"{ref}_ratio_lower"] == pytest.approx(low) and dlp[f"{ref}_ratio_upper"] == pytest.approx(high)
        assert dlp[f"{ref}_n_pairs"] == 3 and dlp[f"{ref}_wins"] == 3
    assert row_of(cells, "uniform")["uniform_reference"] and row_of(cells, "owl")["owl_reference"]
    assert math.isnan(row_of(cells, "uniform")["uniform_ratio"])


def test_zoo_table_bolds_only_intervals_that_exclude_one(tmp_path):
    written = zoo_report.build_zoo_tables(report.load_runs(zoo_results()), zoo_spec(), tmp_path)
    rows = {tuple(line.split(" | ")[2:4]): line.split(" | ") for line in written["zoo"]["markdown"].splitlines()
            if line.startswith("| A ")}
    dlp_tuned = rows[("DLP", "tuned (α=0.05)")]
    assert dlp_tuned[5].startswith("**0.600**") and "better, wins 3/3" in dlp_tuned[5]  # 0.6 on every seed
    dlp_default = rows[("DLP", "paper default (α=0.15)")]
    assert "**" not in dlp_default[6] and "wins 1/3" in dlp_default[6]  # 0.975, 1.022, 1.029 of OWL: no claim
    atp = rows[("ATP", "tuned (β=0.01)")]
    assert atp[6].startswith("**") and "worse, wins 0/3" in atp[6]  # 1.09-1.11 of OWL on every seed
    assert rows[("Uniform", "-")][5] == "reference" and rows[("OWL", "paper default = tuned (λ=0.08)")][6].rstrip(" |") == "reference"
    assert "Against uniform: 4 of 4 settings with an interval are better" in written["zoo"]["markdown"]
    csv = (tmp_path / "zoo.csv").read_text().splitlines()
    assert csv[0].startswith("model,method,allocation,value,origin,mean,gsd,lower,upper,n,uniform_ratio")
    assert len(csv) == 1 + len(PPL)


def test_the_pairs_table_pairs_every_two_settings_besides_uniform_and_owl_by_seed(tmp_path):
    written = zoo_report.build_zoo_tables(report.load_runs(zoo_results()), zoo_spec(), tmp_path)
    pairs = zoo_report.pair_cells(zoo_report.zoo_cells(report.load_runs(zoo_results()), zoo_spec()))
    names = [(p["first"]["allocation"], p["first"]["origin"], p["second"]["allocation"], p["second"]["origin"]) for _, p in pairs.iterrows()]
    assert names == [("dlp", "default", "dlp", "tuned"), ("dlp", "default", "atp", "tuned"), ("dlp", "tuned", "atp", "tuned")]
    dlp_atp = pairs.iloc[2]
    ratio, low, high = t_interval(np.array(PPL[("dlp", 0.05)]) / np.array(PPL[("atp", 0.01)]), T975_2)
    assert dlp_atp["ratio"] == pytest.approx(ratio) and (dlp_atp["ratio_lower"], dlp_atp["ratio_upper"]) == pytest.approx((low, high))
    assert dlp_atp["wins"] == 3 and dlp_atp["n_pairs"] == 3
    text = written["zoo_pairs"]["markdown"]
    assert "| A | Wanda | DLP tuned (α=0.05) | ATP tuned (β=0.01) | **0.684** [0.624, 0.750] better, wins 3/3 |" in text
    assert "Uniform" not in text.split("\n- ")[0] and "3 of 3 intervals exclude 1" in text
    # a seed missing on one side is left out of that pair only, and named
    pairs = zoo_report.pair_cells(zoo_report.zoo_cells(report.load_runs(zoo_results(drop=[("atp", 0.01, 2)])), zoo_spec()))
    assert list(pairs["n_pairs"]) == [3, 2, 2] and list(pairs.iloc[1]["only_owl"]) == [2]


def test_one_seed_gives_no_interval_and_says_so(tmp_path):
    results = [zoo_result("a", "wanda", a, ppls[0], 0, v) for (a, v), ppls in PPL.items()]
    written = zoo_report.build_zoo_tables(report.load_runs(results), zoo_spec(seeds=[0]), tmp_path)
    text = written["zoo"]["markdown"]
    assert "0.600 (n=1)" in text and "**" not in text.split("\n- ")[0]
    assert "n=1: one seed gives no interval and no claim." in text


def test_a_missing_seed_is_named_and_left_out_of_the_ratio(tmp_path):
    runs = report.load_runs(zoo_results(drop={("dlp", 0.05, 2)}))
    cells = zoo_report.zoo_cells(runs, zoo_spec())
    assert row_of(cells, "dlp", "tuned")["uniform_n_pairs"] == 2
    notes = zoo_report.zoo_notes(cells, zoo_spec())
    assert any("Unpaired seeds" in n and "against uniform: seeds 2" in n for n in notes)


# ---- the tuning table -------------------------------------------------------------------------
TRIALS = {("owl", 0.04): [50.0, 52.0], ("owl", 0.08): [48.0, 49.0], ("dlp", 0.05): [45.0, 44.0], ("dlp", 0.15): [47.0, 46.0],
          ("atp", 0.01): [51.0, 50.0], ("atp", 0.02): [53.0, 55.0]}


def trial_results(seeds=(100, 101), drop=()):
    return [zoo_result("a", "wanda", a, ppls[i], s, v, tuning=True)
            for (a, v), ppls in TRIALS.items() for i, s in enumerate(seeds) if (a, v) not in drop]


def test_tuning_table_marks_the_choice_of_the_rule(tmp_path):
    runs = report.load_runs(trial_results() + zoo_results())
    written = zoo_report.build_zoo_tables(runs, zoo_spec(), tmp_path)
    text = written["zoo_tuning"]["markdown"]
    assert f"| A | Wanda | DLP | **α=0.05: {math.sqrt(45.0 * 44.0):.2f}** | α=0.15: {math.sqrt(47.0 * 46.0):.2f} | α=0.05 |" in text
    assert "| A | Wanda | OWL | λ=0.04: 50.99 | **λ=0.08: 48.50** | λ=0.08 |" in text
    assert "differs" not in text  # zoo.tuned is the choice
    cells = zoo_report.tuning_cells(runs, zoo_spec())
    assert cells["gmean"].notna().all() and cells["chosen"].sum() == 3
    # validation numbers never reach the test table
    assert "48.50" not in written["zoo"]["markdown"] and "45." not in written["zoo"]["markdown"]


def test_tuning_table_says_when_the_config_disagrees_or_trials_are_missing(tmp_path):
    runs = report.load_runs(trial_results(drop={("atp", 0.02)}))
    spec = zoo_spec(seeds=[], tuned={"a": {"wanda": {"owl": 0.04, "dlp": 0.05}}})
    written = zoo_report.build_zoo_tables(runs, spec, tmp_path)
    assert list(written) == ["zoo_tuning"]  # no reported seed: no zoo table
    text = written["zoo_tuning"]["markdown"]
    assert "β=0.01 (so far: 1 of 2 values)" in text and "β=0.02: -" in text
    assert "zoo.tuned differs from the choice: A Wanda OWL: 0.08 chosen, zoo.tuned has 0.04; A Wanda ATP: 0.01 chosen, zoo.tuned has nothing" in text


def test_sparsegpt_takes_wandas_tuned_values_and_the_notes_say_so(tmp_path):
    spec = zoo_spec()
    spec["zoo"]["methods"] = ["wanda", "sparsegpt"]
    spec["zoo"]["tuning"]["methods"] = ["wanda"]
    sparsegpt = [zoo_result("a", "sparsegpt", a, ppls[s], s, v) for (a, v), ppls in PPL.items() for s in range(3)]
    runs = report.load_runs(trial_results() + zoo_results() + sparsegpt)
    written = zoo_report.build_zoo_tables(runs, spec, tmp_path)
    assert "SparseGPT takes the values tuned with Wanda" in written["zoo"]["markdown"]
    assert "| A | SparseGPT | DLP | tuned (α=0.05) |" in written["zoo"]["markdown"]
    assert set(zoo_report.tuning_cells(runs, spec)["method"]) == {"wanda"}  # no SparseGPT trials to show


# ---- files ----------------------------------------------------------------------------------
def test_zoo_files_follow_the_spec(tmp_path):
    assert report.table_files(zoo_spec(), ["zoo"]) == ["zoo_tuning.md", "zoo_tuning.csv", "zoo.md", "zoo.csv",
                                                      "zoo_pairs.md", "zoo_pairs.csv"]
    one_challenger = zoo_spec(values={"owl": [0.04, 0.08], "atp": [0.01, 0.02]}, tuned={"a": {"wanda": {"owl": 0.08, "atp": 0.01}}})
    one_challenger["zoo"]["allocators"] = ["uniform", "owl", "atp"]
    assert "zoo_pairs.md" not in report.table_files(one_challenger, ["zoo"])  # nothing to pair ATP with
    assert report.figure_files(zoo_spec(), ["zoo"]) == [f"zoo_{k}_a.{e}" for k in ("sparsity", "ratios") for e in ("png", "pdf")]
    empty = zoo_spec(seeds=[], values={}, tuned={})
    assert report.table_files(empty, ["zoo"]) == [] and report.figure_files(empty, ["zoo"]) == []
    assert report.table_files({**zoo_spec(), "zoo": None}) == ["main.md", "main.csv"]
    runs = report.load_runs(trial_results() + zoo_results())
    assert sorted(report.build_tables(runs, zoo_spec(), tmp_path)) == ["main", "zoo", "zoo_pairs", "zoo_tuning"]
    written = report.build_figures(runs, zoo_spec(), tmp_path, ["zoo"])
    assert sorted(p.name for paths in written.values() for p in paths) == sorted(report.figure_files(zoo_spec(), ["zoo"]))
    assert all(p.stat().st_size > 1000 for paths in written.values() for p in paths)


def test_zoo_figures_draw_every_setting_its_band_and_the_lod():
    cells = zoo_report.zoo_cells(report.load_runs(zoo_results()), zoo_spec())
    fig = zoo_report.plot_zoo_sparsity(cells, 0.7, title="A")
    ax = fig.axes[0]
    assert len(ax.get_lines()) == len(PPL) + 1  # one line per setting and the target
    assert len(ax.collections) == len(PPL)  # a band per setting (3 seeds)
    lod = [a for a in fig.axes if a is not ax and a.patches]
    assert lod and len(lod[0].patches) == N_BLOCKS  # OWL's outlier ratios as bars
    assert lod[0].patches[0].get_height() == pytest.approx(2.0)  # mean over seeds 0-2 of 1 + seed
    forest = zoo_report.plot_zoo_ratios(cells, title="A")
    left, right = forest.axes[:2]
    assert left.get_xscale() == "log" and right.get_xscale() == "log"
    assert len(left.get_yticks()) == len(PPL)


# ---- the choice ------------------------------------------------------------------------------
def test_choose_prints_the_yaml_of_the_rule_from_a_folder(tmp_path):
    for result in trial_results():
        report.write_json(tmp_path / "runs" / "a" / Path(result["settings"]["save"]).name / "result.json", result)
    proc = subprocess.run([sys.executable, "-m", "owl.zoo", "choose", str(tmp_path)], capture_output=True, text=True, check=True)
    assert yaml.safe_load(proc.stdout) == {"tuned": {"a": {"wanda": {"atp": 0.01, "dlp": 0.05, "owl": 0.08}}}}
    assert "# a wanda dlp (seeds 100, 101): 0.05: 44.497 (chosen), 0.15: 46.497" in proc.stdout


def test_the_default_configs_tuned_values_are_the_choice_of_its_committed_trials(monkeypatch):
    monkeypatch.chdir(REPO)  # results_dir is relative to where the workflow runs
    config = REPO / "config" / "default.yaml"
    found, missing = zoo.trial_files(config)
    assert not missing, f"trials listed in config/default.yaml without a committed result: {missing[:3]}"
    cfg = yaml.safe_load(config.read_text())
    results = [report.read_json(path) for _, path in found]
    choice = zoo.tuned_config(zoo.choose_tuned(zoo.trial_records(results, [m for m, _ in found])))
    assert choice == (cfg["zoo"].get("tuned") or {})


def test_run_summary_shows_a_tuning_runs_validation_perplexity_apart():
    summary = report.run_summary(zoo_result("a", "wanda", "dlp", 44.5, 100, 0.05, tuning=True))
    assert summary.loc["WikiText-2 validation perplexity (tuning)", "value"] == "44.5"
    assert "WikiText-2 perplexity" not in summary.index
    assert summary.loc["allocation", "value"] == "dlp (dlp_alpha 0.05)"
    assert math.isnan(report.load_runs([zoo_result("a", "wanda", "dlp", 44.5, 100, 0.05, tuning=True)])["ppl"][0])


def test_the_caption_names_the_zoos_pinned_evaluation():
    from owl.report import captions

    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    cfg = grid.validate_config({
        "models": {"a": {"id": "tiny-a", "label": "A", "settings": {"eval_dtype": "bfloat16"}}},
        "main": {"sparsity": 0.7, "methods": ["wanda"]},
        "zoo": {"models": ["a"], "methods": ["wanda"], "allocators": ["uniform", "dlp"], "settings": {"eval_dtype": "float32"},
                "seeds": {"a": [0, 1]}},
    }, schema)
    lines = captions.caption_protocols(cfg, grid.model_specs(cfg))
    assert "evaluation in float32" in lines["zoo"]["a"] and "seeds 0, 1 (2 draws)" in lines["zoo"]["a"]
    assert "evaluation in bfloat16" in lines["main"]["a"]


# ---- the workflow, end to end on a tiny model ----------------------------------------------------
def tiny_zoo_config(tmp_path: Path) -> Path:
    """config/tiny.yaml with only its main Wanda row and a small zoo (13 prune jobs): one trial value
    per allocator at seed 100 on WikiText-2 validation, reported runs at seeds 0 and 1 (seed 0 the
    main table's Wanda run's too)."""
    cfg = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
    cfg.update(name="tinyzoo", sweep=None, ablation=None, zero_shot=None)
    cfg["main"] = {"sparsity": 0.7, "methods": ["wanda"], "seeds": [0]}
    cfg["zoo"] = {"models": ["tiny"], "methods": ["wanda"], "allocators": ["uniform", "owl", "dlp"],
                  "settings": {"eval_dtype": "float32"}, "seeds": [0, 1],
                  "tuning": {"models": ["tiny"], "seeds": [100], "eval_limit": 2, "values": {"owl": [0.04], "dlp": [0.05]}},
                  "tuned": {"tiny": {"wanda": {"owl": 0.04, "dlp": 0.05}}}}
    path = tmp_path / "tinyzoo.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_the_workflow_builds_the_zoo_tables_figures_and_report_and_keeps_the_main_table_clean(tmp_path):
    from owl.testing import save_tiny_model, write_tiny_data_dir
    from tests.test_workflow import snakemake

    save_tiny_model(tmp_path / "tiny-model")
    write_tiny_data_dir(tmp_path / "tiny-data")
    env = {"OWL_DATA_DIR": str(tmp_path / "tiny-data"), "OWL_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    config = tiny_zoo_config(tmp_path)
    proc = snakemake(tmp_path, "tables", "figures", "--cores", "2", configfile=config, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "results" / "tinyzoo"
    tables = {p.name for p in (out / "tables").glob("*.md")}
    assert tables == {"main.md", "zoo.md", "zoo_pairs.md", "zoo_tuning.md"}
    assert {p.name for p in (out / "figures").glob("zoo_*.png")} == {"zoo_sparsity_tiny.png", "zoo_ratios_tiny.png"}
    main = (out / "tables" / "main.md").read_text()
    assert "| Wanda | Uniform | no | " in main and "(n=1)" in main and "n=2" not in main  # seed 0 only: no zoo run in it
    zoo_md = (out / "tables" / "zoo.md").read_text()
    for setting in ("| Uniform | - |", "| OWL | paper default (λ=0.08) |", "| OWL | tuned (λ=0.04) |",
                    "| DLP | paper default (α=0.15) |", "| DLP | tuned (α=0.05) |"):
        assert setting in zoo_md
    assert "n=2" in zoo_md and "eval_dtype float32" in zoo_md
    tuning_md = (out / "tables" / "zoo_tuning.md").read_text()
    assert "**λ=0.04: " in tuning_md and "differs from the choice" not in tuning_md
    proc = subprocess.run([sys.executable, "-m", "owl.zoo", "choose", str(out)], capture_output=True, text=True, check=True)
    assert yaml.safe_load(proc.stdout)["tuned"] == {"tiny": {"wanda": {"owl": 0.04, "dlp": 0.05}}}
    proc = snakemake(tmp_path, "tables", "figures", "--report", "results/tinyzoo/report.html", configfile=config, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (out / "report.html").read_text()
    assert '"6. Allocation zoo"' in html and "every setting against uniform and against OWL" in html
    assert "results/tinyzoo/figures/zoo_ratios_tiny.png" in html


@settings(max_examples=200, deadline=None)
@given(st.floats(0.01, 0.99), st.floats(1.01, 50.0))
def test_ratio_ticks_hold_one_and_never_crowd_each_other(low, high):
    ticks = _ratio_ticks(low, high)
    assert 1.0 in ticks and ticks == sorted(ticks)
    assert all(low <= t <= high for t in ticks)
    gaps = np.diff(np.log(ticks))
    assert (gaps >= math.log(high / low) / 9 - 1e-12).all()  # no two labels closer than 1/9 of the axis
