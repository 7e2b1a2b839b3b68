import pytest
import torch

from owl.errors import OwlError
from owl.masks import magnitude_mask, nm_mask, row_mask, sparsity_of, wanda_scores
from owl.sparsegpt import sparsegpt_prune_

ROWS, COLS, TOKENS = 48, 128, 1024


@pytest.fixture(scope="module")
def problem():
    """Correlated inputs X = Z @ A with uneven feature scales, a random weight, and H = 2/n X^T X."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(TOKENS, COLS, generator=g)
    a = torch.randn(COLS, COLS, generator=g) / COLS**0.5 + torch.eye(COLS)
    scales = torch.rand(COLS, generator=g) * 3 + 0.2
    x = (z @ a) * scales
    w = torch.randn(ROWS, COLS, generator=g)
    h = 2.0 / TOKENS * x.T @ x
    scaler_row = (x**2).sum(dim=0)  # one calibration sample of TOKENS tokens
    return x, w, h, scaler_row


def output_error(x, w, w_pruned):
    return torch.linalg.norm(x @ w.T - x @ w_pruned.T).item()


def apply(w, mask):
    return w.masked_fill(mask, 0.0)


def solve(w, h, sparsity, **kwargs):
    out = w.clone()
    sparsegpt_prune_(out, h, sparsity, **kwargs)
    return out


@pytest.mark.parametrize("sparsity", [0.5, 0.7])
def test_unstructured_beats_wanda_and_magnitude(problem, sparsity):
    x, w, h, scaler_row = problem
    pruned = solve(w, h, sparsity, blocksize=32)
    assert abs(sparsity_of(pruned) - sparsity) < 1e-3  # exact per block; see test_exact_unstructured_count_per_block
    err_sgpt = output_error(x, w, pruned)
    err_wanda = output_error(x, w, apply(w, row_mask(wanda_scores(w, scaler_row), sparsity)))
    err_mag = output_error(x, w, apply(w, magnitude_mask(w, sparsity)))
    assert err_sgpt < err_wanda < err_mag


def test_exact_unstructured_count_per_block(problem):
    _, w, h, _ = problem
    for blocksize in (16, 128, 50):
        pruned = solve(w, h, 0.7, blocksize=blocksize)
        expected = sum(int(ROWS * min(blocksize, COLS - s) * 0.7) for s in range(0, COLS, blocksize))
        assert int((pruned == 0).sum()) == expected


def test_two_four_beats_wanda_and_magnitude(problem):
    x, w, h, scaler_row = problem
    pruned = solve(w, h, 0.0, prune_n=2, prune_m=4, blocksize=32)
    groups = (pruned == 0).reshape(ROWS, COLS // 4, 4).sum(dim=-1)
    assert (groups == 2).all()
    err_sgpt = output_error(x, w, pruned)
    err_wanda = output_error(x, w, apply(w, nm_mask(wanda_scores(w, scaler_row), 2, 4)))
    err_mag = output_error(x, w, apply(w, nm_mask(w.abs(), 2, 4)))
    assert err_sgpt < err_wanda < err_mag


def test_five_eight_pattern_across_blocks(problem):
    _, w, h, _ = problem
    pruned = solve(w, h, 0.0, prune_n=5, prune_m=8, blocksize=64)
    assert ((pruned == 0).reshape(ROWS, COLS // 8, 8).sum(dim=-1) == 5).all()


def test_dead_inputs_and_hessian_untouched(problem):
    x, w, _, _ = problem
    x = x.clone()
    dead = [3, 40, 127]
    x[:, dead] = 0
    h = 2.0 / TOKENS * x.T @ x
    h_before = h.clone()
    pruned = solve(w, h, 0.5, blocksize=64)
    assert torch.equal(h, h_before)
    assert torch.isfinite(pruned).all()
    assert (pruned[:, dead] == 0).all()
    # dead columns count towards the exact per-block budget, they are not extra
    assert sparsity_of(pruned) == 0.5


def test_zero_sparsity_keeps_outputs(problem):
    x, w, h, _ = problem
    pruned = solve(w, h, 0.0)
    assert sparsity_of(pruned) == 0.0
    assert torch.allclose(pruned, w, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtype_preserved(problem, dtype):
    _, w, h, _ = problem
    w_low = w.to(dtype)
    pruned = solve(w_low, h, 0.5)
    assert pruned.dtype == dtype
    assert sparsity_of(pruned) == 0.5


def test_parameter_in_place(problem):
    _, w, h, _ = problem
    layer = torch.nn.Linear(COLS, ROWS, bias=False)
    with torch.no_grad():
        layer.weight.copy_(w)
    sparsegpt_prune_(layer.weight, h, 0.5)
    assert layer.weight.requires_grad
    assert sparsity_of(layer.weight.detach()) == 0.5


def test_not_positive_definite_raises_runtime_error():
    w = torch.randn(4, 8)
    with pytest.raises(RuntimeError, match="percdamp"):
        sparsegpt_prune_(w, -torch.eye(8), 0.5)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(sparsity=1.0),
        dict(sparsity=0.5, hessian=torch.eye(7)),
        dict(sparsity=0.0, prune_n=2, prune_m=3),  # 8 cols not a multiple of 3
        dict(sparsity=0.0, prune_n=2, prune_m=4, blocksize=6),
        dict(sparsity=0.0, prune_n=4, prune_m=4),
        dict(sparsity=0.5, percdamp=-1.0),
    ],
)
def test_validation(kwargs):
    kwargs.setdefault("hessian", torch.eye(8))
    with pytest.raises(OwlError):
        sparsegpt_prune_(torch.randn(4, 8), **kwargs)


def test_nm_result_independent_of_blocksize(problem):
    """The lazy batched update onto later blocks must equal column-by-column propagation."""
    _, w, h, _ = problem
    small = solve(w, h, 0.0, prune_n=2, prune_m=4, blocksize=4)
    large = solve(w, h, 0.0, prune_n=2, prune_m=4, blocksize=128)
    assert torch.equal(small == 0, large == 0)
    assert torch.allclose(small, large, atol=1e-4)


def test_single_column_matches_closed_form_obs(problem):
    """Pruning only column 0 must give the OBS optimum w_j -= w_0 * Hinv[0, j] / Hinv[0, 0]."""
    _, _, h, _ = problem
    g = torch.Generator().manual_seed(5)
    w = torch.randn(ROWS, COLS, generator=g)
    w = w.sign() * (1 + w.abs())
    w[:, 0] = 0.01 * torch.randn(ROWS, generator=g)
    pruned = solve(w, h, 1 / COLS, blocksize=COLS)  # exactly ROWS weights, all in column 0
    assert torch.equal(pruned == 0, torch.arange(COLS).expand(ROWS, COLS) == 0)
    damped = h.double() + 0.01 * torch.diag(h).mean().double() * torch.eye(COLS, dtype=torch.float64)
    hinv = torch.linalg.inv(damped)
    expected = w.double() - w[:, :1].double() * (hinv[0] / hinv[0, 0]).reshape(1, -1)
    delta, expected_delta = (pruned.double() - w.double())[:, 1:], (expected - w.double())[:, 1:]
    assert torch.allclose(delta, expected_delta, rtol=1e-3, atol=1e-3 * expected_delta.abs().max().item())
