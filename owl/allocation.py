"""Per-block sparsity allocation: uniform, OWL, and OWL's mixed N:M variant.

Pure functions of floats and tensors. The allocation arithmetic runs in Python floats (double
precision) so that the mean-equals-target property holds to ~1e-15, independently of the
device or dtype the statistics were computed on.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from owl.errors import OwlError

__all__ = [
    "outlier_ratio",
    "uniform_sparsities",
    "owl_sparsities",
    "owl_nm_pruned_counts",
]


def outlier_ratio(scores: torch.Tensor | Sequence[torch.Tensor], hyper_m: float) -> float:
    """OWL's layerwise outlier distribution (LOD) value ``D_l`` of one block, in percent.

    ``100 * (#entries > hyper_m * mean) / #entries`` over all entries of ``scores``. ``scores`` is
    either one tensor or a sequence of tensors (the Wanda scores of every linear sublayer of the
    block); a sequence is treated as its concatenation, but none is materialised, which saves a
    copy of all the block's scores. Sums run in float32 per tensor and are combined in double.
    """
    tensors = [scores] if isinstance(scores, torch.Tensor) else list(scores)
    if not tensors:
        raise OwlError("outlier_ratio got no score tensors; pass at least one non-empty tensor")
    if not (isinstance(hyper_m, numbers.Real) and math.isfinite(hyper_m) and hyper_m > 0):
        raise OwlError(f"Hyper_m is {hyper_m!r}; it must be a positive finite number (e.g. 5)")
    total = 0
    acc = 0.0
    for t in tensors:
        t32 = t.detach().float()
        if not bool(torch.isfinite(t32).all()):
            raise OwlError("outlier_ratio got NaN or infinite scores; the calibration statistics are broken")
        total += t32.numel()
        acc += float(t32.sum())
    if total == 0:
        raise OwlError("outlier_ratio got only empty score tensors; pass at least one non-empty tensor")
    threshold = float(hyper_m) * (acc / total)
    count = sum(int((t.detach().float() > threshold).sum()) for t in tensors)
    return 100.0 * count / total


def _check_target(target: float) -> float:
    if not (isinstance(target, numbers.Real) and math.isfinite(target) and 0 <= target < 1):
        raise OwlError(f"sparsity_ratio is {target!r}; it must be in [0, 1)")
    return float(target)


def _check_ratios(outlier_ratios: Sequence[float]) -> list[float]:
    ratios = [float(x) for x in outlier_ratios]
    if not ratios:
        raise OwlError("OWL allocation got no outlier ratios; the model has no decoder blocks?")
    for i, x in enumerate(ratios):
        if not math.isfinite(x):
            raise OwlError(f"outlier ratio of block {i} is {x}; outlier ratios must be finite numbers")
    return ratios


def _check_lamda(lamda: float) -> float:
    if not (isinstance(lamda, numbers.Real) and math.isfinite(lamda) and lamda >= 0):
        raise OwlError(f"Lamda is {lamda!r}; it must be a finite number >= 0")
    return float(lamda)


def _minmax(ratios: list[float]) -> list[float] | None:
    """Min-max normalised ratios in [0, 1] (min -> 0.0, max -> 1.0 exactly); None if all equal."""
    lo, hi = min(ratios), max(ratios)
    if hi == lo:
        return None
    span = hi - lo
    return [(x - lo) / span for x in ratios]


def uniform_sparsities(n_blocks: int, target: float) -> list[float]:
    """Every block at ``target`` (the baseline the OWL paper compares against)."""
    if not (isinstance(n_blocks, numbers.Integral) and n_blocks >= 1):
        raise OwlError(f"number of blocks is {n_blocks!r}; it must be an integer >= 1")
    return [_check_target(target)] * int(n_blocks)


def owl_sparsities(
    outlier_ratios: Sequence[float],
    target: float,
    lamda: float,
    block_weights: Sequence[float] | None = None,
) -> list[float]:
    """OWL's per-block sparsities, the reference code's formula.

    ``n = (D - min D) / (max D - min D)``, ``r = 2 * lamda * n``, ``s_l = target - (r_l - mean r)``:
    blocks with more outliers are pruned less, the plain mean of the ``s_l`` is ``target`` and the
    spread ``max - min`` is ``2 * lamda`` (not centred on ``target``).

    ``block_weights`` (e.g. parameter counts; off by default, the reference has no such option)
    replaces ``mean r`` by the ``block_weights``-weighted mean, so that the parameter-weighted
    mean sparsity, i.e. the model's overall sparsity, is ``target`` when blocks differ in size.

    Edge cases (the reference leaves them open):
    - all ratios equal (``max == min``, the reference divides by zero) or ``lamda == 0``: every
      block gets ``target``;
    - any block at ``s_l <= 0`` or ``s_l >= 1`` raises ``OwlError`` naming the block, instead of the
      reference's silent clamp to 0.01 (low side) or a broken run (high side).
    """
    target = _check_target(target)
    lamda = _check_lamda(lamda)
    ratios = _check_ratios(outlier_ratios)
    if block_weights is None:
        weights = [1.0] * len(ratios)
    else:
        weights = [float(w) for w in block_weights]
        if len(weights) != len(ratios):
            raise OwlError(
                f"block_weights has {len(weights)} entries but there are {len(ratios)} blocks; "
                "give one weight per block"
            )
        for i, w in enumerate(weights):
            if not (math.isfinite(w) and w > 0):
                raise OwlError(f"block weight of block {i} is {w}; block weights must be positive finite numbers")
    normalised = _minmax(ratios)
    if normalised is None or lamda == 0:
        return [target] * len(ratios)
    r = [2.0 * lamda * x for x in normalised]
    mean_r = math.fsum(w * x for w, x in zip(weights, r)) / math.fsum(weights)
    sparsities = [target - (x - mean_r) for x in r]
    for i, s in enumerate(sparsities):
        if not 0 < s < 1:
            hint = "lower --Lamda or --sparsity_ratio" if s >= 1 else "lower --Lamda or raise --sparsity_ratio"
            raise OwlError(
                f"OWL allocation puts block {i} at sparsity {s:.6g}, outside (0, 1); "
                f"{hint} (Lamda {lamda:g}, sparsity_ratio {target:g})"
            )
    return sparsities


def owl_nm_pruned_counts(outlier_ratios: Sequence[float], n: int, m: int, lamda: float) -> list[int]:
    """OWL's mixed N:M variant: how many weights to PRUNE in each group of ``m``, per block.

    ``N_l = n - round(lamda * n_l - mean(lamda * n_norm))`` with the same min-max normalisation as
    ``owl_sparsities`` (the reference's ``wanda_owl_structure``; its README uses 5:8 and an integer
    Lamda of 2). Rounding is Python's ``round()``: round half to even, the same rule as the
    reference's ``np.round``. The mean ``N`` is not guaranteed to be ``n`` after rounding.

    All ratios equal or ``lamda == 0``: every block gets ``n``. Any ``N_l`` outside ``[1, m - 1]``
    raises ``OwlError`` (a block pruned not at all or entirely is never what the user wants).
    We do not reproduce the reference's ``_special`` variant that turns a shift of 1 into 2.
    """
    if not (isinstance(m, numbers.Integral) and m >= 2):
        raise OwlError(f"N:M group size m is {m!r}; it must be an integer >= 2")
    if not (isinstance(n, numbers.Integral) and 1 <= n <= m - 1):
        raise OwlError(f"N:M pruned count n is {n!r}; it must be an integer in [1, {m - 1}] for m = {m}")
    n, m = int(n), int(m)
    lamda = _check_lamda(lamda)
    ratios = _check_ratios(outlier_ratios)
    normalised = _minmax(ratios)
    if normalised is None or lamda == 0:
        return [n] * len(ratios)
    shifted = [lamda * x for x in normalised]
    mean_shift = math.fsum(shifted) / len(shifted)
    counts = [n - int(round(x - mean_shift)) for x in shifted]
    for i, c in enumerate(counts):
        if not 1 <= c <= m - 1:
            raise OwlError(
                f"OWL N:M allocation prunes {c} of every {m} weights in block {i}, outside [1, {m - 1}]; "
                f"lower --Lamda ({lamda:g}) or choose another N:M ({n}:{m})"
            )
    return counts
