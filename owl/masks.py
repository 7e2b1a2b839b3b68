"""Which weights to prune: score functions and mask functions.

Every mask is a bool tensor of the score's shape on the score's device, ``True`` = prune. Scores
are compared in float32 whatever the input dtype. Ties are broken by position (as a stable sort
would), so every mask prunes an exact, reproducible number of entries.

"The ``k`` lowest" is computed with a selection (``kthvalue``, linear time) instead of a full
stable sort: the result is exactly the first ``k`` entries of a stable ascending sort, i.e. every
entry below the ``k``-th smallest value plus, among the entries equal to it, the earliest ones.
On CPU that is 3x to 10x faster than ``torch.sort(stable=True)`` on the matrices of an LLM; on
other devices (fast GPU sorts, not measured here) the stable sort is kept.
"""

from __future__ import annotations

import math
import numbers

import torch

from owl.errors import OwlError

__all__ = [
    "wanda_scores",
    "magnitude_mask",
    "row_mask",
    "nm_mask",
    "wanda_variant_mask",
    "sparsity_of",
]


def _check_sparsity(sparsity: float) -> float:
    if not (isinstance(sparsity, numbers.Real) and math.isfinite(sparsity) and 0 <= sparsity <= 1):
        raise OwlError(f"sparsity is {sparsity!r}; it must be in [0, 1]")
    return float(sparsity)


def _check_2d(scores: torch.Tensor, what: str) -> None:
    if scores.dim() != 2:
        raise OwlError(f"{what} needs a 2-D [rows, cols] tensor, got shape {tuple(scores.shape)}")


def _sorted_lowest_k_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    """Per row of a 2-D float tensor, the first ``k`` entries of a stable ascending sort."""
    mask = torch.zeros(values.shape, dtype=torch.bool, device=values.device)
    mask.scatter_(-1, torch.sort(values, dim=-1, stable=True).indices[..., :k], True)
    return mask


def _lowest_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Per row of a 2-D tensor, the ``k`` lowest entries (stable: ties go to the earlier column).

    Same result as ``sort(stable=True).indices[:, :k]``, in linear time: the entries strictly below
    each row's ``k``-th smallest value, then the leftmost entries equal to it until ``k`` are taken.
    Off the CPU, for small rows (N:M groups) and for rows holding NaN (which a sort puts last),
    the stable sort itself is used.
    """
    rows, cols = scores.shape
    if k <= 0 or rows == 0:
        return torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    if k >= cols:
        return torch.ones(scores.shape, dtype=torch.bool, device=scores.device)
    values = scores.detach().float()
    # Selection pays off on CPU (measured, docs/benchmarks.md); GPUs sort fast, so keep the sort there.
    if values.device.type != "cpu" or cols <= 64 or bool(torch.isnan(values).any()):
        return _sorted_lowest_k_mask(values, k)
    kth = torch.kthvalue(values, k, dim=-1, keepdim=True).values
    mask = values < kth
    ties = values == kth
    wanted = k - mask.sum(dim=-1, keepdim=True)  # >= 1 ties to take per row
    if bool((ties.sum(dim=-1, keepdim=True) > wanted).any()):  # more ties than places: leftmost first
        ties &= torch.cumsum(ties, dim=-1) <= wanted
    return mask.logical_or_(ties)


def lowest_k_flat_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` lowest entries of ``values`` over the whole tensor (any shape), ties by flat position.

    Same result as ``sort(values.flatten(), stable=True).indices[:k]``; used by ``magnitude_mask``
    and SparseGPT's per-block mask.
    """
    flat = values.reshape(1, -1)
    return _lowest_k_mask(flat, int(k)).reshape(values.shape)


def wanda_scores(weight: torch.Tensor, scaler_row: torch.Tensor) -> torch.Tensor:
    """Wanda's score ``|W[i, j]| * sqrt(scaler_row[j])`` in float32.

    ``scaler_row[j]`` is the running mean over calibration samples of the squared L2 norm of input
    feature ``j``; the score is |weight| times the input feature's norm, i.e. how much the weight
    contributes to the output.

    The square root is IEEE's correctly rounded float32 one (taken in float64, then rounded once
    more, which for a float32 input gives the same bits). The official code's float32
    ``torch.sqrt`` is not always correctly rounded on a CPU, depending on the library path: on an
    Intel Xeon (cpu family 6 model 167) 910 of SmolLM2-135M's 149,760 norms (seed 0) differed with
    MKL's native kernels and none with MKL pinned to AVX2 (docs/benchmarks.md), which moved DLP's
    block statistics.
    """
    _check_2d(weight, "wanda_scores")
    if scaler_row.numel() != weight.shape[1]:
        raise OwlError(
            f"scaler_row has {scaler_row.numel()} entries but the weight has {weight.shape[1]} input columns"
        )
    norms = scaler_row.detach().to(device=weight.device, dtype=torch.float32).reshape(1, -1)
    scale = norms.double().sqrt().float()
    return weight.detach().float().abs() * scale


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """The ``int(numel * sparsity)`` smallest ``|W|`` over the whole matrix (any shape).

    Deliberate deviation from the reference: it prunes every weight ``<=`` the magnitude at sorted
    position ``int(numel * sparsity)``, ties included, which prunes more than asked on quantised
    weights (a dequantised Q4_1 576x576 matrix has only ~20k distinct magnitudes) and at least one
    extra weight otherwise. Here ties are broken by flat position, so the count is exact.
    """
    sparsity = _check_sparsity(sparsity)
    return lowest_k_flat_mask(weight.detach().float().abs(), int(weight.numel() * sparsity))


