"""The zoo's grid and its tuning rule (owl/zoo.py): pure functions of a config and of trial records."""

import math
from pathlib import Path

import pytest
import yaml

from owl import grid
from owl.errors import OwlError
from owl.allocators import ALLOCATORS
from owl.report.zoo import ALLOCATOR_COLORS
from owl.settings import ALLOCATIONS
from owl.zoo import HYPER_SYMBOLS, HYPER_TAGS, choose_tuned, expand_zoo, reported_settings, tuned_config, zoo_point_id

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())


def config(**zoo):
    cfg = {"models": {"m": {"id": "tiny", "owl": {"Hyper_m": 5, "Lamda": 0.08}}},
           "main": {"sparsity": 0.7, "methods": ["wanda"]},
           "zoo": {"models": ["m"], "methods": ["wanda", "sparsegpt"], "allocators": ["uniform", "owl", "dlp", "alphapruning", "atp"],
                   "settings": {"eval_dtype": "float32"}, "seeds": {"m": [0, 1]},
                   "tuning": {"models": ["m"], "seeds": [100], "eval_limit": 8,
                              "values": {"owl": [0.04, 0.08], "dlp": [0.1, 0.15], "alphapruning": [0.1, 0.2], "atp": [0.005, 0.01]}},
                   **zoo}}
    return grid.validate_config(cfg, SCHEMA)


def test_reported_runs_are_defaults_and_tuned_values_without_repeats():
    cfg = config(tuned={"m": {"wanda": {"owl": 0.08, "dlp": 0.1, "atp": 0.01}}})
    wanda = reported_settings(cfg["zoo"], "m", "wanda")
    assert ("owl", 0.08, "default, tuned") in wanda  # the tuned lambda is the default: one run
    assert ("dlp", 0.15, "default") in wanda and ("dlp", 0.1, "tuned") in wanda
    assert ("alphapruning", 0.2, "default") in wanda and ("atp", 0.01, "tuned") in wanda
    assert not any(a == "atp" for a, _, _ in reported_settings(cfg["zoo"], "m", "sparsegpt"))  # ATP has no default


def test_expansion_names_settings_and_statistics():
    runs = expand_zoo(config(), grid.model_specs(config()))
    tune = runs[("m", "tune_wanda_dlp_s0.7_a0.1_seed100")]
    assert tune["settings"] == {"eval_dtype": "float32", "eval_dataset": "wikitext2_validation", "eval_limit": 8, "dlp_alpha": 0.1}
    assert tune["method"] == "wanda_dlp" and tune["uses_stats"] and tune["round"] == "wanda value 1"
    owl = runs[("m", "zoo_sparsegpt_owl_s0.7_m5_l0.08_seed1")]
    assert owl["settings"] == {"eval_dtype": "float32", "Lamda": 0.08} and owl["uses_stats"]
    assert not runs[("m", "zoo_wanda_alphapruning_s0.7_e0.2_seed0")]["uses_stats"]  # weights only
    assert runs[("m", "zoo_wanda_s0.7_seed0")]["allocation"] == "uniform"
    # tuning: 2 methods x 4 allocators x 2 values x 1 seed; reported: 2 methods x 4 defaults x 2 seeds
    assert sum(r["sections"] == ["zoo_tuning"] for r in runs.values()) == 16
    assert sum(r["sections"] == ["zoo"] for r in runs.values()) == 16


def test_every_zoo_run_is_a_valid_prune_setting():
    from owl.settings import PruneSettings

    cfg = config(tuned={"m": {"wanda": {"atp": 0.01}}})
    for (model, name), run in expand_zoo(cfg, grid.model_specs(cfg)).items():
        fields = {"Hyper_m": run["Hyper_m"], "Lamda": run["Lamda"], **run["settings"]}
        settings = PruneSettings(model="tiny", prune_method=run["method"], sparsity_ratio=run["sparsity"], seed=run["seed"],
                                 **fields).validate()
        assert settings.allocation_name == run["allocation"]
        assert settings.allocation_value == run["alloc_value"]


def test_tuning_batches_go_round_by_round_before_the_reported_seeds():
    cfg = config()
    labels = [label for label, _ in grid.run_batches(cfg, grid.expand_grid(cfg, grid.model_specs(cfg)))]
    zoo_labels = [label for label in labels if label.startswith("zoo")]
    assert zoo_labels == ["zoo_tuning m wanda value 1 seed 100", "zoo_tuning m wanda value 2 seed 100",
                          "zoo_tuning m sparsegpt value 1 seed 100", "zoo_tuning m sparsegpt value 2 seed 100",
                          "zoo m seed 0", "zoo m seed 1"]


