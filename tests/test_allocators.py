"""The allocation zoo: each map against hand computations, the alpha estimator against known power
laws, every allocator end to end through the CLI, and the statistics computed once."""

import json
import logging
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from owl import pipeline
from owl.allocation import (
    alphapruning_sparsities, atp_beta_bound, atp_sparsities, dlp_sparsities, dsa_importance, dsa_out_of_domain, dsa_sparsities,
)
from owl.allocators import ALLOCATORS, allocate, block_means
from owl.cli import main
from owl.errors import OwlError
from owl.settings import PruneSettings
from owl.spectrum import alpha_peak, esd_eigenvalues, layer_alpha
from owl.statistics import CalibrationStatistics, log_score_variance

FAST = settings(max_examples=100, deadline=None, database=None)
scores = st.lists(st.floats(0.01, 100, allow_nan=False), min_size=2, max_size=40).filter(lambda xs: max(xs) > min(xs) * 1.0001)


# ---- the maps, by hand ------------------------------------------------------------------------------------
def test_dlp_by_hand():
    # S = [1, 2, 3, 6]: r = 1 - S/12 = [11, 10, 9, 6]/12, min-max [1, .8, .6, 0], x 0.3 = [.3, .24, .18, 0],
    # mean .18, densities [.42, .36, .30, .12] -> sparsities [.58, .64, .70, .88]
    assert dlp_sparsities([1, 2, 3, 6], 0.7, 0.15) == pytest.approx([0.58, 0.64, 0.70, 0.88], abs=1e-12)


def test_dsa_by_hand():
    # ln|x| of [.5, 1, 2, 4] is ln2 [-1, 0, 1, 2]: deviations ln2 [-1.5, -.5, .5, 1.5], variance 5 ln2^2 / 3;
    # [1, 1, 1, 3]: [0, 0, 0, ln3], variance (3 (ln3/4)^2 + (3 ln3/4)^2) / 3 = ln3^2 / 4; [2, 2, 2, 2]: 0
    blocks = [[0.5, 1, 2, 4], [1, 1, 1, 3], [0.1, 0.2, 0.3, 0.4], [2, 2, 2, 2]]
    variances = [log_score_variance([torch.tensor(b[:2]), torch.tensor(b[2:])]) for b in blocks]  # a block's linears together
    assert variances[0] == pytest.approx(5 * math.log(2) ** 2 / 3, rel=1e-12)
    assert variances[1] == pytest.approx(math.log(3) ** 2 / 4, rel=1e-12)
    assert variances[3] == 0.0
    importance = [dsa_importance(v) for v in variances]  # asin(atan(var)), every block inside asin's domain
    assert importance == pytest.approx([0.741237, 0.297415, 0.354154, 0.0], abs=1e-6)
    # 1 - minmax(I) = [0, .5988, .5222, 1] x 0.16, mean .084839; sparsity 1 - (r - mean + 0.3)
    assert dsa_sparsities(variances, 0.7, 0.08) == pytest.approx([0.784839, 0.689037, 0.701285, 0.624839], abs=1e-6)
    assert dsa_sparsities(variances, 0.7, 0.08)[0] == pytest.approx(0.7 + 0.16 * (0.59876 + 0.52221 + 1) / 4, abs=1e-5)


def test_dsa_statistic_takes_zero_scores_as_one():
    # ABSLOG replaces zeros by 1 (ln 1 = 0) before the variance: [0, e, e^2] has logs [0, 1, 2], variance 1
    logs_0_1_2 = [torch.tensor([0.0, math.e], dtype=torch.float64), torch.tensor([math.e ** 2], dtype=torch.float64)]
    assert log_score_variance(logs_0_1_2) == pytest.approx(1.0, rel=1e-12)
    with pytest.raises(OwlError, match="NaN or infinite"):
        log_score_variance([torch.tensor([1.0, float("inf")])])
    with pytest.raises(OwlError, match="at least 2"):
        log_score_variance([torch.tensor([1.0])])