def row_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Wanda unstructured: per output row, the ``int(cols * sparsity)`` lowest scores.

    Comparing within a row (not across the whole matrix) is what makes Wanda work on LLMs: it keeps
    every output's share of weights equal.
    """
    _check_2d(scores, "row_mask")
    sparsity = _check_sparsity(sparsity)
    return _lowest_k_mask(scores, int(scores.shape[1] * sparsity))


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """N:M semi-structured: in every group of ``m`` consecutive input columns of a row, the ``n`` lowest."""
    _check_2d(scores, "nm_mask")
    if not (isinstance(m, numbers.Integral) and m >= 1):
        raise OwlError(f"N:M group size m is {m!r}; it must be an integer >= 1")
    if not (isinstance(n, numbers.Integral) and 0 <= n <= m):
        raise OwlError(f"N:M pruned count n is {n!r}; it must be an integer in [0, {m}]")
    rows, cols = scores.shape
    if cols % m != 0:
        raise OwlError(f"N:M sparsity needs the input size to be a multiple of m; got cols {cols}, m {m}")
    grouped = scores.reshape(rows * (cols // m), m)
    return _lowest_k_mask(grouped, int(n)).reshape(rows, cols)


def wanda_variant_mask(scores: torch.Tensor, sparsity: float, tolerance: float = 0.001) -> torch.Tensor:
    """Wanda's ``--use_variant``: a per-row cumulative-score threshold, shared fraction ``alpha``.

    In each row, with the scores sorted ascending, prune the leading entries whose cumulative sum is
    ``<= alpha * row sum``: rows whose mass is concentrated in a few large scores lose more entries.
    ``alpha`` is found by bisection (start 0.4, bracket [0, 0.8]) until the layer's sparsity is
    within ``tolerance`` of ``sparsity`` or the bracket is narrower than 0.001. If the bracket
    closes first (e.g. a target beyond what alpha <= 0.8 reaches), the last mask is returned; check
    it with ``sparsity_of`` if that matters. Pruning by sorted position (not ``<=`` the score at the
    cut, as the reference does) keeps tied scores from overshooting.
    """
    _check_2d(scores, "wanda_variant_mask")
    sparsity = _check_sparsity(sparsity)
    if not (isinstance(tolerance, numbers.Real) and tolerance > 0):
        raise OwlError(f"tolerance is {tolerance!r}; it must be a positive number")
    s32 = scores.detach().float()
    sorted_scores, order = torch.sort(s32, dim=-1, stable=True)
    cumulative = torch.cumsum(sorted_scores, dim=-1)
    row_sum = s32.sum(dim=-1, keepdim=True)
    positions = torch.arange(s32.shape[1], device=s32.device).expand_as(s32)
    numel = s32.numel()

    def mask_for(alpha: float) -> tuple[torch.Tensor, float]:
        counts = (cumulative <= alpha * row_sum).sum(dim=-1, keepdim=True)
        sorted_mask = positions < counts
        mask = torch.zeros_like(sorted_mask).scatter_(-1, order, sorted_mask)
        return mask, int(counts.sum()) / numel

    alpha, low, high = 0.4, 0.0, 0.8
    mask, current = mask_for(alpha)
    while abs(current - sparsity) > tolerance and high - low >= 0.001:
        if current > sparsity:
            high, alpha = alpha, (alpha + low) / 2.0
        else:
            low, alpha = alpha, (alpha + high) / 2.0
        mask, current = mask_for(alpha)
    return mask


def sparsity_of(tensor: torch.Tensor) -> float:
    """Fraction of exact zeros (0.0 for an empty tensor)."""
    numel = tensor.numel()
    if numel == 0:
        return 0.0
    return int((tensor == 0).sum()) / numel
