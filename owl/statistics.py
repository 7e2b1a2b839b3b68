"""Activation statistics: small accumulators and the per-block statistics OWL needs.

``CalibrationStatistics`` holds Wanda's ``scaler_row`` (per input feature, the mean over
calibration samples of the squared L2 norm over tokens) for every linear sublayer of every block,
collected on the dense model. It does not depend on the pruning method, the sparsity, ``M`` or
``lambda``: it is computed once per (model, calibration set) and reused across a grid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from owl.allocation import double_sum, outlier_ratio
from owl.errors import OwlError
from owl.masks import wanda_scores


class Workspace:
    """Scratch tensors reused across blocks and batches, one per (shape, dtype, device).

    The accumulators gather a batch's linear inputs (8 windows of 2048: up to 100 MB per input)
    into one tensor to reduce it at once. Allocated afresh each time, such tensors cost page
    faults on every use (glibc maps allocations this large from the OS and returns them on free):
    4-6 s of a 60-80 s float32 pruning pass on a 2-core CPU (docs/benchmarks.md). One per pass, not
    shared between threads; what a buffer held before is never read."""

    def __init__(self):
        self._buffers: dict[tuple, torch.Tensor] = {}

    def get(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
        key = (tuple(shape), dtype, torch.device(device))
        if key not in self._buffers:
            self._buffers[key] = torch.empty(key[0], dtype=dtype, device=device)
        return self._buffers[key]


def _samples(parts: list[torch.Tensor]) -> int:
    """Calibration samples in ``parts`` concatenated: ``[batch, tokens, features]`` counts its batch,
    ``[tokens, features]`` one sample."""
    return sum(p.shape[0] for p in parts) if parts[0].dim() > 2 else 1


def _rows_into(buffer: torch.Tensor, parts: list[torch.Tensor], square: bool) -> torch.Tensor:
    """``torch.cat(parts).reshape(-1, features).float()`` (squared with ``square``) written into
    ``buffer``; the same values, bit for bit, as the freshly allocated tensors."""
    start = 0
    for part in parts:
        rows = part.reshape(-1, part.shape[-1])
        view = buffer[start:start + rows.shape[0]]
        if square and rows.dtype == torch.float32:
            torch.pow(rows, 2, out=view)
        else:
            view.copy_(rows)  # exact for float32 and the narrower float types
            if square:
                view.pow_(2)
        start += rows.shape[0]
    return buffer


def _gathered_rows(parts: list[torch.Tensor], workspace: Workspace | None, square: bool = False) -> torch.Tensor:
    features = parts[0].shape[-1]
    if len(parts) == 1 and not square and parts[0].dtype == torch.float32:
        return parts[0].reshape(-1, features)  # already the rows: no copy
    total = sum(p.numel() // features for p in parts)
    buffer = (workspace or Workspace()).get((total, features), torch.float32, parts[0].device)
    return _rows_into(buffer, parts, square)


def _log_abs(scores: torch.Tensor) -> torch.Tensor:
    """``ln|x|`` in float64, zeros taken as 1 (``ln 1 = 0``), as DSA's ABSLOG op does."""
    x = scores.detach().double().abs()
    return torch.where(x == 0, torch.ones_like(x), x).log()


def log_score_variance(scores: list[torch.Tensor]) -> float:
    """Unbiased variance of ``ln|x|`` over all entries of ``scores`` together (one block's Wanda
    scores, treated as their concatenation without materialising it), zeros taken as 1 first: DSA's
    ABSLOG then VAR (``lliai/DSA`` @a5ebe65, ``lib/autolayer.py::element_wise_abslog_op``, then
    ``torch.var``). Two passes (mean, then squared deviations), in float64 (official: float32)."""
    count, total = 0, 0.0
    for t in scores:
        if not bool(torch.isfinite(t).all()):
            raise OwlError("log_score_variance got NaN or infinite scores; the calibration statistics are broken")
        count += t.numel()
        total += float(_log_abs(t).sum())
    if count < 2:
        raise OwlError(f"log_score_variance needs at least 2 scores, got {count}")
    mean = total / count
    return sum(float(((_log_abs(t) - mean) ** 2).sum()) for t in scores) / (count - 1)


class RowNormAccumulator:
    """Running mean over samples of the squared L2 norm of each input feature (Wanda's statistic)."""

    def __init__(self, features: int, device: torch.device | str = "cpu"):
        self.sum_of_squares = torch.zeros(features, dtype=torch.float32, device=device)
        self.samples = 0

    @staticmethod
    def nbytes(features: int) -> int:
        return 4 * features  # float32, for the memory check before calibration

    def add(self, inputs: torch.Tensor, workspace: Workspace | None = None) -> None:
        self.add_parts([inputs], workspace)

    def add_parts(self, parts: list[torch.Tensor], workspace: Workspace | None = None) -> None:
        """Add ``parts`` (the chunks of one batch) as one batch: the same single reduction, bit for
        bit, as ``add(torch.cat(parts))``, without allocating the concatenation or its squares."""
        self.sum_of_squares += _gathered_rows(parts, workspace, square=True).sum(dim=0)
        self.samples += _samples(parts)

    @property
    def value(self) -> torch.Tensor:
        return self.sum_of_squares / max(self.samples, 1)