def test_dsa_outside_asin_domain_is_least_pruned_as_released():
    # atan(var) > 1 for var > tan(1) = 1.5574: the official expression is NaN there, returned as 0.0
    assert dsa_importance(math.tan(1.0) * (1 - 1e-12)) == pytest.approx(math.pi / 2, abs=1e-5)
    assert dsa_importance(1.56) == 0.0 and dsa_importance(math.inf) == 0.0
    variances = [1.0, 1.4, 1.6, 3.0]
    assert dsa_out_of_domain(variances) == [2, 3]
    out = dsa_sparsities(variances, 0.7, 0.08)
    assert out[2] == out[3] == min(out)  # the largest variances, pruned least
    assert out == pytest.approx(dsa_sparsities([1.0, 1.4, 0.0, 0.0], 0.7, 0.08), abs=1e-15)
    assert dsa_sparsities([1.6, 2.0, 3.3], 0.6, 0.08) == [0.6] * 3  # every block outside: they tie, uniform


def test_dsa_warns_once_naming_the_blocks_outside_the_domain(caplog):
    with caplog.at_level(logging.WARNING, logger="owl.allocators"):
        out = allocate("dsa", [1.0, 1.4, 1.6, 3.0], 0.7, 0.08, [10] * 4, PruneSettings())
    assert out == dsa_sparsities([1.0, 1.4, 1.6, 3.0], 0.7, 0.08)
    assert len(caplog.records) == 1 and "blocks 2, 3 " in caplog.text and "least pruned" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="owl.allocators"):
        allocate("dsa", [1.0, 1.4], 0.7, 0.08, [10] * 2, PruneSettings())
        allocate("dsa", [1.6, 2.0], 0.7, 0.08, [10] * 2, PruneSettings())
    assert len(caplog.records) == 1 and "blocks 0, 1 " in caplog.text and "uniform" in caplog.text


def test_alphapruning_by_hand():
    # q = [2, 3, 4, 6]: r = [.8, .9, 1.0, 1.2]; scale 0.7 * 4 / 3.9
    expected = [r * 0.7 * 4 / 3.9 for r in (0.8, 0.9, 1.0, 1.2)]
    assert alphapruning_sparsities([2, 3, 4, 6], 0.7, 0.2) == pytest.approx(expected, abs=1e-12)
    # parameter-weighted: P = [1, 1, 2, 2] -> scale 0.7 * 6 / (0.8 + 0.9 + 2 + 2.4)
    weighted = alphapruning_sparsities([2, 3, 4, 6], 0.7, 0.2, [1, 1, 2, 2])
    assert weighted == pytest.approx([r * 0.7 * 6 / 6.1 for r in (0.8, 0.9, 1.0, 1.2)], abs=1e-12)
    assert math.fsum(p * s for p, s in zip([1, 1, 2, 2], weighted)) / 6 == pytest.approx(0.7, abs=1e-12)


def test_atp_by_hand_and_its_bound():
    assert atp_sparsities(4, 0.7, 0.1) == pytest.approx([0.55, 0.65, 0.75, 0.85], abs=1e-12)
    assert atp_beta_bound(32, 0.7) == pytest.approx(0.6 / 31)
    assert atp_beta_bound(30, 0.3) == pytest.approx(0.6 / 29)
    with pytest.raises(OwlError, match="above ATP's bound"):
        atp_sparsities(32, 0.7, 0.02)
    with pytest.raises(OwlError, match="outside \\(0, 1\\)"):  # the bound itself puts the last block at 1
        atp_sparsities(4, 0.7, 0.2)


@FAST
@given(scores, st.floats(0.3, 0.7), st.floats(0.001, 0.1))
def test_dlp_mean_range_and_direction(values, target, alpha):
    out = dlp_sparsities(values, target, alpha)
    assert math.fsum(out) / len(out) == pytest.approx(target, abs=1e-12)
    assert max(out) - min(out) == pytest.approx(2 * alpha, abs=1e-9)
    order = sorted(range(len(values)), key=lambda i: values[i])
    assert all(out[a] <= out[b] + 1e-12 for a, b in zip(order, order[1:]))  # a higher mean score is pruned more


@FAST
@given(st.lists(st.floats(0, 1.55), min_size=2, max_size=40).filter(lambda xs: max(xs) > min(xs) + 1e-3),
       st.floats(0.3, 0.7), st.floats(0.001, 0.1))
