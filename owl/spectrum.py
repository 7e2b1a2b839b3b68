"""Heavy-tailed self-regularisation statistics of weight matrices (AlphaPruning's per-layer alpha).

Pure functions of tensors: the empirical spectral density of ``W^T W`` and the exponent of a
power law fitted to its tail. The fit follows AlphaPruning's ``net_esd_estimator`` with
``fix_fingers='xmin_peak'`` (``haiquanlu/AlphaPruning`` @5f0e984, ``lib/esd_utils.py``; defaults
``bins=100``, ``filter_zeros=False``), which is what its ``main.py`` calls for LLaMA.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from owl.errors import OwlError

__all__ = ["esd_eigenvalues", "alpha_peak", "layer_alpha", "block_alphas"]


def esd_eigenvalues(weight: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of ``W^T W`` (the squared singular values, ``min(out, in)`` of them), ascending,
    in float64. The official code takes the SVD of the float32 weight; float64 here, so that the
    fit does not depend on the device's SVD rounding (the estimate moves in the 4th digit at most)."""
    if weight.dim() != 2:
        raise OwlError(f"esd_eigenvalues needs a 2-D weight, got shape {tuple(weight.shape)}")
    singular = torch.linalg.svdvals(weight.detach().to(torch.float64))
    return torch.sort(singular.square()).values


def alpha_peak(eigenvalues: torch.Tensor, bins: int = 100) -> float:
    """Power-law exponent of an ascending spectrum: Hill's estimator at the ``xmin`` of smallest
    Kolmogorov-Smirnov distance among the candidates near the peak of the log-spectrum histogram.

    For candidate ``i`` (``n = N - i`` eigenvalues from ``e_i`` up):
    ``alpha_i = 1 + n / (sum_{k>=i} ln e_k - n ln e_i)`` and
    ``D_i = max_k |1 - (e_{i+k} / e_i)^(1 - alpha_i) - k / n|`` for ``k = 0..n-1`` (the official
    code's 0-based empirical CDF), ``D_i = 1`` when ``alpha_i <= 1``. The candidates, as in the
    official code: the peak bin of a ``bins``-bin histogram of ``log10 e`` has left edge
    ``x = 10^b``; eigenvalues above ``1.5 x`` are not tried, and those below ``log10(0.95 x)``
    are skipped. That lower bound mixes log and linear units in the official code; it is kept as
    is, since it decides which candidates exist (in practice it skips nothing once ``x < 1.05``).
    Returns ``alpha_i`` at the first smallest ``D_i``.
    """
    eigs = eigenvalues.detach().to(torch.float64).flatten()
    n_eigs = eigs.numel()
    if n_eigs < 2:
        raise OwlError(f"alpha_peak needs at least 2 eigenvalues, got {n_eigs}")
    if not bool((eigs > 0).all()) or not bool(torch.isfinite(eigs).all()):
        raise OwlError("alpha_peak needs positive finite eigenvalues (is a weight matrix all zeros or rank-deficient?)")
    if bool((eigs[1:] < eigs[:-1]).any()):
        raise OwlError("alpha_peak needs the eigenvalues in ascending order")
    log10 = torch.log10(eigs)
    low, high = float(log10.min()), float(log10.max())
    if high == low:
        raise OwlError("alpha_peak got a flat spectrum (every eigenvalue equal): no power law to fit")
    counts = torch.histc(log10, bins=bins, min=low, max=high)
    peak_left = 10 ** float(torch.linspace(low, high, bins + 1, dtype=torch.float64)[int(torch.argmax(counts))])
    lowest, highest = math.log10(0.95 * peak_left), 1.5 * peak_left

    logs = torch.log(eigs)
    tail_log_sums = torch.flip(torch.cumsum(torch.flip(logs, [0]), 0), [0])  # sum_{k>=i} ln e_k
    best_alpha, best_distance = 0.0, 1.0  # the official arrays start at alpha 0, D 1
    for i in range(n_eigs - 1):
        xmin = float(eigs[i])
        if xmin < lowest:
            continue
        if xmin > highest:
            break
        n = n_eigs - i
        denominator = float(tail_log_sums[i]) - n * float(logs[i])
        alpha = 1.0 + n / denominator if denominator != 0 else math.inf
        if i == 0 and best_distance == 1.0:
            best_alpha = alpha  # the official argmin falls on index 0 when no D < 1
        if not alpha > 1 or math.isinf(alpha):
            continue
        empirical = torch.arange(n, dtype=torch.float64) / n
        distance = float(torch.max(torch.abs(1.0 - (eigs[i:] / xmin) ** (1.0 - alpha) - empirical)))
        if distance < best_distance:
            best_alpha, best_distance = alpha, distance
    return best_alpha


def layer_alpha(weight: torch.Tensor, bins: int = 100) -> float:
    """AlphaPruning's ``alpha_peak`` of one linear layer's weight."""
    return alpha_peak(esd_eigenvalues(weight), bins)


def block_alphas(blocks: Iterable[dict[str, nn.Linear]], bins: int = 100) -> list[list[float]]:
    """Per block, the ``alpha_peak`` of each of its linear layers, in module order (``block_wise``
    averages them; kept per layer so the cache serves either mapping)."""
    return [[layer_alpha(layer.weight, bins) for layer in layers.values()] for layers in blocks]
