"""bench/noise_floor.py: the spread measures on made-up perplexities (the measurement itself is the lead's)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location("noise_floor", Path(__file__).resolve().parents[1] / "bench" / "noise_floor.py")
noise_floor = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(noise_floor)


def test_log_ratio_geometric_sd_and_pairwise_spread():
    assert noise_floor.log_ratio(200.0, 100.0) == pytest.approx(math.log(2)) == pytest.approx(noise_floor.log_ratio(100.0, 200.0))
    # logs 0, log 2, log 4: sd = log 2, so the geometric sd is 2
    assert noise_floor.geometric_sd([1.0, 2.0, 4.0]) == pytest.approx(2.0)
    assert math.isnan(noise_floor.geometric_sd([3.0]))
    # pairs (1,2), (1,4), (2,4): log 2, log 4, log 2 -> mean 4/3 log 2
    assert noise_floor.mean_pairwise_log_ratio([1.0, 2.0, 4.0]) == pytest.approx(4 / 3 * math.log(2))


def _runs(seed_ppls, factor_ppls, method="wanda", sparsity=0.7):
    runs = [{"config": "base", "seed": k, "method": method, "sparsity": sparsity, "ppl": p} for k, p in enumerate(seed_ppls)]
    runs += [{"config": name, "seed": 0, "method": method, "sparsity": sparsity, "ppl": p} for name, p in factor_ppls.items()]
    return runs


def test_summary_names_what_dominates():
    seeds_wide = _runs([100.0, 150.0, 80.0], {"threads": 101.0, "calib_batch_size": 99.0, "attn_implementation": 100.5})
    (row,) = noise_floor.summarise(seeds_wide, base_seed=0)
    assert row["base_ppl"] == 100.0 and row["seed_ppls"] == [100.0, 150.0, 80.0]
    assert row["log_ratio"]["threads"] == pytest.approx(math.log(1.01))
    assert row["max_float_log_ratio"] == pytest.approx(math.log(100 / 99))
    assert row["dominates"] == "seed"
    float_wide = _runs([100.0, 101.0], {"threads": 120.0, "calib_batch_size": 100.0, "attn_implementation": 100.0})
    assert noise_floor.summarise(float_wide, base_seed=0)[0]["dominates"] == "float path"


def test_owl_vs_uniform_pairs_the_same_configuration_and_seed():
    runs = _runs([100.0, 200.0], {"threads": 110.0}) + _runs([90.0, 220.0], {"threads": 99.0}, method="wanda_owl")
    ratios = {(r["config"], r["seed"]): r["ratio"] for r in noise_floor.owl_vs_uniform(runs)}
    assert ratios == {("base", 0): pytest.approx(0.9), ("base", 1): pytest.approx(1.1), ("threads", 0): pytest.approx(0.9)}


def test_configurations_run_the_base_seed_first_and_change_one_factor_at_a_time():
    configs = noise_floor.configurations([0, 1, 2], base_seed=1)
    assert [(c["config"], c["seed"]) for c in configs] == [("base", 1), ("base", 0), ("base", 2), ("threads", 1),
                                                          ("calib_batch_size", 1), ("attn_implementation", 1)]
    for c in configs[3:]:
        changed = {k for k in noise_floor.BASE if c[k] != noise_floor.BASE[k]}
        assert changed == {c["config"]}


def test_mixed_precision_runs_at_every_seed_and_pairs_with_the_base_by_seed():
    configs = noise_floor.configurations([0, 1, 2], base_seed=0, mixed_forward_dtype="bfloat16")
    mixed = [c for c in configs if c["config"] == "mixed"]
    assert [c["seed"] for c in mixed] == [0, 1, 2] and all(c["forward_dtype"] == "bfloat16" for c in mixed)
    runs = _runs([100.0, 200.0, 400.0], {}) + [
        {"config": "mixed", "seed": k, "method": "wanda", "sparsity": 0.7, "ppl": p} for k, p in enumerate([110.0, 220.0, 440.0])]
    (row,) = noise_floor.precision_vs_base(runs)
    assert row["ratios"] == {0: pytest.approx(1.1), 1: pytest.approx(1.1), 2: pytest.approx(1.1)}
    assert row["ratio"] == pytest.approx(1.1) and row["n_pairs"] == 3 and not row["interval_holds_1"]
    assert row["seed_geometric_sd"] == pytest.approx(2.0)
    missing = [r for r in runs if not (r["config"] == "mixed" and r["seed"] == 2)]
    assert noise_floor.precision_vs_base(missing)[0]["only_one_side"] == [2]  # reported, not dropped
