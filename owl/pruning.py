"""The sequential driver: statistics pass and pruning pass over the decoder blocks.

One driver serves every method. The statistics pass runs each block once per calibration batch
on the dense model (its outputs feed the next block). The pruning pass is sequential as in Wanda
and SparseGPT: a block is calibrated on the outputs of the already pruned blocks before it,
pruned, then run again to produce the next block's inputs (except the last block, whose outputs
nothing reads).
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from owl.methods import ACCUMULATORS, LayerTarget, MethodOptions, prepare_statistic, prune_layer, prune_layers_sharing_input
from owl.models import block_zero_count, find_decoder_blocks, find_linear_sublayers
from owl.sequential import SharedInputStatistics, sequential_blocks
from owl.statistics import CalibrationStatistics, RowNormAccumulator


def _batches(windows: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    return list(windows.split(batch_size))


def _statistics_of(step, accumulator_class, device) -> SharedInputStatistics:
    layers = step.linear_layers
    return SharedInputStatistics(layers, lambda name: accumulator_class(layers[name].in_features, device), step.workspace,
                                 label=f"block {step.index}, ")


def compute_statistics(
    model: nn.Module, windows: torch.Tensor, device, batch_size: int, meta: dict | None = None,
    forward_dtype: torch.dtype | None = None, storage=None, chunk_size="auto",
) -> CalibrationStatistics:
    """Wanda statistics of every linear sublayer, on the dense model, one forward per block and batch."""
    scaler_rows = []
    batches = _batches(windows, batch_size)
    for step in sequential_blocks(model, batches, device, desc="statistics (dense model)", forward_dtype=forward_dtype,
                                  storage=storage, chunk_size=chunk_size):
        statistics = _statistics_of(step, RowNormAccumulator, device)
        # The last block's outputs feed nothing: stop it once its inputs are seen, as the pruning pass does.
        step.forward(statistics, advance=not step.is_last)
        scaler_rows.append({name: value.cpu() for name, value in statistics.values().items()})
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
    forward_dtype: torch.dtype | None = None,
    storage=None,
    chunk_size="auto",
) -> list[tuple[int, int]]:
    """Prune every block's linear sublayers to its target with ``method`` (magnitude/wanda/sparsegpt);
    per block ``(zeros, weights)`` of the pruned linear weights, counted on the device.

    With ``forward_dtype`` (mixed precision) the block forwards run in that precision while
    statistics, scores, masks and SparseGPT's solver stay float32 and the pruned weights keep
    the model's dtype. ``storage``: where the calibration hidden states are kept
    (owl.memory.activation_storage). ``chunk_size``: windows per block call (owl.sequential); it
    changes the speed, never the result.
    """
    blocks = find_decoder_blocks(model)
    if len(targets) != len(blocks):
        raise ValueError(f"{len(targets)} block targets for {len(blocks)} blocks")
    accumulator_class = ACCUMULATORS[method]
    counts = []
    if accumulator_class is None:  # weights only: no data, no forward passes
        for index, block in enumerate(tqdm(blocks, desc=f"pruning ({method})", unit="block")):
            home = next(block.parameters()).device
            block.to(device)
            for layer in find_linear_sublayers(block).values():
                prune_layer(method, layer, None, targets[index], options)
            counts.append(block_zero_count(block))
            block.to(home)
        return counts
    if windows is None:
        raise ValueError(f"{method} needs calibration windows")
    batches = _batches(windows, batch_size)
    for step in sequential_blocks(model, batches, device, desc=f"pruning ({method})", forward_dtype=forward_dtype,
                                  storage=storage, chunk_size=chunk_size):
        statistics = _statistics_of(step, accumulator_class, device)
        step.forward(statistics)  # stops each batch once every linear input is seen
        prepared = statistics.values(lambda value: prepare_statistic(method, value, options))
        groups = statistics.groups
        del statistics
        for owner, names in groups.items():
            layers = [step.linear_layers[name] for name in names]
            prune_layers_sharing_input(method, layers, prepared[owner], targets[step.index], options)
        del prepared
        counts.append(block_zero_count(step.block))
        if not step.is_last:  # the last block's pruned outputs feed nothing: 1 of 2n block forwards saved
            step.sync_forward_weights()
            step.forward(advance=True)
    return counts
