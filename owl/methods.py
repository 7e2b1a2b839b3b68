"""The pruning methods: what each collects during calibration and how it prunes one layer.

Every method plugs into the same sequential driver (``owl.pruning``); they differ only here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from owl.masks import magnitude_mask, nm_mask, row_mask, wanda_scores, wanda_variant_mask
from owl.sparsegpt import factor_hessian, sparsegpt_prune_group_
from owl.statistics import HessianAccumulator, RowNormAccumulator


@dataclass(frozen=True)
class LayerTarget:
    """How much of one layer to prune: a fraction (unstructured) or ``n`` of every ``m``."""

    sparsity: float
    n: int = 0
    m: int = 0

    @property
    def structured(self) -> bool:
        return self.m > 0


@dataclass(frozen=True)
class MethodOptions:
    use_variant: bool = False
    sparsegpt_blocksize: int = 128
    sparsegpt_percdamp: float = 0.01


# The statistic each method collects from a layer's inputs; None: needs no activations.
ACCUMULATORS = {"magnitude": None, "wanda": RowNormAccumulator, "sparsegpt": HessianAccumulator}


@torch.no_grad()
def prepare_statistic(method: str, value, options: MethodOptions):
    """What ``prune_layer`` takes from an accumulated statistic; computed once per distinct input,
    so layers reading the same input (q/k/v) share SparseGPT's factorisation of their Hessian."""
    if method == "sparsegpt":
        return factor_hessian(value, options.sparsegpt_percdamp)
    return value


@torch.no_grad()
def prune_layer(method: str, layer: nn.Linear, statistic, target: LayerTarget, options: MethodOptions) -> None:
    """Prune ``layer.weight`` in place. ``statistic``: the accumulator's value through
    :func:`prepare_statistic` (or None for magnitude)."""
    weight = layer.weight.data
    if method == "sparsegpt":
        prune_layers_sharing_input(method, [layer], statistic, target, options)
        return
    if method == "magnitude":
        mask = nm_mask(weight.abs(), target.n, target.m) if target.structured else magnitude_mask(weight, target.sparsity)
    elif method == "wanda":
        scores = wanda_scores(weight, statistic.to(weight.device))
        if target.structured:
            mask = nm_mask(scores, target.n, target.m)
        elif options.use_variant:
            mask = wanda_variant_mask(scores, target.sparsity)
        else:
            mask = row_mask(scores, target.sparsity)
    else:
        raise ValueError(f"unknown pruning method {method!r}")
    weight[mask] = 0


@torch.no_grad()
def prune_layers_sharing_input(method: str, layers: list[nn.Linear], statistic, target: LayerTarget,
                               options: MethodOptions) -> None:
    """Prune layers that read one input (q/k/v) and so share ``statistic``. SparseGPT runs its
    column loop once over their stacked rows (bit-identical to one layer at a time, cheaper);
    the other methods prune each layer on its own."""
    if method != "sparsegpt":
        for layer in layers:
            prune_layer(method, layer, statistic, target, options)
        return
    sparsegpt_prune_group_(
        [layer.weight.data for layer in layers], statistic, target.sparsity, prune_n=target.n, prune_m=target.m,
        blocksize=options.sparsegpt_blocksize, percdamp=options.sparsegpt_percdamp,
    )
