import pytest
import torch

from owl.errors import OwlError
from owl.masks import magnitude_mask, nm_mask, row_mask, sparsity_of, wanda_scores, wanda_variant_mask


def rand(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype)


def quantised(rows, cols, levels=16, seed=0):
    """Heavy ties, like dequantised 4-bit weights."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(-levels // 2, levels // 2, (rows, cols), generator=g).float() * 0.01).half()


# ---- wanda_scores ------------------------------------------------------------------------------


def test_wanda_scores():
    w = rand(4, 6, dtype=torch.float16)
    scaler = rand(6, seed=1).abs()
    s = wanda_scores(w, scaler)
    assert s.dtype == torch.float32 and s.shape == (4, 6)
    assert torch.allclose(s, w.float().abs() * scaler.sqrt().reshape(1, -1))
    with pytest.raises(OwlError):
        wanda_scores(w, torch.ones(5))



def test_wanda_scores_take_the_correctly_rounded_square_root():
    """The norms' square root is IEEE's (numpy's float64 sqrt rounded once to float32), whatever
    library path torch's float32 sqrt takes on this CPU (MKL's was 1 ulp off on an Intel Xeon)."""
    import numpy as np

    g = torch.Generator().manual_seed(3)
    norms = torch.exp(torch.randn(20_000, generator=g) * 8).float()  # 1e-30 .. 1e30: every exponent
    exact = torch.from_numpy(np.sqrt(norms.numpy().astype(np.float64)).astype(np.float32))
    scores = wanda_scores(torch.ones(1, norms.numel()), norms)
    assert torch.equal(scores[0], exact)

# ---- magnitude ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_magnitude_exact_count_with_heavy_ties(sparsity):
    w = quantised(64, 96)
    assert w.float().abs().unique().numel() <= 9
    mask = magnitude_mask(w, sparsity)
    assert mask.dtype == torch.bool and mask.shape == w.shape
    assert int(mask.sum()) == int(w.numel() * sparsity)


def test_magnitude_prunes_smallest():
    w = rand(32, 48)
    mask = magnitude_mask(w, 0.6)
    assert w.abs()[mask].max() <= w.abs()[~mask].min()


def test_magnitude_ties_broken_by_position():
    w = torch.tensor([[1.0, -1.0, 1.0], [1.0, 2.0, 1.0]])
    assert magnitude_mask(w, 0.5).tolist() == [[True, True, True], [False, False, False]]


def test_magnitude_any_shape_and_bad_sparsity():
    assert magnitude_mask(rand(4, 5, 6), 0.5).sum() == 60
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(OwlError):
            magnitude_mask(rand(4, 4), bad)


# ---- row_mask ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.7, 0.33])
def test_row_mask_exact_per_row(sparsity):
    scores = quantised(40, 100).float().abs()
    mask = row_mask(scores, sparsity)
    assert (mask.sum(dim=1) == int(100 * sparsity)).all()


def test_row_mask_picks_lowest_per_row():
    scores = rand(16, 64).abs()
    mask = row_mask(scores, 0.5)
    for r in range(16):
        assert scores[r][mask[r]].max() <= scores[r][~mask[r]].min()


def test_row_mask_half_precision_scores():
    scores = rand(8, 32, dtype=torch.bfloat16).abs()
    mask = row_mask(scores, 0.25)
    assert (mask.sum(dim=1) == 8).all()


# ---- nm_mask -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (5, 8), (1, 2)])
def test_nm_pattern(n, m):
    scores = quantised(24, 64).float().abs()  # heavy ties
    mask = nm_mask(scores, n, m)
    groups = mask.reshape(24, 64 // m, m)
    assert (groups.sum(dim=-1) == n).all()
    s = scores.reshape(24, 64 // m, m)
    pruned_max = torch.where(groups, s, torch.tensor(-1.0)).amax(dim=-1)
    kept_min = torch.where(~groups, s, torch.tensor(1e9)).amin(dim=-1)
    assert (pruned_max <= kept_min).all()


def test_nm_errors():
    with pytest.raises(OwlError, match="cols 10, m 4"):
        nm_mask(rand(3, 10), 2, 4)
    with pytest.raises(OwlError):
        nm_mask(rand(3, 8), 5, 4)


# ---- wanda_variant_mask ------------------------------------------------------------------------


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.6])
def test_wanda_variant_within_tolerance(sparsity):
    w = rand(64, 256)
    scaler = rand(256, seed=3).abs() ** 2 + 0.1
    scores = wanda_scores(w, scaler)
    mask = wanda_variant_mask(scores, sparsity)
    assert abs(mask.float().mean().item() - sparsity) <= 0.001


def test_wanda_variant_prunes_a_prefix_of_each_sorted_row():
    scores = rand(32, 128).abs()
    mask = wanda_variant_mask(scores, 0.5, tolerance=0.01)
    assert abs(mask.float().mean().item() - 0.5) <= 0.01
    for r in range(32):
        if mask[r].any() and (~mask[r]).any():
            assert scores[r][mask[r]].max() <= scores[r][~mask[r]].min()
    # rows differ in how many they prune (that is the point of the variant)
    assert mask.sum(dim=1).unique().numel() > 1


def test_wanda_variant_ties_do_not_overshoot():
    scores = torch.ones(16, 64)
    mask = wanda_variant_mask(scores, 0.5)
    assert abs(mask.float().mean().item() - 0.5) <= 0.001


# ---- sparsity_of -------------------------------------------------------------------------------


def test_sparsity_of():
    assert sparsity_of(torch.tensor([0.0, 1.0, 0.0, -0.0])) == 0.75
    assert sparsity_of(torch.zeros(0)) == 0.0
    w = rand(10, 10)
    w[magnitude_mask(w, 0.37)] = 0
    assert sparsity_of(w) == 0.37
