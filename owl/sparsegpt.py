"""SparseGPT's OBS solver (Frantar & Alistarh, 2023) for one weight matrix.

Prunes a [rows, cols] weight given the Hessian of its layer-wise reconstruction loss,
``H = 2/n * sum x x^T`` over calibration inputs, and updates the surviving weights so that the
layer's output changes as little as possible. Written from the paper's algorithm.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from owl.errors import OwlError
from owl.masks import lowest_k_flat_mask

__all__ = ["HessianFactor", "factor_hessian", "sparsegpt_prune_", "sparsegpt_prune_group_"]


def _check_args(weight, hessian, sparsity, prune_n, prune_m, blocksize, percdamp) -> None:
    if weight.dim() != 2:
        raise OwlError(f"sparsegpt_prune_ needs a 2-D weight, got shape {tuple(weight.shape)}")
    cols = weight.shape[1]
    if isinstance(hessian, HessianFactor):
        hessian = hessian.upper
    if tuple(hessian.shape) != (cols, cols):
        raise OwlError(
            f"Hessian has shape {tuple(hessian.shape)}; it must be [{cols}, {cols}] for a weight with {cols} inputs"
        )
    if not (isinstance(sparsity, numbers.Real) and math.isfinite(sparsity) and 0 <= sparsity < 1):
        raise OwlError(f"sparsity is {sparsity!r}; it must be in [0, 1)")
    if not (isinstance(blocksize, numbers.Integral) and blocksize >= 1):
        raise OwlError(f"blocksize is {blocksize!r}; it must be an integer >= 1")
    if not (isinstance(percdamp, numbers.Real) and math.isfinite(percdamp) and percdamp >= 0):
        raise OwlError(f"percdamp is {percdamp!r}; it must be a finite number >= 0")
    if not (isinstance(prune_n, numbers.Integral) and isinstance(prune_m, numbers.Integral)):
        raise OwlError(f"N:M must be integers, got {prune_n!r}:{prune_m!r}")
    if prune_n or prune_m:
        if not 0 < prune_n < prune_m:
            raise OwlError(f"N:M is {prune_n}:{prune_m}; N must be in [1, M - 1]")
        if cols % prune_m:
            raise OwlError(
                f"N:M sparsity needs the input size to be a multiple of m; got cols {cols}, m {prune_m}"
            )
        if blocksize % prune_m:
            raise OwlError(
                f"SparseGPT blocksize {blocksize} must be a multiple of m {prune_m} so groups do not straddle blocks"
            )


def _upper_cholesky_of_inverse(h: torch.Tensor, percdamp: float) -> torch.Tensor:
    """Upper Cholesky factor of ``inverse(H)``: its rows are the OBS update directions, column by column."""
    lower, info = torch.linalg.cholesky_ex(h)
    if int(info) == 0:
        inverse = torch.cholesky_inverse(lower)
        upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
        if int(info) == 0 and bool(torch.isfinite(upper).all()):
            return upper
    raise RuntimeError(
        f"SparseGPT: the dampened Hessian is not positive definite (Cholesky failed with percdamp {percdamp:g}); "
        "retry with a larger percdamp (e.g. 0.1) or more calibration samples"
    )


@dataclass(frozen=True)
class HessianFactor:
    """What SparseGPT needs from a layer's Hessian: the upper Cholesky factor of the inverse of the
    dampened Hessian, and the dead inputs. Layers reading the same input (q/k/v) share it."""

    upper: torch.Tensor
    dead: torch.Tensor  # bool per input column: H[i, i] == 0, the feature never fires


@torch.no_grad()
def factor_hessian(hessian: torch.Tensor, percdamp: float = 0.01, device=None) -> HessianFactor:
    """Dead inputs get ``H[i, i] = 1``, ``percdamp * mean(diag H)`` is added to the diagonal, then
    the factor of the inverse; float32 on ``device`` (default: the Hessian's)."""
    h = hessian.detach().to(device=device or hessian.device, dtype=torch.float32, copy=True)
    diagonal = torch.arange(h.shape[0], device=h.device)
    dead = torch.diag(h) == 0
    h[diagonal[dead], diagonal[dead]] = 1.0
    h[diagonal, diagonal] += percdamp * torch.mean(torch.diag(h))
    return HessianFactor(_upper_cholesky_of_inverse(h, percdamp), dead)


@torch.no_grad()
def sparsegpt_prune_(
    weight: torch.Tensor,
    hessian: torch.Tensor | HessianFactor,
    sparsity: float,
    prune_n: int = 0,
    prune_m: int = 0,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> None:
    """Prune ``weight`` in place with SparseGPT; ``hessian`` (or its :func:`factor_hessian`) is
    left untouched.

    Unstructured (``prune_n == prune_m == 0``): within each block of ``blocksize`` columns, prune
    exactly ``int(rows * block_cols * sparsity)`` entries with the lowest ``w^2 / diag(Hinv)^2``
    (the OBS saliency), ties broken by position. The reference prunes everything ``<=`` the value at
    that sorted position, i.e. at least one more per block and more on quantised weights.
    N:M: at every column ``i`` with ``i % m == 0``, prune the ``n`` lowest saliencies of the next
    ``m`` columns per row (``sparsity`` is then ignored). After a column is set to its mask, its
    error is spread onto the columns not yet processed (within the block at once, onto later blocks
    in one matmul after the block).

    Dead inputs (``H[i, i] == 0``: the feature never fires) get ``H[i, i] = 1`` and ``W[:, i] = 0``,
    which keeps ``H`` invertible and costs nothing on the calibration data. ``percdamp * mean(diag H)``
    is added to the diagonal. Computation runs in float32 on ``weight``'s device; the result is cast
    back to ``weight``'s dtype. Raises ``RuntimeError`` if the dampened Hessian is not positive definite.
    """
    sparsegpt_prune_group_([weight], hessian, sparsity, prune_n, prune_m, blocksize, percdamp)


@torch.no_grad()
def sparsegpt_prune_group_(
    weights: list[torch.Tensor],
    hessian: torch.Tensor | HessianFactor,
    sparsity: float,
    prune_n: int = 0,
    prune_m: int = 0,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> None:
    """:func:`sparsegpt_prune_` for weights that share one Hessian (layers reading one input, as
    q/k/v do), in one column loop over their rows stacked: the loop's cost is mostly per column, not
    per row. Each weight keeps its own mask (the per-block count is per weight) and every row's
    arithmetic is the single weight's (elementwise in the column loop, one matmul per weight for the
    later blocks), so the result is bit-identical to pruning them one by one (tests/test_speed_paths.py)."""
    weights = list(weights)
    if not weights:
        raise OwlError("sparsegpt_prune_group_ needs at least one weight")
    for weight in weights:
        _check_args(weight, hessian, sparsity, prune_n, prune_m, blocksize, percdamp)
    row_counts = [weight.shape[0] for weight in weights]
    cols = weights[0].shape[1]
    w = torch.cat([weight.detach().to(dtype=torch.float32) for weight in weights])  # a copy
    factor = hessian if isinstance(hessian, HessianFactor) else factor_hessian(hessian, percdamp, w.device)
    hinv, dead = factor.upper.to(w.device), factor.dead.to(w.device)
    w[:, dead] = 0.0

    for start in range(0, cols, blocksize):
        end = min(start + blocksize, cols)
        count = end - start
        # The block is held transposed ([count, rows]): column i of the weight is row i here, so the
        # per-column steps below touch contiguous memory. Every value is computed exactly as in
        # the [rows, count] layout (same elementwise products), so the result is bit-identical.
        w1 = w[:, start:end].t().contiguous()
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[start:end, start:end]
        d1 = torch.diag(hinv1)

        mask1 = torch.zeros(w1.shape, dtype=torch.bool, device=w.device)
        if prune_n == 0 and sparsity > 0:
            # Per weight: the k lowest saliencies of its block, ties by position in the [rows, count] order.
            saliency = w1.t() ** 2 / d1.reshape(1, -1) ** 2
            masks = []
            for part in saliency.split(row_counts):
                k = int(part.numel() * sparsity)
                masks.append(lowest_k_flat_mask(part.contiguous(), k) if k > 0 else torch.zeros_like(part, dtype=torch.bool))
            mask1 = torch.cat(masks).t().contiguous()

        # Per-row views and the pivots as Python floats (exact: float32 -> double -> float32) made
        # once, so each column costs a handful of kernel calls.
        w1_rows, q1_rows, err1_rows, mask1_rows = w1.unbind(0), q1.unbind(0), err1.unbind(0), mask1.unbind(0)
        pivots = d1.tolist()
        zero = torch.zeros((), dtype=w1.dtype, device=w1.device)
        for i in range(count):
            if prune_n != 0 and i % prune_m == 0:
                saliency = (w1[i : i + prune_m] ** 2 / d1[i : i + prune_m].reshape(-1, 1) ** 2).t()
                lowest = torch.sort(saliency, dim=1, stable=True).indices[:, :prune_n]
                mask1[i : i + prune_m].scatter_(0, lowest.t(), True)
            col, q, err = w1_rows[i], q1_rows[i], err1_rows[i]
            torch.where(mask1_rows[i], zero, col, out=q)  # = col.masked_fill(mask, 0.0)
            torch.sub(col, q, out=err).div_(pivots[i])
            w1[i:].sub_(hinv1[i, i:].unsqueeze(1) * err)

        w[:, start:end] = q1.t()
        if end < cols:  # one matmul per weight: its shape, so its summation order, is the single weight's
            for rows, err in zip(w.split(row_counts), err1.t().split(row_counts)):
                rows[:, end:] -= err.contiguous() @ hinv[start:end, end:]

    for weight, pruned in zip(weights, w.split(row_counts)):
        weight.copy_(pruned.to(weight.dtype))