def test_a_method_without_trials_takes_the_values_tuned_with_the_first_tuned_method():
    tuning = {"models": ["m"], "methods": ["wanda"], "seeds": [100], "values": {"dlp": [0.1, 0.15], "atp": [0.005, 0.01]}}
    cfg = config(tuning=tuning, tuned={"m": {"wanda": {"dlp": 0.1, "atp": 0.01}}})
    runs = expand_zoo(cfg, grid.model_specs(cfg))
    assert not any(name.startswith("tune_sparsegpt") for _, name in runs)  # 1 method x 2 allocators x 2 values
    assert sum(r["sections"] == ["zoo_tuning"] for r in runs.values()) == 4
    sparsegpt = reported_settings(cfg["zoo"], "m", "sparsegpt")
    assert ("dlp", 0.1, "tuned") in sparsegpt and ("atp", 0.01, "tuned") in sparsegpt
    assert sparsegpt == reported_settings(cfg["zoo"], "m", "wanda")
    assert ("m", "zoo_sparsegpt_dlp_s0.7_a0.1_seed1") in runs


def test_zoo_runs_stay_out_of_the_paper_sections():
    cfg = config()
    runs = grid.expand_grid(cfg, grid.model_specs(cfg))
    assert ("m", "wanda_s0.7_seed0") in runs and not grid.is_zoo(runs[("m", "wanda_s0.7_seed0")])
    assert all(grid.is_zoo(r) for (m, name), r in runs.items() if name.startswith(("zoo_", "tune_")))


@pytest.mark.parametrize("change, message", [
    ({"tuning": {"models": ["m"], "seeds": [0], "values": {"dlp": [0.1]}}}, "zoo.tuning.seeds: [0] are also reported seeds"),
    ({"tuning": {"models": ["m"], "seeds": [9], "values": {"dlp": [0.1], "atp": [0.01, 0.02]}}}, "same trial budget"),
    ({"tuning": {"models": ["m"], "seeds": [9], "values": {"uniform": [0.1]}}}, "zoo.tuning.values.uniform"),
    ({"tuned": {"m": {"wanda": {"dlp": 0.1}}}, "tuning": None}, "zoo.tuned.m.wanda.dlp: no tuning trials"),
    ({"tuning": {"models": ["m"], "methods": ["magnitude"], "seeds": [9], "values": {"dlp": [0.1]}}},
     "zoo.tuning.methods: 'magnitude' is not one of zoo.methods (wanda, sparsegpt)"),
    ({"tuning": {"models": ["m"], "methods": ["wanda"], "seeds": [9], "values": {"dlp": [0.1]}},
      "tuned": {"m": {"sparsegpt": {"dlp": 0.1}}}}, "zoo.tuned.m.sparsegpt: sparsegpt has no tuning trials"),
])
def test_bad_zoo_configs_are_one_line(change, message):
    with pytest.raises(grid.ConfigError, match=None) as caught:
        config(**change)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_choice_is_the_lowest_geometric_mean_on_common_seeds():
    trials = [
        {"model": "m", "method": "wanda", "allocation": "dlp", "value": 0.1, "seed": 100, "ppl": 100.0},
        {"model": "m", "method": "wanda", "allocation": "dlp", "value": 0.1, "seed": 101, "ppl": 400.0},  # gmean 200
        {"model": "m", "method": "wanda", "allocation": "dlp", "value": 0.2, "seed": 100, "ppl": 150.0},
        {"model": "m", "method": "wanda", "allocation": "dlp", "value": 0.2, "seed": 101, "ppl": 240.0},  # gmean ~189.7
        {"model": "m", "method": "wanda", "allocation": "atp", "value": 0.01, "seed": 100, "ppl": 50.0},
        {"model": "m", "method": "wanda", "allocation": "atp", "value": 0.02, "seed": 100, "ppl": 60.0},
        {"model": "m", "method": "wanda", "allocation": "atp", "value": 0.02, "seed": 101, "ppl": 1.0},  # seed 101 not common
    ]
    choice = choose_tuned(trials)
    dlp = choice["m"]["wanda"]["dlp"]
    assert dlp["value"] == 0.2 and dlp["gmean"] == pytest.approx(math.sqrt(150 * 240))
    assert choice["m"]["wanda"]["atp"]["value"] == 0.01 and choice["m"]["wanda"]["atp"]["seeds"] == [100]
    assert tuned_config(choice) == {"m": {"wanda": {"dlp": 0.2, "atp": 0.01}}}
    with pytest.raises(OwlError, match="no finite perplexity"):
        choose_tuned([{**trials[0], "ppl": float("nan")}])


def test_every_allocator_is_known_everywhere_the_zoo_names_it():
    tunable = {name for name, allocator in ALLOCATORS.items() if allocator.hyperparameter is not None}
    assert tuple(ALLOCATORS) == ALLOCATIONS and set(ALLOCATOR_COLORS) == set(ALLOCATORS)
    assert set(HYPER_TAGS) == set(HYPER_SYMBOLS) == tunable
    assert len(set(HYPER_TAGS.values())) == len(HYPER_TAGS)  # a run name says which allocator it is
    assert SCHEMA["properties"]["zoo"]["properties"]["allocators"]["items"]["enum"] == list(ALLOCATIONS)
    assert zoo_point_id("tune", "wanda", "dsa", 0.7, 0.08, 5.0) == "tune_wanda_dsa_s0.7_d0.08"
