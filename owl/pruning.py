"""The sequential driver: statistics pass and pruning pass over the decoder blocks.

One driver serves every method. The statistics pass runs each block once per calibration batch
on the dense model (its outputs feed the next block). The pruning pass is sequential as in Wanda
and SparseGPT: a block is calibrated on the outputs of the already pruned blocks before it,
pruned, then run again to produce the next block's inputs.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from owl.methods import ACCUMULATORS, LayerTarget, MethodOptions, prune_layer
from owl.models import find_decoder_blocks, find_linear_sublayers
from owl.sequential import sequential_blocks
from owl.statistics import CalibrationStatistics, RowNormAccumulator


def _batches(windows: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    return list(windows.split(batch_size))


def compute_statistics(
    model: nn.Module, windows: torch.Tensor, device, batch_size: int, meta: dict | None = None, storage=None
) -> CalibrationStatistics:
    """Wanda statistics of every linear sublayer, on the dense model, one forward per block and batch."""
    scaler_rows = []
    for step in sequential_blocks(model, _batches(windows, batch_size), device, desc="statistics (dense model)", storage=storage):
        accumulators = {name: RowNormAccumulator(layer.in_features, device) for name, layer in step.linear_layers.items()}
        step.forward({name: acc.add for name, acc in accumulators.items()}, advance=True)
        scaler_rows.append({name: acc.value.cpu() for name, acc in accumulators.items()})
    return CalibrationStatistics(scaler_rows, dict(meta or {}))


@torch.no_grad()
def prune_model(
    model: nn.Module,
    method: str,
    targets: list[LayerTarget],
    options: MethodOptions,
    device,
    windows: torch.Tensor | None = None,
    batch_size: int = 8,
    storage=None,
) -> None:
    """Prune every block's linear sublayers to its target with ``method`` (magnitude/wanda/sparsegpt).
    ``storage``: where the calibration hidden states are kept (owl.memory.activation_storage)."""
    blocks = find_decoder_blocks(model)
    if len(targets) != len(blocks):
        raise ValueError(f"{len(targets)} block targets for {len(blocks)} blocks")
    accumulator_class = ACCUMULATORS[method]
    if accumulator_class is None:  # weights only: no data, no forward passes
        for index, block in enumerate(tqdm(blocks, desc=f"pruning ({method})", unit="block")):
            home = next(block.parameters()).device
            block.to(device)
            for layer in find_linear_sublayers(block).values():
                prune_layer(method, layer, None, targets[index], options)
            block.to(home)
        return
    if windows is None:
        raise ValueError(f"{method} needs calibration windows")
    for step in sequential_blocks(model, _batches(windows, batch_size), device, desc=f"pruning ({method})", storage=storage):
        accumulators = {name: accumulator_class(layer.in_features, device) for name, layer in step.linear_layers.items()}
        step.forward({name: acc.add for name, acc in accumulators.items()})
        for name, layer in step.linear_layers.items():
            prune_layer(method, layer, accumulators.pop(name).value, targets[step.index], options)
        step.forward(advance=True)