def lower_triangle_blocks(features: int, min_block: int = 256) -> list[tuple[int, int]]:
    """Row blocks ``[start, end)`` for accumulating the lower triangle of ``x^T x`` block by block:
    block ``[a, b)`` computes rows ``a:b``, columns ``:b``, i.e. ``(k + 1) / 2k`` of the full
    product's arithmetic for ``k`` blocks. Blocks of at least ``min_block`` features keep each
    matmul large enough to run at the full matmul rate."""
    count = max(1, features // min_block)
    edges = [round(i * features / count) for i in range(count + 1)]
    return list(zip(edges, edges[1:]))


class HessianAccumulator:
    """SparseGPT's layer Hessian ``H = 2/n * sum x x^T`` over the calibration tokens (n = samples).

    Only the lower triangle (with the diagonal) is accumulated, by row blocks, and mirrored in
    :attr:`value`: the Cholesky factorisation reads only that triangle, and each of its entries is
    the same dot product as in the full ``x^T x``, bit for bit (tests/test_speed_paths.py)."""

    def __init__(self, features: int, device: torch.device | str = "cpu"):
        self.sum_of_outer = torch.zeros(features, features, dtype=torch.float32, device=device)
        self.samples = 0
        self._blocks = lower_triangle_blocks(features)

    @staticmethod
    def nbytes(features: int) -> int:
        return 4 * features * features  # float32, for the memory check before calibration

    def add(self, inputs: torch.Tensor, workspace: Workspace | None = None) -> None:
        self.add_parts([inputs], workspace)

    def add_parts(self, parts: list[torch.Tensor], workspace: Workspace | None = None) -> None:
        """Add ``parts`` as one batch, bit for bit ``add(torch.cat(parts))`` (see RowNormAccumulator)."""
        rows = _gathered_rows(parts, workspace)
        for start, end in self._blocks:
            self.sum_of_outer[start:end, :end].addmm_(rows[:, start:end].t(), rows[:, :end])
        self.samples += _samples(parts)

    @property
    def value(self) -> torch.Tensor:
        lower = self.sum_of_outer.tril()
        return (lower + lower.tril(-1).t()) * (2.0 / max(self.samples, 1))


@dataclass
class CalibrationStatistics:
    """Wanda statistics of every linear sublayer of every block, plus what they were computed on."""

    scaler_rows: list[dict[str, torch.Tensor]]
    meta: dict = field(default_factory=dict)

    @property
    def n_blocks(self) -> int:
        return len(self.scaler_rows)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"scaler_rows": [{k: v.cpu() for k, v in b.items()} for b in self.scaler_rows], "meta": self.meta}, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path, expect: dict | None = None) -> "CalibrationStatistics":
        """Load; with ``expect``, refuse statistics computed on other settings."""
        stored = torch.load(path)
        stats = cls(stored["scaler_rows"], stored["meta"])
        for key, value in (expect or {}).items():
            if stats.meta.get(key) != value:
                raise OwlError(
                    f"statistics {path} were computed with {key}={stats.meta.get(key)!r}, not {value!r}; "
                    "delete the file or point --stats_path elsewhere"
                )
        return stats

    def _block_scores(self, blocks, device=None):
        """Per block, the Wanda scores of its linear sublayers (one float32 tensor each), on ``device``
        (default where the weights are: one layer's weight moved at a time, so a GPU scores a model
        larger than its memory)."""
        for index, (layers, rows) in enumerate(zip(blocks, self.scaler_rows)):
            if set(layers) != set(rows):
                raise OwlError(f"statistics of block {index} cover {sorted(rows)}, but the model has {sorted(layers)}")
            scores = []
            for name, layer in layers.items():
                where = device or layer.weight.device
                scores.append(wanda_scores(layer.weight.detach().to(where), rows[name].to(where)))
            yield scores

    def score_means(self, blocks, reduce: str = "mean", device=None) -> list[float]:
        """DLP's block statistic: the mean (or median) Wanda score over all linear weights of each
        block together, i.e. element-weighted, not a mean of per-layer means
        (``ironartisan/DLP`` ``lib/prune.py::get_dlp_ratios``). The mean is a double sum (a float32 sum's
        rounding depends on the CPU's vector width; official: float32); the median concatenates the block's scores."""
        means = []
        for scores in self._block_scores(blocks, device):
            if reduce == "median":
                means.append(float(torch.cat([s.flatten() for s in scores]).median()))
            elif reduce == "mean":
                means.append(sum(double_sum(s) for s in scores) / sum(s.numel() for s in scores))
            else:
                raise OwlError(f"score reduction {reduce!r} is not allowed; choose mean or median")
        return means

    def log_score_variances(self, blocks, device=None) -> list[float]:
        """DSA's block statistic: the unbiased variance of ``ln|score|`` over all Wanda scores of each
        block together (:func:`log_score_variance`), what its released expression ranks
        (``lliai/DSA`` @a5ebe65, ``lib/prune_all.py::test_prune_wanda_outlier_use_var``)."""
        return [log_score_variance(scores) for scores in self._block_scores(blocks, device)]

    def outlier_ratios(self, blocks, hyper_m: float, device=None) -> list[float]:
        """OWL's layerwise outlier distribution (percent per block) for threshold ``M``.

        ``blocks`` are (dense) decoder blocks as ``{name: linear}`` dicts matching the statistics.
        """
        return self.outlier_ratios_by_m(blocks, [hyper_m], device)[hyper_m]

    def outlier_ratios_by_m(self, blocks, hyper_ms, device=None) -> dict:
        """``{M: outlier_ratios}`` for every ``M`` of ``hyper_ms``, each block's Wanda scores computed
        once for all of them (:meth:`_block_scores`)."""
        ratios: dict = {m: [] for m in hyper_ms}
        for scores in self._block_scores(blocks, device):
            for m in hyper_ms:
                ratios[m].append(outlier_ratio(scores, m))
            del scores
        return ratios
