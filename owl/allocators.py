"""The layerwise-sparsity allocators, as one concept: the per-block statistic an allocator ranks and
the map from that statistic to per-block sparsities (:mod:`owl.allocation`).

One registry, one pruning path: every allocator yields one sparsity per block, which every pruning
method (magnitude, Wanda, SparseGPT) takes the same way. Statistics are shared: ``outlier_ratios``
(OWL), ``wanda_score_means`` (DLP) and ``wanda_log_variances`` (DSA) come from the dense
calibration statistics cached per (model, seed); ``alpha_peak`` (AlphaPruning) from the weights
alone, cached per model.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from owl.allocation import (
    alphapruning_sparsities, atp_sparsities, dlp_sparsities, dsa_out_of_domain, dsa_sparsities, owl_sparsities, uniform_sparsities,
)
from owl.errors import OwlError

log = logging.getLogger(__name__)

# What an allocator ranks. "calibration": needs the dense statistics pass; "weights": the weights only.
STATISTIC_SOURCES = {"none": None, "outlier_ratios": "calibration", "wanda_score_means": "calibration",
                     "wanda_log_variances": "calibration", "alpha_peak": "weights"}


@dataclass(frozen=True)
class Allocator:
    """One allocation rule. ``hyperparameter`` is the ``PruneSettings`` field of its range
    hyperparameter (what honest tuning chooses); ``paper_defaults`` its official value per pruning
    method (None: the official code has none)."""

    name: str
    label: str
    statistic: str
    hyperparameter: str | None
    flag: str | None
    paper_defaults: dict[str, float] | None
    reference: str
    map: Callable[..., list[float]]

    @property
    def statistic_source(self) -> str | None:
        return STATISTIC_SOURCES[self.statistic]

    def default_value(self, method: str) -> float | None:
        return None if self.paper_defaults is None else self.paper_defaults.get(method)


def _uniform(scores, target, value, block_params, settings):
    return uniform_sparsities(len(block_params), target)


def _owl(scores, target, value, block_params, settings):
    weights = block_params if settings.owl_weighting == "params" else None
    return owl_sparsities(scores, target, value, block_weights=weights)


def _dlp(scores, target, value, block_params, settings):
    return dlp_sparsities(scores, target, value)


def _dsa(scores, target, value, block_params, settings):
    outside = dsa_out_of_domain(scores)
    if outside:
        # As released (NaN -> 0.0), but never silently: 12 of SmolLM2-135M's 30 blocks, all of Gemma-3-270M's.
        consequence = ("every block ties, so the allocation is uniform" if len(outside) == len(scores)
                       else "as released it treats them as least important (least pruned)")
        log.warning("DSA: blocks %s have a log-score variance above tan(1) = 1.5574, outside asin's domain in the "
                    "official expression asin(atan(var)); %s", ", ".join(str(i) for i in outside), consequence)
    return dsa_sparsities(scores, target, value)


def _alphapruning(scores, target, value, block_params, settings):
    return alphapruning_sparsities(scores, target, value, block_params)


def _atp(scores, target, value, block_params, settings):
    return atp_sparsities(len(block_params), target, value)


ALLOCATORS: dict[str, Allocator] = {a.name: a for a in (
    Allocator("uniform", "Uniform", "none", None, None, None, "every block at the target", _uniform),
    Allocator("owl", "OWL", "outlier_ratios", "Lamda", "--Lamda", {"magnitude": 0.08, "wanda": 0.08, "sparsegpt": 0.08},
              "luuyin/OWL, main.py / lib/prune_all.py (README: M 5, Lamda 0.08)", _owl),
    # DLP's scripts use alpha 0.15 with Wanda at 70% only; its cached ratios serve every method.
    Allocator("dlp", "DLP", "wanda_score_means", "dlp_alpha", "--dlp_alpha", {"magnitude": 0.15, "wanda": 0.15, "sparsegpt": 0.15},
              "ironartisan/DLP @31d480f, lib/prune.py::get_dlp_ratios", _dlp),
    # DSA's official code runs its expression through Wanda only (wanda_owl_search); --Lamda's default
    # 0.08 (main.py, the README's command) is its only value and does not depend on the method.
    Allocator("dsa", "DSA", "wanda_log_variances", "dsa_lambda", "--dsa_lambda", {"magnitude": 0.08, "wanda": 0.08, "sparsegpt": 0.08},
              "lliai/DSA @a5ebe65, lib/autolayer.py::LayerEngine, lib/prune_all.py::test_prune_wanda_outlier_use_var "
              "(graph W:(ABSLOG)-(VAR)-(ATAN,ASIN)-(7))", _dsa),
    # AlphaPruning's LLaMA-7B scripts (scripts/llama-7b/*.sh): epsilon 0.3 magnitude, 0.2 Wanda and SparseGPT.
    Allocator("alphapruning", "AlphaPruning", "alpha_peak", "epsilon", "--epsilon", {"magnitude": 0.3, "wanda": 0.2, "sparsegpt": 0.2},
              "haiquanlu/AlphaPruning @5f0e984, lib/esd_utils.py::net_esd_estimator, lib/prune.py::ww_sparsity", _alphapruning),
    # ATP fixes no beta: its search.sh picks one per model on WikiText-2 test perplexity.
    Allocator("atp", "ATP", "none", "beta", "--beta", None, "wzhuang-xmu/ATP @56b8437, main.py::main", _atp),
)}
ALLOCATION_NAMES = tuple(ALLOCATORS)


def get_allocator(name: str) -> Allocator:
    if name not in ALLOCATORS:
        raise OwlError(f"--allocation {name!r} is not allowed; choose one of {', '.join(ALLOCATION_NAMES)}")
    return ALLOCATORS[name]


def block_means(values_per_layer: Sequence[Sequence[float]]) -> list[float]:
    """Plain mean of per-layer values within each block (AlphaPruning's ``block_wise`` mapping)."""
    return [math.fsum(values) / len(values) for values in values_per_layer]


def allocate(name: str, scores: Sequence[float] | None, target: float, value: float | None,
             block_params: Sequence[int], settings) -> list[float]:
    """Per-block sparsities of allocator ``name`` from its statistic ``scores`` (None for those that
    rank none) at hyperparameter ``value``; raises :class:`OwlError` on a bad value or a block
    outside (0, 1)."""
    allocator = get_allocator(name)
    if allocator.statistic != "none" and scores is None:
        raise OwlError(f"{allocator.label} allocation needs its per-block statistic ({allocator.statistic})")
    if scores is not None and len(scores) != len(block_params):
        raise OwlError(f"{allocator.label} got {len(scores)} block statistics for {len(block_params)} blocks")
    return allocator.map(scores, target, value, block_params, settings)
