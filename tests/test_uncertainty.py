"""Aggregation over calibration seeds (owl/uncertainty.py): known geometric means and intervals."""

from __future__ import annotations

import math

import pytest

from owl import uncertainty as u

# Student's t, 97.5% quantile (printed tables: 12.706, 4.303, 2.776)
T975 = {1: 12.706204736174694, 2: 4.302652729749462, 4: 2.7764451051977934}


def test_t_quantile_matches_the_printed_table():
    for dof, value in T975.items():
        assert u.t_quantile(0.975, dof) == pytest.approx(value, rel=1e-9)


def test_cell_geometric_mean_sd_range_and_n():
    cell = u.summarise_cell([1.0, 10.0, 100.0])
    assert cell.mean == pytest.approx(10.0)
    assert cell.gsd == pytest.approx(10.0)  # sd of the logs (ddof 1) is ln 10
    assert (cell.low, cell.high, cell.n) == (1.0, 100.0, 3)
    one = u.summarise_cell([1459.2916702936477])
    assert one == u.CellSummary(1459.2916702936477, 1.0, 1459.2916702936477, 1459.2916702936477, 1)  # the value itself
    assert u.summarise_cell([float("nan"), 4.0]).n == 1  # a run without a number is not a seed
    empty = u.summarise_cell([])
    assert empty.n == 0 and math.isnan(empty.mean)
    with pytest.raises(ValueError, match="positive"):
        u.summarise_cell([0.0, 1.0])


def test_pairing_uses_the_same_seed_and_reports_the_unpaired():
    owl = {0: 100.0, 1: 200.0, 2: 50.0, 5: 1.0}
    uniform = {2: 100.0, 1: 100.0, 0: 400.0, 7: 3.0}
    pairing = u.pair_by_seed(owl, uniform)
    assert pairing.ratios == {0: 0.25, 1: 2.0, 2: 0.5}  # seed by seed, not by position
    assert pairing.only_treated == [5] and pairing.only_baseline == [7] and pairing.unpaired
    assert not u.pair_by_seed({0: 1.0}, {0: 2.0}).unpaired


def test_ratio_interval_is_a_t_interval_on_the_log_ratios():
    ratios = [0.5, 0.5 * math.exp(0.1), 0.5 * math.exp(-0.1)]  # mean log ln 0.5, sd 0.1
    summary = u.ratio_interval(ratios)
    half = T975[2] * 0.1 / math.sqrt(3)
    assert summary.ratio == pytest.approx(0.5)
    assert summary.lower == pytest.approx(0.5 * math.exp(-half))
    assert summary.upper == pytest.approx(0.5 * math.exp(half))
    assert (summary.n_pairs, summary.wins) == (3, 3)
    assert u.excludes(summary) == -1  # wholly below 1: OWL better


def test_ratio_interval_that_holds_one_and_the_wins():
    summary = u.ratio_interval([0.8, 1.25, 0.9, 1.1, 0.95])
    assert summary.lower < 1 < summary.upper and u.excludes(summary) == 0
    assert summary.wins == 3 and summary.n_pairs == 5
    logs = [math.log(r) for r in [0.8, 1.25, 0.9, 1.1, 0.95]]
    mean = sum(logs) / 5
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / 4)
    assert math.log(summary.upper) - mean == pytest.approx(T975[4] * sd / math.sqrt(5))
    worse = u.ratio_interval([1.5, 1.6, 1.4])
    assert u.excludes(worse) == 1 and worse.wins == 0


def test_one_pair_gives_no_interval_never_a_claim():
    summary = u.ratio_interval([0.5])
    assert summary.ratio == 0.5 and summary.n_pairs == 1 and summary.wins == 1
    assert math.isnan(summary.lower) and math.isnan(summary.upper) and not summary.has_interval
    assert u.excludes(summary) == 0
    none = u.ratio_interval([])
    assert none.n_pairs == 0 and math.isnan(none.ratio)


def test_mean_stderr_of_independent_tasks():
    assert u.mean_stderr([0.03, 0.04]) == pytest.approx(0.025)  # sqrt(0.0009 + 0.0016) / 2
    assert u.mean_stderr([0.01] * 4) == pytest.approx(0.005)
    assert math.isnan(u.mean_stderr([]))
