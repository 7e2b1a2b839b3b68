import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from owl.allocation import double_sum, outlier_ratio, owl_nm_pruned_counts, owl_sparsities, uniform_sparsities
from owl.errors import OwlError

ratio_lists = st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=40)
targets = st.floats(0.3, 0.7)
lamdas = st.floats(0, 0.1)

# database=None: keep hypothesis from writing a .hypothesis/ folder into the working tree.
FAST = settings(max_examples=150, deadline=None, database=None)
SMALL = settings(max_examples=50, deadline=None, database=None)


def not_all_equal(xs):
    return max(xs) != min(xs)


# ---- outlier_ratio -----------------------------------------------------------------------------


def test_double_sum_is_the_exact_sum_to_double_precision_across_chunks():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2_500_003, generator=g) ** 3 * 1e4  # 2 chunk boundaries and a remainder
    exact = math.fsum(x.double().tolist())
    assert double_sum(x) == pytest.approx(exact, rel=1e-14)
    small = x[:50].reshape(5, 10)
    assert double_sum(small, chunk=7) == pytest.approx(math.fsum(small.double().flatten().tolist()), rel=1e-15)


def test_outlier_ratio_counts_strictly_greater():
    scores = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 11.0])  # mean 2
    assert outlier_ratio(scores, 5) == pytest.approx(10.0)  # 11 > 10
    assert outlier_ratio(scores, 5.5) == 0.0  # 11 is not > 11


def test_outlier_ratio_sequence_equals_concatenation():
    g = torch.Generator().manual_seed(0)
    parts = [torch.rand(7, 13, generator=g) ** 4, torch.rand(5, 3, generator=g) ** 4, torch.rand(31, generator=g) ** 4]
    flat = torch.cat([p.flatten() for p in parts])
    for m in (1.5, 3, 5):
        assert outlier_ratio(parts, m) == pytest.approx(outlier_ratio(flat, m), abs=1e-12)


def test_outlier_ratio_dtypes():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(64, 64, generator=g) ** 6
    ref = outlier_ratio(x, 3)
    assert 0 < ref < 100
    assert outlier_ratio(x.double(), 3) == pytest.approx(ref, abs=0.05)
    assert abs(outlier_ratio(x.half(), 3) - ref) < 1.0


def test_outlier_ratio_rejects_bad_input():
    with pytest.raises(OwlError):
        outlier_ratio([], 5)
    with pytest.raises(OwlError):
        outlier_ratio(torch.tensor([1.0, float("nan")]), 5)
    with pytest.raises(OwlError):
        outlier_ratio(torch.ones(3), 0)
    with pytest.raises(OwlError):
        outlier_ratio(torch.ones(0), 5)


# ---- uniform / owl_sparsities ------------------------------------------------------------------


def test_uniform():
    assert uniform_sparsities(3, 0.7) == [0.7, 0.7, 0.7]
    with pytest.raises(OwlError):
        uniform_sparsities(0, 0.5)
    with pytest.raises(OwlError):
        uniform_sparsities(2, 1.0)


def test_owl_known_values():
    s = owl_sparsities([0.0, 5.0, 10.0], 0.7, 0.08)
    # n = [0, .5, 1], r = [0, .08, .16], mean r = .08
    assert s == pytest.approx([0.78, 0.70, 0.62], abs=1e-12)


@FAST
@given(ratio_lists, targets, lamdas)
def test_owl_mean_is_target(ratios, target, lamda):
    s = owl_sparsities(ratios, target, lamda)
    assert len(s) == len(ratios)
    assert abs(math.fsum(s) / len(s) - target) < 1e-9


@FAST
@given(ratio_lists, targets, lamdas)
def test_owl_spread_is_two_lamda(ratios, target, lamda):
    assume(not_all_equal(ratios))
    s = owl_sparsities(ratios, target, lamda)
    assert abs((max(s) - min(s)) - 2 * lamda) < 1e-12


@FAST
@given(ratio_lists, targets, lamdas)
def test_owl_monotone(ratios, target, lamda):
    s = owl_sparsities(ratios, target, lamda)
    for i in range(len(ratios)):
        for j in range(len(ratios)):
            if ratios[i] > ratios[j]:
                assert s[i] <= s[j]


@FAST
@given(
    st.lists(st.tuples(st.floats(0, 100), st.floats(0.01, 1e9)), min_size=1, max_size=40),
    targets,
    lamdas,
)
def test_owl_weighted_mean_is_target(pairs, target, lamda):
    ratios = [p[0] for p in pairs]
    weights = [p[1] for p in pairs]
    s = owl_sparsities(ratios, target, lamda, block_weights=weights)
    weighted = math.fsum(w * x for w, x in zip(weights, s)) / math.fsum(weights)
    assert abs(weighted - target) < 1e-9
    if not_all_equal(ratios):
        assert abs((max(s) - min(s)) - 2 * lamda) < 1e-12


def test_owl_weights_equal_gives_plain_formula():
    ratios = [3.0, 1.0, 7.5, 2.0]
    assert owl_sparsities(ratios, 0.6, 0.05, block_weights=[4, 4, 4, 4]) == pytest.approx(
        owl_sparsities(ratios, 0.6, 0.05), abs=1e-15
    )


@SMALL
@given(st.floats(0, 100), st.integers(1, 30), st.floats(0, 0.99), st.floats(0, 10))
def test_owl_all_equal_gives_target(ratio, n_blocks, target, lamda):
    assert owl_sparsities([ratio] * n_blocks, target, lamda) == [target] * n_blocks