def test_dsa_mean_range_and_direction(variances, target, lamda):
    out = dsa_sparsities(variances, target, lamda)  # every variance inside asin's domain
    assert math.fsum(out) / len(out) == pytest.approx(target, abs=1e-12)
    assert max(out) - min(out) == pytest.approx(2 * lamda, abs=1e-9)
    order = sorted(range(len(variances)), key=lambda i: variances[i])
    assert all(out[a] <= out[b] + 1e-12 for a, b in zip(order, order[1:]))  # a larger variance is pruned more


@FAST
@given(scores, st.floats(0.3, 0.7), st.floats(0.01, 0.3))
def test_alphapruning_mean_range_and_direction(values, target, epsilon):
    out = alphapruning_sparsities(values, target, epsilon)
    assert math.fsum(out) / len(out) == pytest.approx(target, abs=1e-12)
    assert max(out) / min(out) == pytest.approx((1 + epsilon) / (1 - epsilon), rel=1e-9)  # a relative range
    order = sorted(range(len(values)), key=lambda i: values[i])
    assert all(out[a] <= out[b] + 1e-12 for a, b in zip(order, order[1:]))  # a higher alpha is pruned more


@FAST
@given(st.integers(2, 80), st.floats(0.3, 0.7), st.floats(0, 1))
def test_atp_mean_step_and_direction(blocks, target, fraction):
    beta = fraction * atp_beta_bound(blocks, target) * 0.999
    out = atp_sparsities(blocks, target, beta)
    assert math.fsum(out) / blocks == pytest.approx(target, abs=1e-12)
    assert all(b - a == pytest.approx(beta, abs=1e-12) for a, b in zip(out, out[1:]))  # deeper blocks pruned more


def test_equal_statistics_or_zero_range_give_uniform():
    assert dlp_sparsities([2, 2, 2], 0.6, 0.15) == [0.6] * 3
    assert dlp_sparsities([1, 2, 3], 0.6, 0.0) == [0.6] * 3
    assert dsa_sparsities([0.5, 0.5, 0.5], 0.6, 0.08) == [0.6] * 3
    assert dsa_sparsities([0.1, 0.5, 0.9], 0.6, 0.0) == [0.6] * 3
    assert alphapruning_sparsities([3, 3], 0.6, 0.2) == [0.6] * 2
    assert atp_sparsities(5, 0.6, 0.0) == [0.6] * 5


def test_every_allocator_refuses_a_block_outside_0_1_the_same_way():
    cases = [("dlp", [1, 2, 3, 60], 0.9, 0.2), ("alphapruning", [1, 2, 3, 60], 0.9, 0.5), ("owl", [1, 2, 3, 60], 0.9, 0.2),
             ("dsa", [0.1, 0.2, 0.3, 1.5], 0.9, 0.2),
             ("atp", None, 0.5, 1 / 3)]  # ATP's bound itself: the first block at 0
    for name, values, target, value in cases:
        with pytest.raises(OwlError, match=r"allocation puts block \d+ at sparsity .* outside \(0, 1\)"):
            allocate(name, values, target, value, [10] * 4, PruneSettings())


def test_registry_names_its_statistic_and_defaults():
    assert set(ALLOCATORS) == {"uniform", "owl", "dlp", "dsa", "alphapruning", "atp"}
    assert all(ALLOCATORS["dsa"].default_value(m) == 0.08 for m in ("magnitude", "wanda", "sparsegpt"))
    assert ALLOCATORS["alphapruning"].default_value("wanda") == 0.2 and ALLOCATORS["alphapruning"].default_value("magnitude") == 0.3
    assert ALLOCATORS["dlp"].default_value("sparsegpt") == 0.15 and ALLOCATORS["atp"].default_value("wanda") is None
    assert {a.statistic_source for a in ALLOCATORS.values()} == {None, "calibration", "weights"}
    assert block_means([[1.0, 3.0], [2.0, 2.0, 5.0]]) == [2.0, 3.0]


# ---- the power-law exponent -------------------------------------------------------------------------------
def pareto_spectrum(alpha: float, n: int, xmin: float = 1.0) -> torch.Tensor:
    """Deterministic quantiles of a power law p(x) ~ x^-alpha for x >= xmin."""
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return xmin * (1 - u) ** (-1.0 / (alpha - 1))


@pytest.mark.parametrize("alpha", [2.0, 3.0, 4.5])
def test_alpha_peak_recovers_a_known_power_law(alpha):
    assert alpha_peak(pareto_spectrum(alpha, 2000)) == pytest.approx(alpha, abs=0.15)


