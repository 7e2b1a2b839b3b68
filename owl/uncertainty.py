"""How sure a result is: aggregation over calibration seeds (pure functions, no I/O).

Perplexity at high sparsity is heavy-tailed, so everything here works on the log scale:

- a cell (one grid point, several seeds) is summarised by its geometric mean, its geometric
  standard deviation and its min-max range (:func:`summarise_cell`);
- OWL's effect is paired: per seed, OWL / uniform of the same method on the same calibration
  windows (:func:`pair_by_seed`); the ratios are summarised by their geometric mean with a 95%
  t-interval on the log ratios, t with n - 1 degrees of freedom from ``scipy.stats.t``, and the
  number of seeds where OWL is lower (:func:`ratio_interval`). One pair gives no interval (NaN
  bounds), never a claim;
- a zero-shot mean over k tasks has the standard error ``sqrt(sum se_i^2) / k`` (the tasks'
  lm-eval standard errors, the tasks taken as independent; :func:`mean_stderr`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

CONFIDENCE = 0.95

__all__ = ["CONFIDENCE", "CellSummary", "Pairing", "RatioSummary", "summarise_cell", "pair_by_seed", "ratio_interval",
           "excludes", "t_quantile", "mean_stderr"]


@dataclass(frozen=True)
class CellSummary:
    """One grid point over its seeds: geometric mean, geometric sd (1 for one seed), min, max, n."""

    mean: float
    gsd: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class Pairing:
    """Per-seed ratios ``treated / baseline`` on the same seed, and the seeds present on one side only."""

    ratios: dict[int, float]
    only_treated: list[int] = field(default_factory=list)
    only_baseline: list[int] = field(default_factory=list)

    @property
    def unpaired(self) -> bool:
        return bool(self.only_treated or self.only_baseline)


@dataclass(frozen=True)
class RatioSummary:
    """Geometric-mean ratio with its ``CONFIDENCE`` t-interval (NaN bounds below two pairs),
    the number of pairs and of wins (ratio < 1: the treated run is lower)."""

    ratio: float
    lower: float
    upper: float
    n_pairs: int
    wins: int

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.lower) and math.isfinite(self.upper)


def _positive(values: Sequence[float]) -> np.ndarray:
    array = np.asarray([float(v) for v in values], dtype=float)
    array = array[np.isfinite(array)]
    if (array <= 0).any():
        raise ValueError(f"geometric statistics need positive values, got {array[array <= 0].tolist()}")
    return array


def summarise_cell(values: Sequence[float]) -> CellSummary:
    """Geometric mean, geometric sd (``exp`` of the sample sd of the logs, ddof 1), min, max and n
    of the finite values; NaN everywhere (n 0) for none, gsd 1 for one."""
    array = _positive(values)
    if array.size == 0:
        return CellSummary(math.nan, math.nan, math.nan, math.nan, 0)
    if array.size == 1:  # exactly the value, not exp(log(value))
        return CellSummary(float(array[0]), 1.0, float(array[0]), float(array[0]), 1)
    logs = np.log(array)
    mean = float(np.clip(np.exp(logs.mean()), array.min(), array.max()))  # rounding must not leave the range
    return CellSummary(mean, float(np.exp(logs.std(ddof=1))), float(array.min()), float(array.max()), int(array.size))


def pair_by_seed(treated: Mapping[int, float], baseline: Mapping[int, float]) -> Pairing:
    """``treated[seed] / baseline[seed]`` for every seed on both sides (sorted); a seed on one side
    only is returned in ``only_treated`` / ``only_baseline``, never silently dropped."""
    common = sorted(set(treated) & set(baseline))
    ratios = {seed: float(treated[seed]) / float(baseline[seed]) for seed in common}
    return Pairing(ratios, sorted(set(treated) - set(baseline)), sorted(set(baseline) - set(treated)))


def t_quantile(probability: float, dof: int) -> float:
    """Quantile of Student's t with ``dof`` degrees of freedom (scipy.stats.t)."""
    from scipy.stats import t

    return float(t.ppf(probability, dof))


def ratio_interval(ratios: Sequence[float], confidence: float = CONFIDENCE) -> RatioSummary:
    """Geometric mean of ``ratios`` with a two-sided ``confidence`` t-interval on their logs
    (``mean log +- t_{n-1} * sd / sqrt(n)``, back-transformed) and the wins (ratio < 1).
    Fewer than two ratios: NaN bounds (no interval)."""
    array = _positive(ratios)
    n = int(array.size)
    if n == 0:
        return RatioSummary(math.nan, math.nan, math.nan, 0, 0)
    logs = np.log(array)
    centre = float(logs.mean())
    wins = int((array < 1.0).sum())
    if n < 2:
        return RatioSummary(float(array[0]), math.nan, math.nan, n, wins)
    half = t_quantile(0.5 + confidence / 2, n - 1) * float(logs.std(ddof=1)) / math.sqrt(n)
    return RatioSummary(math.exp(centre), math.exp(centre - half), math.exp(centre + half), n, wins)


def excludes(summary: RatioSummary, value: float = 1.0) -> int:
    """+1 if the interval lies wholly above ``value``, -1 if wholly below, 0 if it holds it or there
    is no interval."""
    if not summary.has_interval:
        return 0
    if summary.upper < value:
        return -1
    if summary.lower > value:
        return 1
    return 0


def mean_stderr(stderrs: Sequence[float]) -> float:
    """Standard error of the mean of k independent estimates with standard errors ``stderrs``:
    ``sqrt(sum se^2) / k``; NaN for none."""
    values = [float(s) for s in stderrs]
    if not values:
        return math.nan
    return math.sqrt(sum(s * s for s in values)) / len(values)
