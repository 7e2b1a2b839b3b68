"""Per-block sparsity allocation: the maps from a per-block statistic to per-block sparsities.

Uniform, OWL (and its mixed N:M variant), DLP, DSA, AlphaPruning and ATP. Which statistic each one
ranks and how the run computes it is in :mod:`owl.allocators`; here are only the maps, pure
functions of floats and tensors. The allocation arithmetic runs in Python floats (double
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
    "double_sum",
    "outlier_ratio",
    "uniform_sparsities",
    "owl_sparsities",
    "owl_nm_pruned_counts",
    "centred_range_sparsities",
    "dlp_sparsities",
    "dsa_importance",
    "dsa_out_of_domain",
    "dsa_sparsities",
    "alphapruning_sparsities",
    "atp_sparsities",
    "atp_beta_bound",
    "check_block_sparsities",
]


def double_sum(values: torch.Tensor, chunk: int = 1 << 20) -> float:
    """Sum of ``values`` accumulated in double: unlike a float32 sum, whose rounding depends on the
    CPU's vector width (AVX2 or AVX-512), it agrees across CPUs to ~1e-16. Cast in chunks, so
    the float64 copy stays in cache instead of one pass over a whole-tensor copy."""
    flat = values.detach().reshape(-1)
    return sum(float(flat[i : i + chunk].double().sum()) for i in range(0, flat.numel(), chunk))


def outlier_ratio(scores: torch.Tensor | Sequence[torch.Tensor], hyper_m: float) -> float:
    """OWL's layerwise outlier distribution (LOD) value ``D_l`` of one block, in percent.

    ``100 * (#entries > hyper_m * mean) / #entries`` over all entries of ``scores``. ``scores`` is
    either one tensor or a sequence of tensors (the Wanda scores of every linear sublayer of the
    block); a sequence is treated as its concatenation, but none is materialised, which saves a
    copy of all the block's scores. Sums run in double: a float32 sum's rounding depends on the
    CPU's vector width (AVX2 or AVX-512), so the threshold would too.
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
        acc += double_sum(t32)
    if total == 0:
        raise OwlError("outlier_ratio got only empty score tensors; pass at least one non-empty tensor")
    threshold = float(hyper_m) * (acc / total)
    count = sum(int((t.detach().float() > threshold).sum()) for t in tensors)
    return 100.0 * count / total


def _check_target(target: float) -> float:
    if not (isinstance(target, numbers.Real) and math.isfinite(target) and 0 <= target < 1):
        raise OwlError(f"sparsity_ratio is {target!r}; it must be in [0, 1)")
    return float(target)


def _check_ratios(outlier_ratios: Sequence[float], what: str = "outlier ratio") -> list[float]:
    ratios = [float(x) for x in outlier_ratios]
    if not ratios:
        raise OwlError(f"allocation got no {what}s; the model has no decoder blocks?")
    for i, x in enumerate(ratios):
        if not math.isfinite(x):
            raise OwlError(f"{what} of block {i} is {x}; it must be a finite number")
    return ratios


def check_block_sparsities(sparsities: list[float], allocator: str, flag: str, value: float, target: float) -> list[float]:
    """The kit's one rule for every allocator: each block's sparsity must lie in the open (0, 1).

    A block at or below 0 would not be pruned, one at or above 1 would lose every weight; the
    official codes clamp the low side to 0.01 without renormalising (OWL, DLP), or let the high side
    break the run (all of them). The kit refuses the setting instead, naming the block, so that a
    reported sparsity is always the one that was pruned to."""
    for i, s in enumerate(sparsities):
        if not 0 < s < 1:
            hint = f"lower {flag} or --sparsity_ratio" if s >= 1 else f"lower {flag} or raise --sparsity_ratio"
            raise OwlError(
                f"{allocator} allocation puts block {i} at sparsity {s:.6g}, outside (0, 1); "
                f"{hint} ({flag} {value:g}, sparsity_ratio {target:g})"
            )
    return sparsities


def _check_positive(value: float, flag: str, example: str) -> float:
    if not (isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0):
        raise OwlError(f"{flag} is {value!r}; it must be a finite number >= 0 (e.g. {example})")
    return float(value)


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
    return check_block_sparsities(sparsities, "OWL", "--Lamda", lamda, target)


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


def centred_range_sparsities(keep: Sequence[float], target: float, half_range: float, allocator: str, flag: str) -> list[float]:
    """The map DLP and DSA share (both inherit it from OWL's code): ``keep`` (a larger value keeps
    more weights) is min-max scaled to ``[0, 2 half_range]`` and shifted so that the plain mean
    density is ``1 - target``; the sparsity is ``1 - density``. The spread is exactly
    ``2 half_range``, the plain mean exactly ``target``; the offset is set by the mean, not the
    midpoint.

    The kit differs from the official codes: a flat ``keep`` or ``half_range == 0`` (official: 0/0,
    every ratio NaN) gives ``target`` everywhere; a block outside (0, 1) is refused
    (:func:`check_block_sparsities`; official: clamped to 0.01 on the low side, nothing on the high
    side). Arithmetic in double (official: float32 for DLP, float64 for DSA)."""
    normalised = _minmax(list(keep))
    if normalised is None or half_range == 0:
        return [target] * len(keep)
    spread = [2.0 * half_range * x for x in normalised]
    mean = math.fsum(spread) / len(spread)
    densities = [x - mean + (1.0 - target) for x in spread]
    return check_block_sparsities([1.0 - d for d in densities], allocator, flag, half_range, target)


def dlp_sparsities(block_scores: Sequence[float], target: float, alpha: float) -> list[float]:
    """DLP's per-block sparsities (ICML 2025), the official code's formula.

    ``ironartisan/DLP`` @31d480f, ``lib/prune.py::get_dlp_ratios``: ``S_b`` is the block's mean
    Wanda score over all its linear weights together; ``r = 1 - S / sum S`` is min-max scaled to
    ``[0, 2 alpha]`` and shifted so that the plain mean density is ``1 - target``
    (:func:`centred_range_sparsities`). It returns densities ``d_b``; the sparsity is ``1 - d_b``.
    A higher mean score is pruned MORE.
    """
    target = _check_target(target)
    alpha = _check_positive(alpha, "--dlp_alpha", "0.15")
    scores = _check_ratios(block_scores, "DLP block score")
    total = math.fsum(scores)
    if total == 0:
        return [target] * len(scores)
    return centred_range_sparsities([1.0 - x / total for x in scores], target, alpha, "DLP", "--dlp_alpha")


def dsa_importance(variance: float) -> float:
    """DSA's released expression on one block's statistic: ``asin(atan(variance))``.

    ``lliai/DSA`` @a5ebe65, ``lib/autolayer.py::LayerEngine.compute_importance`` with the graph
    ``W:(ABSLOG)-(VAR)-(ATAN,ASIN)-(7)``: the post ops ATAN then ASIN, and a NaN result returned as
    0.0. ``atan`` exceeds 1, outside ``asin``'s domain, for a variance above ``tan(1) = 1.5574``:
    there the official value is NaN, hence 0.0, the least important (least pruned) a block can be.
    An infinite variance lands there too (``atan(inf) = pi / 2``); the official "inf -> -1" rule
    never fires for this expression, whose ``asin`` is bounded."""
    bounded = math.atan(variance)
    return math.asin(bounded) if bounded <= 1.0 else 0.0


def dsa_out_of_domain(block_variances: Sequence[float]) -> list[int]:
    """Blocks whose variance puts ``atan`` above 1, where DSA's expression is NaN (taken as 0.0)."""
    return [i for i, v in enumerate(block_variances) if not math.atan(v) <= 1.0]


def dsa_sparsities(block_variances: Sequence[float], target: float, lamda: float) -> list[float]:
    """DSA's per-block sparsities (Li et al., NeurIPS 2024), its released expression as the official
    code evaluates it.

    ``lliai/DSA`` @a5ebe65, ``lib/prune_all.py::test_prune_wanda_outlier_use_var`` (``main.py``
    ``--prune_method wanda_owl_search --graph_string "W:(ABSLOG)-(VAR)-(ATAN,ASIN)-(7)"``):
    ``var_b`` is the unbiased variance of ``ln|score|`` over all Wanda scores of block b
    (:meth:`owl.statistics.CalibrationStatistics.log_score_variances`); the importance
    ``I_b = asin(atan(var_b))`` (:func:`dsa_importance`, 0.0 outside asin's domain); ``1 - minmax(I)``
    is mapped as DLP's ratios are (:func:`centred_range_sparsities`, ``half_range`` = ``--Lamda``,
    default 0.08). A larger importance is pruned MORE. The graph's "(7)" sets ``LayerEngine.LAMBDA``,
    which the map never reads.

    The kit differs: all importances equal (official: NaN ratios) gives ``target``; a block outside
    (0, 1) is refused (official: clamped to 0.01 on the low side, nothing on the high side).
    """
    target = _check_target(target)
    lamda = _check_positive(lamda, "--dsa_lambda", "0.08")
    variances = _check_ratios(block_variances, "DSA block variance")
    normalised = _minmax([dsa_importance(v) for v in variances])
    if normalised is None:
        return [target] * len(variances)
    return centred_range_sparsities([1.0 - x for x in normalised], target, lamda, "DSA", "--dsa_lambda")


def alphapruning_sparsities(
    block_alphas: Sequence[float], target: float, epsilon: float, block_params: Sequence[float] | None = None
) -> list[float]:
    """AlphaPruning's per-block sparsities (Lu et al., NeurIPS 2024), the official code's formula.

    ``haiquanlu/AlphaPruning`` @5f0e984, ``lib/prune.py::ww_sparsity`` with ``mapping_type
    block_wise``: ``q_b`` is the mean over the block's linears of their power-law exponents
    (:func:`owl.spectrum.alpha_peak`); ``r = (q - min q) / (max q - min q) * 2 eps + (1 - eps)``;
    then ``s_b = r_b * target * sum P / sum(P r)``, so the parameter-weighted mean sparsity is
    ``target``. A higher alpha (a less heavy-tailed spectrum) is pruned MORE. The range is relative:
    ``s_b / s_c <= (1 + eps) / (1 - eps)``. ``block_params`` (``P``): linear weights per block;
    None weighs blocks equally (what it reduces to when every block has the same size).

    The kit differs: all alphas equal (official: NaN) gives ``target``; a block outside (0, 1) is
    refused (official: no check). ``epsilon`` must lie in [0, 1): at 1 a block's ratio is 0.
    """
    target = _check_target(target)
    if not (isinstance(epsilon, numbers.Real) and math.isfinite(epsilon) and 0 <= epsilon < 1):
        raise OwlError(f"--epsilon is {epsilon!r}; it must lie in [0, 1) (AlphaPruning's LLaMA-7B scripts use 0.2-0.3)")
    q = _check_ratios(block_alphas, "AlphaPruning block alpha")
    weights = [1.0] * len(q) if block_params is None else [float(p) for p in block_params]
    if len(weights) != len(q) or not all(math.isfinite(w) and w > 0 for w in weights):
        raise OwlError(f"block_params must be {len(q)} positive numbers, one per block; got {list(block_params or [])}")
    normalised = _minmax(q)
    if normalised is None or epsilon == 0:
        return [target] * len(q)
    ratios = [x * 2.0 * epsilon + (1.0 - epsilon) for x in normalised]
    scale = target * math.fsum(weights) / math.fsum(w * r for w, r in zip(weights, ratios))
    return check_block_sparsities([r * scale for r in ratios], "AlphaPruning", "--epsilon", epsilon, target)


def atp_beta_bound(n_blocks: int, target: float) -> float:
    """ATP's legality bound on ``beta``: ``min(2 s, 2 (1 - s)) / (L - 1)`` (``wzhuang-xmu/ATP``
    @56b8437, ``main.py``), i.e. the first block at sparsity >= 0 and the last at <= 1."""
    target = _check_target(target)
    if n_blocks < 2:
        return math.inf
    return min(2.0 * target, 2.0 * (1.0 - target)) / (n_blocks - 1)


def atp_sparsities(n_blocks: int, target: float, beta: float) -> list[float]:
    """ATP's per-block sparsities (Huang et al., ICML 2025), the official code's formula.

    ``wzhuang-xmu/ATP`` @56b8437, ``main.py::main``: ``s_i = s - beta (L - 1) / 2 + i beta``, a
    sparsity rising linearly with depth, plain mean exactly ``target``. The official code exits
    ("Illegal beta") when ``beta > min(2 s, 2 (1 - s)) / (L - 1)`` and accepts the bound itself,
    where the first block gets sparsity 0 or the last 1; the kit refuses the bound too (a block at
    0 or 1 is outside (0, 1), :func:`check_block_sparsities`), and a negative ``beta`` (official:
    unchecked, reverses the direction).
    """
    target = _check_target(target)
    beta = _check_positive(beta, "--beta", "0.01")
    if not (isinstance(n_blocks, numbers.Integral) and n_blocks >= 1):
        raise OwlError(f"number of blocks is {n_blocks!r}; it must be an integer >= 1")
    first = target - beta * (n_blocks - 1) / 2.0
    sparsities = [first + i * beta for i in range(int(n_blocks))]
    bound = atp_beta_bound(int(n_blocks), target)
    if beta > bound:
        raise OwlError(
            f"--beta {beta:g} is above ATP's bound {bound:.6g} for {n_blocks} blocks at sparsity_ratio {target:g} "
            "(min(2 s, 2 (1 - s)) / (blocks - 1)); choose a smaller --beta"
        )
    return check_block_sparsities(sparsities, "ATP", "--beta", beta, target)
