"""owl.grid: config validation, run names, the grid per (point, seed), statistics and allocation jobs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from owl import grid

CONFIGS = Path(__file__).resolve().parents[1] / "config"
SCHEMA = yaml.safe_load((CONFIGS / "schema.yaml").read_text())


def config(**changes) -> dict:
    """A small validated config: one model, main at 70%, a sweep at 50%, a 2x1 ablation."""
    cfg = {
        "models": {"m": {"id": "tiny-model"}},
        "main": {"sparsity": 0.7, "methods": ["dense", "magnitude", "wanda", "wanda_owl", "magnitude_owl"]},
        "sweep": {"models": ["m"], "methods": ["wanda", "wanda_owl"], "sparsities": [0.5, 0.7]},
        "ablation": {"models": ["m"], "Hyper_m": [3, 5], "Lamda": [0.08]},
    }
    cfg.update(copy.deepcopy(changes))
    return grid.validate_config(cfg, SCHEMA)


def runs_of(cfg: dict) -> dict:
    return grid.expand_grid(cfg, grid.model_specs(cfg))


def test_run_names_carry_the_seed_only_for_runs_that_use_calibration_data():
    assert grid.point_id("dense", 0.0, 5, 0.08) == "dense"
    assert grid.point_id("wanda", 0.7, 5, 0.08) == "wanda_s0.7"
    assert grid.point_id("wanda_owl", 0.7, 5, 0.08) == "wanda_owl_s0.7_m5_l0.08"
    assert grid.run_name("wanda_s0.7", 3) == "wanda_s0.7_seed3"
    assert grid.run_name("dense", None) == "dense"
    assert [m for m in ("dense", "magnitude", "wanda", "sparsegpt", "magnitude_owl", "wanda_owl", "sparsegpt_owl")
            if grid.uses_calibration_data(m)] == ["wanda", "sparsegpt", "magnitude_owl", "wanda_owl", "sparsegpt_owl"]


def test_seeds_default_to_zero_and_a_section_overrides_the_top_level():
    cfg = config()
    assert cfg["seeds"] == [0] and all(grid.section_seeds(cfg, s) == [0] for s in ("main", "sweep", "ablation"))
    cfg = config(seeds=[1, 2], sweep={"models": ["m"], "methods": ["wanda"], "sparsities": [0.5], "seeds": [7]})
    assert grid.section_seeds(cfg, "main") == [1, 2] and grid.section_seeds(cfg, "sweep") == [7]
    assert "seeds" not in cfg["main"]  # no default of its own: it inherits


def test_one_run_per_point_and_seed_and_dense_and_magnitude_once():
    one, two = runs_of(config()), runs_of(config(seeds=[0, 1]))
    uncalibrated = {k for k, r in one.items() if r["seed"] is None}
    assert {r["method"] for k, r in one.items() if k in uncalibrated} == {"dense", "magnitude"}
    assert len(two) == 2 * (len(one) - len(uncalibrated)) + len(uncalibrated)
    assert ("m", "dense") in two and ("m", "magnitude_s0.7") in two
    assert ("m", "magnitude_owl_s0.7_m5_l0.08_seed1") in two  # its outlier ratios come from the statistics
    run = two[("m", "wanda_owl_s0.7_m3_l0.08_seed1")]
    assert (run["point"], run["seed"], run["uses_stats"], run["Hyper_m"]) == ("wanda_owl_s0.7_m3_l0.08", 1, True, 3.0)
    # the points are the same at every seed
    assert {r["point"] for r in one.values()} == {r["point"] for r in two.values()}


def test_a_point_in_several_sections_runs_at_the_union_of_their_seeds():
    cfg = config(main={"sparsity": 0.7, "methods": ["wanda"], "seeds": [0, 1, 2]},
                 sweep={"models": ["m"], "methods": ["wanda"], "sparsities": [0.5, 0.7], "seeds": [5]}, ablation=None)
    assert sorted(runs_of(cfg)) == [("m", "wanda_s0.5_seed5"), *[("m", f"wanda_s0.7_seed{k}") for k in (0, 1, 2, 5)]]


def test_a_section_can_give_each_model_its_own_seeds():
    cfg = config(models={"m": {"id": "tiny-model"}, "g": {"id": "other-model"}}, seeds=[0],
                 main={"sparsity": 0.7, "methods": ["dense", "wanda"], "seeds": {"m": [0, 1, 2]}}, sweep=None, ablation=None)
    assert grid.section_seeds(cfg, "main", "m") == [0, 1, 2] and grid.section_seeds(cfg, "main", "g") == [0]
    assert grid.seeds_by_model(cfg, "main") == {"m": [0, 1, 2], "g": [0]}
    assert sorted(runs_of(cfg)) == [("g", "dense"), ("g", "wanda_s0.7_seed0"),
                                    ("m", "dense"), *[("m", f"wanda_s0.7_seed{k}") for k in (0, 1, 2)]]
    with pytest.raises(ValueError, match="per model"):
        grid.section_seeds(cfg, "main")


def test_ablation_cells_can_run_at_more_seeds_and_the_baseline_at_all_of_them():
    cfg = config(sweep=None, main={"sparsity": 0.7, "methods": ["dense"]},
                 ablation={"models": ["m"], "Hyper_m": [3, 5, 10], "Lamda": [0.04, 0.08],
                           "cell_seeds": [{"Hyper_m": [3, 10], "Lamda": [0.08], "seeds": [0, 1, 2]}]})
    seeds = {}
    for (_, name), r in runs_of(cfg).items():
        seeds.setdefault(r["point"], set()).add(r["seed"])
    assert seeds["wanda_owl_s0.7_m3_l0.08"] == seeds["wanda_owl_s0.7_m10_l0.08"] == {0, 1, 2}
    assert seeds["wanda_owl_s0.7_m5_l0.08"] == seeds["wanda_owl_s0.7_m3_l0.04"] == {0}
    assert seeds["wanda_s0.7"] == {0, 1, 2}  # every cell is paired with uniform on its own seeds
    assert grid.ablation_cell_seeds(cfg, "m", 10.0, 0.08) == [0, 1, 2]


def test_sweep_sparsities_can_run_at_more_seeds_with_every_method():
    cfg = config(main={"sparsity": 0.7, "methods": ["dense"]}, ablation=None,
                 sweep={"models": ["m"], "methods": ["magnitude", "wanda", "wanda_owl"], "sparsities": [0.5, 0.8], "seeds": [0, 1],
                        "cell_seeds": [{"sparsities": [0.8], "seeds": [0, 1, 2]}]})
    seeds = {}
    for r in runs_of(cfg).values():
        seeds.setdefault(r["point"], set()).add(r["seed"])
    assert seeds["wanda_s0.8"] == seeds["wanda_owl_s0.8_m5_l0.08"] == {0, 1, 2}  # both sides of the pair
    assert seeds["wanda_s0.5"] == seeds["wanda_owl_s0.5_m5_l0.08"] == {0, 1}
    assert seeds["magnitude_s0.8"] == {None}  # no calibration data: still one run
    assert grid.sweep_cell_seeds(cfg, "m", 0.8) == [0, 1, 2] and grid.sweep_cell_seeds(cfg, "m", 0.5) == [0, 1]


def test_zero_shot_runs_are_the_points_and_seeds_of_its_section():
    cfg = config(main={"sparsity": 0.7, "methods": ["dense", "wanda"], "seeds": [0, 1]},
                 zero_shot={"models": ["m"], "methods": ["dense", "wanda"], "seeds": [1]})
    flagged = sorted(k for k, r in runs_of(cfg).items() if r["zero_shot"])
    assert flagged == [("m", "dense"), ("m", "wanda_s0.7_seed1")]


def test_statistics_and_allocations_per_model_and_seed():
    cfg = config(seeds=[0, 1], sweep={"models": ["m"], "methods": ["wanda_owl"], "sparsities": [0.5], "seeds": [4]})
    models, runs = grid.model_specs(cfg), runs_of(cfg)
    assert grid.calibration_seeds(cfg, runs, "m") == [0, 1, 4]
    assert grid.calib_tag(models["m"]["calibration"], "float32", 4) == "c4-n128-len2048-seed4-float32"
    at_4 = grid.allocation_points(cfg, models, runs, "m", 4)
    assert at_4 == [{"sparsity_ratio": 0.5, "Hyper_m": 5.0, "Lamda": 0.08}]
    at_0 = grid.allocation_points(cfg, models, runs, "m", 0)
    assert at_0[0] == {"sparsity_ratio": 0.7, "Hyper_m": 5.0, "Lamda": 0.08}  # the main setting first
    assert {(p["Hyper_m"], p["Lamda"]) for p in at_0} == {(5.0, 0.08), (3.0, 0.08)}
    # a model with no calibrated run still gets its statistics (the outlier distribution) at the top-level seeds
    cfg = config(seeds=[2, 3], main={"sparsity": 0.7, "methods": ["dense", "magnitude"]}, sweep=None, ablation=None)
    assert grid.calibration_seeds(cfg, runs_of(cfg), "m") == [2, 3]


def test_ablation_runs_hold_every_seed_of_the_cells_and_of_the_uniform_baseline():
    cfg = config(seeds=[0, 1], sweep=None)
    keys = grid.ablation_runs(cfg, runs_of(cfg))
    assert sorted(keys) == sorted(("m", f"{p}_seed{k}") for p in ("wanda_s0.7", "wanda_owl_s0.7_m3_l0.08", "wanda_owl_s0.7_m5_l0.08")
                                  for k in (0, 1))


@pytest.mark.parametrize("change, message", [
    ({"seeds": []}, "seeds: [] should be non-empty"),
    ({"seeds": [0, 0]}, "seeds: [0, 0] has non-unique elements"),
    ({"seeds": [-1]}, "seeds[0]: -1 is less than the minimum of 0"),
    ({"main": {"sparsity": 0.7, "methods": ["wanda"], "seeds": [0.5]}}, "main.seeds[0]: 0.5 is not of type 'integer'"),
    ({"calibration": {"seed": 0}}, "calibration: Additional properties are not allowed ('seed' was unexpected)"),
    ({"sweep": {"models": ["x"], "methods": ["wanda"], "sparsities": [0.5]}}, "sweep.models: 'x' is not a key of models"),
    ({"main": {"sparsity": 0.7, "methods": ["wanda"], "seeds": {"x": [0]}}}, "main.seeds: 'x' is not one of main.models (m)"),
    ({"ablation": {"models": ["m"], "Hyper_m": [3], "Lamda": [0.08], "cell_seeds": [{"Hyper_m": [7], "Lamda": [0.08], "seeds": [1]}]}},
     "ablation.cell_seeds[0].Hyper_m: 7 is not in ablation.Hyper_m [3]"),
    ({"sweep": {"models": ["m"], "methods": ["wanda"], "sparsities": [0.5], "cell_seeds": [{"sparsities": [0.8], "seeds": [1]}]}},
     "sweep.cell_seeds[0].sparsities: 0.8 is not in sweep.sparsities [0.5]"),
])
def test_a_bad_config_is_one_line_naming_the_key(change, message):
    with pytest.raises(grid.ConfigError) as caught:
        config(**change)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_shipped_configs_are_valid_and_default_to_seed_zero():
    for name in ("default", "default-seeds", "paper", "tiny"):
        cfg = grid.validate_config(yaml.safe_load((CONFIGS / f"{name}.yaml").read_text()), SCHEMA)
        assert 0 in cfg["seeds"]
        declared = set(cfg["seeds"])
        for section in grid.SECTIONS:
            if cfg.get(section):
                declared.update(k for seeds in grid.seeds_by_model(cfg, section).values() for k in seeds)
                declared.update(k for extra in cfg[section].get("cell_seeds") or [] for k in extra["seeds"])
        zoo = cfg.get("zoo") or {}
        declared.update(k for seeds in (zoo.get("seeds") or {}).values() for k in seeds)
        declared.update((zoo.get("tuning") or {}).get("seeds", []))
        assert all(r["seed"] in (None, *declared) for r in runs_of(cfg).values())


def test_batches_hold_every_run_once_section_by_section_and_seed_by_seed():
    cfg = config(models={"m": {"id": "tiny-model"}, "g": {"id": "other-model"}},
                 main={"sparsity": 0.7, "methods": ["dense", "wanda", "wanda_owl"], "seeds": {"m": [0, 1, 2], "g": [0]}},
                 sweep={"models": ["m"], "methods": ["wanda"], "sparsities": [0.5, 0.7], "seeds": [0, 3]}, ablation=None)
    runs = runs_of(cfg)
    batches = grid.run_batches(cfg, runs)
    labels = [label for label, _ in batches]
    assert labels == ["main m uncalibrated", "main m seed 0", "main m seed 1", "main m seed 2",
                      "main g uncalibrated", "main g seed 0", "sweep m seed 0", "sweep m seed 3"]
    keys = [k for _, batch in batches for k in batch]
    assert sorted(keys) == sorted(runs) and len(keys) == len(set(keys))  # every run, once
    assert dict(batches)["main m seed 1"] == [("m", "wanda_s0.7_seed1"), ("m", "wanda_owl_s0.7_m5_l0.08_seed1")]
    # wanda at 70% is in main and sweep: seed 0 ran with main, so the sweep's seed-0 batch is the rest
    assert dict(batches)["sweep m seed 0"] == [("m", "wanda_s0.5_seed0")]
    assert ("m", "wanda_s0.7_seed3") in dict(batches)["sweep m seed 3"]


def test_the_batches_command_lists_only_unfinished_runs(tmp_path, capsys):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump({"name": "c", "models": {"m": {"id": "tiny-model"}},
                                        "main": {"sparsity": 0.7, "methods": ["dense", "wanda"], "seeds": [0, 1]}}))
    done = tmp_path / "res" / "runs" / "m" / "wanda_s0.7_seed0" / "result.json"
    done.parent.mkdir(parents=True)
    done.write_text("{}")
    assert grid.main(["batches", str(cfg_path), "--results", str(tmp_path / "res")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["main m uncalibrated", "main m seed 1"]
    assert lines[1].split("\t")[1] == str(tmp_path / "res" / "runs" / "m" / "wanda_s0.7_seed1" / "result.json")


def test_status_estimates_what_is_left_from_finished_runs_of_the_same_kind(tmp_path, capsys):
    cfg = config(models={"m": {"id": "tiny-model"}}, main={"sparsity": 0.7, "methods": ["wanda", "wanda_owl"], "seeds": [0, 1, 2]},
                 sweep={"models": ["m"], "methods": ["wanda"], "sparsities": [0.5], "seeds": [0]}, ablation=None)
    runs = runs_of(cfg)
    batches = grid.run_batches(cfg, runs)
    seconds = {("m", "wanda_s0.7_seed0"): 100.0, ("m", "wanda_owl_s0.7_m5_l0.08_seed0"): 300.0, ("m", "wanda_s0.7_seed1"): 500.0}
    rows = grid.grid_status(runs, batches, seconds)
    assert [r["batch"] for r in rows] == ["main m seed 1", "main m seed 2", "sweep m seed 0"]  # seed 0 is whole
    # a main run is estimated by the median of the 3 finished main runs (300 s), never by a sweep run
    assert rows[0] == {"batch": "main m seed 1", "done": 1, "runs": 2, "cpu_s": 300.0, "basis": [3]}
    assert rows[1]["cpu_s"] == 600.0 and rows[2]["cpu_s"] is None  # no sweep run has finished
    text = grid.format_status(rows, jobs_at_once=2)
    assert "4 runs left: 0.2 CPU hours" in text and "about 0.1 h at 2 jobs at once; 1 runs in batches with no finished" in text
    # through the command line, from result.json timings
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump({"name": "c", "models": {"m": {"id": "tiny-model"}},
                                        "main": {"sparsity": 0.7, "methods": ["wanda"], "seeds": [0, 1]}}))
    done = tmp_path / "res" / "runs" / "m" / "wanda_s0.7_seed0" / "result.json"
    done.parent.mkdir(parents=True)
    done.write_text(json.dumps({"timings_s": {"total": 7200.0}}))
    assert grid.main(["status", str(cfg_path), "--results", str(tmp_path / "res"), "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "main m seed 1" in out and "2.0" in out and "1 runs left: 2.0 CPU hours" in out and "main m seed 0 " not in out


def test_each_call_prioritises_the_first_unfinished_batch_and_adds_the_next():
    assert grid.next_invocation([]) is None
    assert grid.next_invocation([("a", ["x"])]) == ("a", ["x"], ["x"])
    assert grid.next_invocation([("a", ["x", "y"]), ("b", ["z"]), ("c", ["w"])]) == ("a", ["x", "y"], ["x", "y", "z"])


def test_running_in_batches_goes_on_until_every_batch_is_finished():
    pending = {"a": ["a1", "a2"], "b": ["b1"], "c": ["c1", "c2"]}
    finished, calls = set(), []

    def unfinished():
        return [(label, [t for t in ts if t not in finished]) for label, ts in pending.items() if set(ts) - finished]

    def snakemake(prioritised, targets):
        calls.append((prioritised, targets))
        finished.update(targets)  # snakemake makes every target it is given
        return 0

    lines = []
    assert grid.run_in_batches(unfinished, snakemake, log=lines.append) == 0
    # b was finished by the first call, as its second batch, so the next call starts at c
    assert calls == [(["a1", "a2"], ["a1", "a2", "b1"]), (["c1", "c2"], ["c1", "c2"])]
    assert lines[-1] == "== every batch is finished" and "UTC a (and the next batch)" in lines[0]


def test_running_in_batches_stops_at_a_failing_call_and_at_a_batch_that_stays_unfinished():
    calls = []
    assert grid.run_in_batches(lambda: [("a", ["a1"])], lambda p, t: calls.append(t) or 3, log=lambda line: None) == 3
    assert len(calls) == 1  # no second call after a failure
    lines, calls = [], []
    # snakemake reports success but a1 is still missing (e.g. a target path it does not make): no endless loop
    assert grid.run_in_batches(lambda: [("a", ["a1"])], lambda p, t: calls.append(t) or 0, log=lines.append) == 1
    assert len(calls) == 1 and lines[-1].endswith("a: snakemake succeeded but these runs are still missing: a1")


def test_the_run_command_calls_snakemake_with_the_batches_and_the_options_after_the_double_dash(tmp_path, monkeypatch, capsys):
    cfg_path = tmp_path / "c.yaml"
    results = tmp_path / "res"
    cfg_path.write_text(yaml.safe_dump({"name": "res", "results_dir": str(tmp_path), "models": {"m": {"id": "tiny-model"}},
                                        "main": {"sparsity": 0.7, "methods": ["dense", "wanda"], "seeds": [0, 1]}}))
    commands = []

    def fake_call(command):
        commands.append(command)
        for target in command[command.index("--") + 1:]:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            Path(target).write_text("{}")
        return 0

    monkeypatch.setattr("subprocess.call", fake_call)
    assert grid.main(["run", str(cfg_path), "--", "--cores", "2", "--resources", "gpu=1"]) == 0
    first = commands[0]
    assert first[1:3] == ["-m", "snakemake"] and first[3:7] == ["--cores", "2", "--resources", "gpu=1"]
    assert first[first.index("--configfile") + 1] == str(cfg_path)
    dense, seed0 = (str(results / "runs" / "m" / r / "result.json") for r in ("dense", "wanda_s0.7_seed0"))
    assert first[first.index("--prioritize") + 1:first.index("--")] == [dense]
    assert first[first.index("--") + 1:] == [dense, seed0]
    assert len(commands) == 2 and commands[1][-1].endswith("wanda_s0.7_seed1/result.json")
    assert "every batch is finished" in capsys.readouterr().out
    # a dry run makes one call; options are for run only; run writes where the config says
    commands.clear()
    (results / "runs" / "m" / "wanda_s0.7_seed1" / "result.json").unlink()
    assert grid.main(["run", str(cfg_path), "--", "-n"]) == 0 and len(commands) == 1
    for argv, why in ((["batches", str(cfg_path), "--", "-n"], "-n: snakemake options are for the run command only"),
                      (["run", str(cfg_path), "--results", "x"], "--results x: not for run")):
        with pytest.raises(SystemExit) as caught:
            grid.main(argv)
        err = capsys.readouterr().err
        assert caught.value.code == 2 and why in err and err.count("\n") == 1


@pytest.mark.parametrize("options, dry", [(["-n"], True), (["--dry-run"], True), (["-np", "--cores", "2"], True),
                                          (["--cores", "2", "-pn"], True), (["--cores", "2", "--resources", "gpu=1"], False),
                                          (["-j2", "-p"], False), ([], False)])
def test_a_dry_run_is_recognised_as_snakemake_would_read_it(options, dry):
    assert grid.is_dry_run(options) is dry


def test_a_resumed_run_costs_its_process_time_plus_the_pruning_it_restored():
    timings = {"calibration": 10.0, "pruning": 900.0, "evaluation": 1600.0, "total": 1700.0}
    assert grid.run_seconds({"timings_s": timings, "pruning_restored": True}) == 2610.0
    assert grid.run_seconds({"timings_s": timings, "pruning_restored": False}) == 1700.0
    assert grid.run_seconds({"timings_s": {"total": 50.0}}) == 50.0  # results written before runs could resume


def test_the_batches_command_refuses_a_bad_config_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"models": {"m": {"id": "x"}}, "main": {"sparsity": 1.5, "methods": ["wanda"]}}))
    for path, why in ((bad, "main.sparsity: 1.5"), (tmp_path / "missing.yaml", "No such file")):
        with pytest.raises(SystemExit) as caught:
            grid.main(["batches", str(path)])
        err = capsys.readouterr().err
        assert caught.value.code == 2 and err.count("\n") == 1 and str(path) in err and why in err