def test_alpha_peak_of_a_matrix_with_that_spectrum():
    n, alpha = 300, 3.0
    eigs = pareto_spectrum(alpha, n)
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))
    v, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))
    weight = (u * eigs.sqrt()) @ v.T
    assert esd_eigenvalues(weight) == pytest.approx(eigs.sort().values, rel=1e-8)
    assert layer_alpha(weight) == pytest.approx(alpha_peak(eigs), rel=1e-6)
    assert layer_alpha(weight) == pytest.approx(alpha, abs=0.35)
    assert layer_alpha(weight.float()) == pytest.approx(layer_alpha(weight), abs=1e-3)  # float32 weights


def test_alpha_peak_by_hand():
    # 13 eigenvalues: peak bin 35 of log10, left edge 1.00237; candidates 0..7 (<= 1.5 x 1.00237);
    # the smallest KS distance is at xmin = 1.03 (index 5), alpha = 1 + 8 / sum(ln(e_k / 1.03)).
    eigs = torch.tensor([0.2, 0.5, 1.0, 1.01, 1.02, 1.03, 1.04, 1.3, 2.0, 3.0, 5.0, 9.0, 20.0], dtype=torch.float64)
    expected = 1 + 8 / sum(math.log(e / 1.03) for e in [1.03, 1.04, 1.3, 2.0, 3.0, 5.0, 9.0, 20.0])
    assert alpha_peak(eigs) == pytest.approx(expected, rel=1e-12)
    assert alpha_peak(eigs) == pytest.approx(1.920723, abs=1e-6)