def test_owl_lamda_zero_and_target_zero():
    assert owl_sparsities([1.0, 2.0], 0.0, 0.0) == [0.0, 0.0]
    assert owl_sparsities([1.0, 2.0], 0.5, 0.0) == [0.5, 0.5]


@FAST
@given(ratio_lists, st.floats(0.0, 0.99), st.floats(0.0, 1.0))
def test_owl_out_of_range_raises_naming_block(ratios, target, lamda):
    assume(not_all_equal(ratios) and lamda > 0)
    lo, hi = min(ratios), max(ratios)
    r = [2 * lamda * ((x - lo) / (hi - lo)) for x in ratios]
    mean_r = math.fsum(r) / len(r)
    expected = [target - (x - mean_r) for x in r]
    bad = [i for i, x in enumerate(expected) if not 0 < x < 1]
    if not bad:
        owl_sparsities(ratios, target, lamda)
        return
    with pytest.raises(OwlError) as info:
        owl_sparsities(ratios, target, lamda)
    message = str(info.value)
    assert "\n" not in message
    assert f"block {bad[0]} " in message
    assert "(0, 1)" in message and "Lamda" in message


def test_owl_out_of_range_message():
    with pytest.raises(OwlError, match=r"block 0 at sparsity 1\.15.*outside \(0, 1\).*Lamda 0\.2.*0\.95"):
        owl_sparsities([0.0, 100.0], 0.95, 0.2)
    with pytest.raises(OwlError, match=r"block 1 at sparsity -0\.05"):
        owl_sparsities([0.0, 100.0], 0.15, 0.2)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(outlier_ratios=[1.0, float("nan")], target=0.5, lamda=0.08),
        dict(outlier_ratios=[1.0, float("inf")], target=0.5, lamda=0.08),
        dict(outlier_ratios=[], target=0.5, lamda=0.08),
        dict(outlier_ratios=[1.0, 2.0], target=1.0, lamda=0.08),
        dict(outlier_ratios=[1.0, 2.0], target=-0.1, lamda=0.08),
        dict(outlier_ratios=[1.0, 2.0], target=float("nan"), lamda=0.08),
        dict(outlier_ratios=[1.0, 2.0], target=0.5, lamda=-0.01),
        dict(outlier_ratios=[1.0, 2.0], target=0.5, lamda=float("nan")),
        dict(outlier_ratios=[1.0, 2.0], target=0.5, lamda=0.08, block_weights=[1.0]),
        dict(outlier_ratios=[1.0, 2.0], target=0.5, lamda=0.08, block_weights=[1.0, 0.0]),
    ],
)
def test_owl_validation(kwargs):
    with pytest.raises(OwlError):
        owl_sparsities(**kwargs)


# ---- owl_nm_pruned_counts ----------------------------------------------------------------------


def test_nm_known_values():
    # n_norm = [0, .5, 1] * 2 = [0, 1, 2], mean 1, shift = [-1, 0, 1]
    assert owl_nm_pruned_counts([0.0, 5.0, 10.0], 5, 8, 2) == [6, 5, 4]
    # shifts exactly at .5 round half to even: lamda 1, n_norm [0, 1] -> [-0.5, 0.5] -> [0, 0]
    assert owl_nm_pruned_counts([0.0, 1.0], 4, 8, 1) == [4, 4]
    # lamda 3: [0, 3] - 1.5 -> [-1.5, 1.5] -> [-2, 2]
    assert owl_nm_pruned_counts([0.0, 1.0], 4, 8, 3) == [6, 2]


@FAST
@given(ratio_lists, st.integers(2, 16), st.data())
def test_nm_in_range_and_monotone(ratios, m, data):
    n = data.draw(st.integers(1, m - 1))
    lamda = data.draw(st.integers(0, 6))
    try:
        counts = owl_nm_pruned_counts(ratios, n, m, lamda)
    except OwlError as e:
        assert "block" in str(e) and f"[1, {m - 1}]" in str(e)
        return
    assert all(isinstance(c, int) and 1 <= c <= m - 1 for c in counts)
    for i in range(len(ratios)):
        for j in range(len(ratios)):
            if ratios[i] > ratios[j]:
                assert counts[i] <= counts[j]
    if not_all_equal(ratios):
        assert max(counts) - min(counts) in (lamda - 1, lamda, lamda + 1) or lamda == 0


@SMALL
@given(st.floats(0, 100), st.integers(1, 30), st.integers(0, 5))
def test_nm_all_equal(ratio, n_blocks, lamda):
    assert owl_nm_pruned_counts([ratio] * n_blocks, 5, 8, lamda) == [5] * n_blocks


def test_nm_out_of_range_raises():
    with pytest.raises(OwlError, match=r"prunes 4 of every 4 weights in block 0, outside \[1, 3\]"):
        owl_nm_pruned_counts([0.0, 1.0], 2, 4, 4)
    with pytest.raises(OwlError, match=r"block 0"):
        owl_nm_pruned_counts([0.0, 1.0], 2, 4, 3)  # shifts [-1.5, 1.5] -> [-2, 2] -> [4, 0]


def test_nm_validation():
    for n, m in [(0, 4), (4, 4), (2, 1)]:
        with pytest.raises(OwlError):
            owl_nm_pruned_counts([1.0, 2.0], n, m, 1)
    with pytest.raises(OwlError):
        owl_nm_pruned_counts([1.0, float("nan")], 2, 4, 1)
    with pytest.raises(OwlError):
        owl_nm_pruned_counts([1.0, 2.0], 2, 4, -1)