def test_alpha_peak_refuses_what_has_no_spectrum():
    with pytest.raises(OwlError, match="positive finite"):
        alpha_peak(torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(OwlError, match="flat"):
        alpha_peak(torch.ones(5))


# ---- end to end ------------------------------------------------------------------------------------------
SMALL = ["--nsamples", "4", "--seqlen", "32", "--eval_limit", "2", "--device", "cpu", "--calib_batch_size", "2", "-q"]


def run(model_dir, out, *flags):
    assert main(["prune", "--model", str(model_dir), "--save", str(out), *SMALL, *flags]) == 0
    return json.loads((out / "result.json").read_text())


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_every_allocator_with_every_method(tiny_model_dirs, owl_env, method):
    flags = {"uniform": [], "owl": ["--Lamda", "0.1"], "dlp": [], "dsa": [], "alphapruning": [], "atp": ["--beta", "0.05"]}
    for name, extra in flags.items():
        result = run(tiny_model_dirs["llama"], owl_env / f"{method}-{name}", "--prune_method", method, "--sparsity_ratio", "0.5",
                     "--allocation", name, *extra)
        assert result["allocation"] == name
        sparsities = result["layer_sparsities"]
        assert sum(sparsities) / len(sparsities) == pytest.approx(0.5, abs=1e-9)
        assert result["achieved_sparsity"] == pytest.approx(0.5, abs=0.02)
        assert (result["allocation_scores"] is None) == (name in ("uniform", "atp"))
        if name in ("dlp", "alphapruning", "atp"):
            assert max(sparsities) > min(sparsities)
    assert result["allocation_params"] == {"beta": 0.05}


def test_paper_alias_equals_base_method_with_allocation(tiny_model_dirs, owl_env):
    alias = run(tiny_model_dirs["llama"], owl_env / "alias", "--prune_method", "wanda_dlp", "--sparsity_ratio", "0.5")
    flag = run(tiny_model_dirs["llama"], owl_env / "flag", "--prune_method", "wanda", "--allocation", "dlp", "--sparsity_ratio", "0.5")
    assert alias["layer_sparsities"] == flag["layer_sparsities"] and alias["ppl"] == flag["ppl"]
    assert alias["allocation_params"] == {"dlp_alpha": 0.15, "dlp_reduce": "mean"}


def test_statistics_pass_once_for_every_allocator_and_spectra_once(tiny_model_dirs, owl_env, monkeypatch):
    calls = {"statistics": 0, "spectra": 0}
    real_statistics, real_alphas = pipeline.compute_statistics, pipeline.block_alphas

    def counting_statistics(*args, **kwargs):
        calls["statistics"] += 1
        return real_statistics(*args, **kwargs)

    def counting_alphas(*args, **kwargs):
        calls["spectra"] += 1
        return real_alphas(*args, **kwargs)

    monkeypatch.setattr(pipeline, "compute_statistics", counting_statistics)
    monkeypatch.setattr(pipeline, "block_alphas", counting_alphas)
    for i, flags in enumerate([["--allocation", "owl"], ["--allocation", "dlp"], ["--allocation", "dlp", "--dlp_reduce", "median"], ["--allocation", "dsa"],
                               ["--allocation", "alphapruning"], ["--allocation", "alphapruning", "--epsilon", "0.1"]]):
        run(tiny_model_dirs["llama"], owl_env / f"r{i}", "--prune_method", "wanda", "--sparsity_ratio", "0.5", *flags)
    assert calls == {"statistics": 1, "spectra": 1}


def test_dlp_block_means_are_sums_in_double_not_float32():
    """A float32 sum's rounding depends on the CPU's vector width; the mean of 2^20 scores must
    match the exactly rounded one (math.fsum), which a float32 sum misses by ~1e-7."""
    g = torch.Generator().manual_seed(5)
    layers = {"a": torch.nn.Linear(1024, 512, bias=False), "b": torch.nn.Linear(1024, 512, bias=False)}
    for layer in layers.values():
        layer.weight.data = torch.rand(512, 1024, generator=g) * 3
    rows = {name: torch.rand(1024, generator=g) + 0.5 for name in layers}
    stats = CalibrationStatistics([rows])
    [mean] = stats.score_means([layers])
    scores = [float(x) for name, layer in layers.items()
              for x in (layer.weight.detach().abs() * rows[name].double().sqrt().float()).flatten()]
    assert mean == pytest.approx(math.fsum(scores) / len(scores), rel=1e-13)


def test_dlp_ranks_the_mean_wanda_score_of_each_block(tiny_model_dirs, owl_env):
    from owl.masks import wanda_scores
    from owl.models import find_decoder_blocks, find_linear_sublayers, load_model
    from owl.statistics import CalibrationStatistics

    result = run(tiny_model_dirs["llama"], owl_env / "d", "--prune_method", "wanda", "--allocation", "dlp", "--sparsity_ratio", "0.5")
    stats = CalibrationStatistics.load(result["statistics_path"])
    model, _ = load_model(str(tiny_model_dirs["llama"]), "float32")
    for block, rows, recorded in zip(find_decoder_blocks(model), stats.scaler_rows, result["allocation_scores"]):
        flat = torch.cat([wanda_scores(layer.weight, rows[name]).flatten() for name, layer in find_linear_sublayers(block).items()])
        assert recorded == pytest.approx(float(flat.double().mean()), rel=1e-6)
    assert result["layer_sparsities"] == pytest.approx(dlp_sparsities(result["allocation_scores"], 0.5, 0.15), abs=1e-12)


def direct_log_score_variances(model_dir, statistics_path) -> list[float]:
    """DSA's statistic computed the official way: concatenate the block's Wanda scores, zeros to 1,
    ln|x|, torch.var (here in float64)."""
    from owl.masks import wanda_scores
    from owl.models import find_decoder_blocks, find_linear_sublayers, load_model

    stats = CalibrationStatistics.load(statistics_path)
    model, _ = load_model(str(model_dir), "float32")
    variances = []
    for block, rows in zip(find_decoder_blocks(model), stats.scaler_rows):
        flat = torch.cat([wanda_scores(layer.weight, rows[name]).flatten() for name, layer in find_linear_sublayers(block).items()])
        flat = flat.double()
        flat[flat == 0] = 1
        variances.append(float(torch.var(flat.abs().log())))
    return variances


def test_dsa_ranks_the_log_score_variance_of_each_block(tiny_model_dirs, owl_env, caplog):
    with caplog.at_level(logging.WARNING, logger="owl.allocators"):
        result = run(tiny_model_dirs["llama"], owl_env / "d", "--prune_method", "wanda_dsa", "--sparsity_ratio", "0.5")
    assert result["allocation"] == "dsa" and result["allocation_params"] == {"dsa_lambda": 0.08}
    variances = direct_log_score_variances(tiny_model_dirs["llama"], result["statistics_path"])
    assert result["allocation_scores"] == pytest.approx(variances, rel=1e-9)
    assert result["layer_sparsities"] == dsa_sparsities(result["allocation_scores"], 0.5, 0.08)
    # A random tiny model's variances (3.4-3.8) all lie outside asin's domain: as released, a tie, so uniform; said once.
    assert dsa_out_of_domain(variances) == [0, 1, 2, 3] and result["layer_sparsities"] == [0.5] * 4
    assert [r.getMessage() for r in caplog.records if "DSA" in r.getMessage()] == [
        "DSA: blocks 0, 1, 2, 3 have a log-score variance above tan(1) = 1.5574, outside asin's domain in the official "
        "expression asin(atan(var)); every block ties, so the allocation is uniform"]


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_dsa_allocation_is_what_each_method_prunes(tiny_model_dirs, owl_env, monkeypatch, method):
    # The tiny model's variances are all outside asin's domain (above); scaled by 1/4 they lie inside
    # it (0.85-0.95), so the run prunes a non-uniform DSA allocation.
    real = CalibrationStatistics.log_score_variances
    monkeypatch.setattr(CalibrationStatistics, "log_score_variances", lambda self, *a, **k: [v / 4 for v in real(self, *a, **k)])
    result = run(tiny_model_dirs["llama"], owl_env / method, "--prune_method", method, "--allocation", "dsa",
                 "--dsa_lambda", "0.1", "--sparsity_ratio", "0.5")
    sparsities, variances = result["layer_sparsities"], result["allocation_scores"]
    assert sparsities == pytest.approx(dsa_sparsities(variances, 0.5, 0.1), abs=1e-15)
    assert max(sparsities) - min(sparsities) == pytest.approx(0.2, abs=1e-12)
    assert sparsities.index(max(sparsities)) == variances.index(max(variances))  # the largest variance is pruned most
    assert result["layer_achieved_sparsities"] == pytest.approx(sparsities, abs=0.02)
    assert result["allocation_params"] == {"dsa_lambda": 0.1}


BAD = [
    (["--allocation", "bogus"], "--allocation 'bogus'"),
    (["--allocation", "atp"], "--allocation atp needs --beta"),
    (["--allocation", "atp", "--beta", "0.9"], "above ATP's bound"),
    (["--allocation", "dlp", "--dlp_alpha", "0.6"], "--dlp_alpha 0.6"),
    (["--allocation", "dsa", "--dsa_lambda", "0.6"], "--dsa_lambda 0.6"),
    (["--allocation", "dsa", "--dsa_lambda", "-0.1"], "--dsa_lambda -0.1"),
    (["--prune_method", "wanda_dsa", "--sparsity_type", "2:4", "--sparsity_ratio", "0.5"], "does not apply the allocation to N:M"),
    (["--allocation", "alphapruning", "--epsilon", "1.5"], "--epsilon 1.5"),
    (["--allocation", "dlp", "--dlp_reduce", "max"], "--dlp_reduce 'max'"),
    (["--prune_method", "wanda_owl", "--allocation", "dlp"], "contradicts"),
    (["--allocation", "dlp", "--sparsity_type", "2:4", "--sparsity_ratio", "0.5"], "does not apply the allocation to N:M"),
    (["--allocation", "dlp", "--dlp_alpha", "0.45", "--sparsity_ratio", "0.9"], "outside (0, 1)"),
    (["--eval_dataset", "ptb"], "--eval_dataset 'ptb'"),
]


@pytest.mark.parametrize("flags, expected", BAD)
def test_bad_allocation_input_one_line_no_result(tiny_model_dirs, owl_env, capsys, flags, expected):
    out = owl_env / "bad"
    assert main(["prune", "--model", str(tiny_model_dirs["llama"]), "--save", str(out), *SMALL, "--prune_method", "wanda", *flags]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("owl: error:") and expected in errors[0], errors
    assert not (out / "result.json").exists()


def test_validation_split_is_its_own_perplexity(tiny_model_dirs, owl_env):
    result = run(tiny_model_dirs["llama"], owl_env / "v", "--prune_method", "wanda", "--sparsity_ratio", "0.5",
                 "--eval_dataset", "wikitext2_validation")
    assert list(result["ppl"]) == ["wikitext2_validation"]
