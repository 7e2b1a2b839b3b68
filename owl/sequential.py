"""Run a model one decoder block at a time.

The inputs of every block are captured in one pass through the model with the blocks swapped for
catchers that record their positional and keyword arguments (``position_embeddings``,
per-layer-type attention masks, ``cache_position``, ...) and pass the hidden states on, so nothing
about a model family's calling convention is hard-coded. Each block is then moved to the device,
run on the calibration batches (with observers on its linear sublayers), and moved back, so a
model larger than the device's memory can still be processed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from owl.models import find_decoder_blocks, find_linear_sublayers


class _StopForward(Exception):
    """Raised by the last catcher: nothing after the blocks needs to run."""


class _BlockInputCatcher(nn.Module):
    def __init__(self, index: int, records: list, is_last: bool):
        super().__init__()
        self.index, self.records, self.is_last = index, records, is_last

    def forward(self, hidden_states, *args, **kwargs):
        self.records.append((self.index, hidden_states if self.index == 0 else None, args, kwargs))
        if self.is_last:
            raise _StopForward
        return hidden_states


@contextmanager
def _blocks_swapped(blocks: nn.ModuleList, replacements: list[nn.Module]):
    originals = list(blocks)
    for i, replacement in enumerate(replacements):
        blocks[i] = replacement
    try:
        yield
    finally:
        for i, original in enumerate(originals):
            blocks[i] = original


def _share_equal_tensors(value, reference):
    """Reuse ``reference`` where ``value`` is an equal tensor (masks and positions repeat per batch)."""
    if isinstance(value, torch.Tensor) and isinstance(reference, torch.Tensor):
        if value.shape == reference.shape and value.dtype == reference.dtype and torch.equal(value, reference):
            return reference
        return value
    if isinstance(value, (tuple, list)) and isinstance(reference, (tuple, list)) and len(value) == len(reference):
        return type(value)(_share_equal_tensors(v, r) for v, r in zip(value, reference))
    if isinstance(value, dict) and isinstance(reference, dict):
        return {k: _share_equal_tensors(v, reference.get(k)) for k, v in value.items()}
    return value


@dataclass
class BlockInputs:
    hidden: list[torch.Tensor]  # per batch, the current block's input hidden states
    args: list[list[tuple]]  # [block][batch] extra positional arguments
    kwargs: list[list[dict]]  # [block][batch] keyword arguments


@torch.no_grad()
def capture_block_inputs(
    model: nn.Module, token_batches: list[torch.Tensor], device: torch.device, storage: torch.device | None = None
) -> BlockInputs:
    """Inputs of every block for every batch, computed with only the non-block modules on ``device``;
    the hidden states are kept on ``storage`` (default ``device``; the host when the device is short)."""
    blocks = find_decoder_blocks(model)
    records: list = []
    catchers = [_BlockInputCatcher(i, records, i == len(blocks) - 1) for i in range(len(blocks))]
    home = next(model.parameters()).device
    hidden: list[torch.Tensor] = []
    args = [[] for _ in blocks]
    kwargs = [[] for _ in blocks]
    with _blocks_swapped(blocks, catchers):
        model.to(device)  # the blocks are catchers now: only embeddings, norms and head move
        try:
            for batch in token_batches:
                records.clear()
                try:
                    model(input_ids=batch.to(device), use_cache=False)
                except _StopForward:
                    pass
                for index, block_hidden, block_args, block_kwargs in records:
                    block_kwargs = {k: v for k, v in block_kwargs.items() if k not in ("past_key_value", "past_key_values")}
                    if index == 0:
                        hidden.append(block_hidden.to(storage or device))
                    if kwargs[index]:
                        block_kwargs = _share_equal_tensors(block_kwargs, kwargs[index][0])
                        block_args = _share_equal_tensors(block_args, args[index][0])
                    args[index].append(block_args)
                    kwargs[index].append(block_kwargs)
        finally:
            model.to(home)
    return BlockInputs(hidden, args, kwargs)


@contextmanager
def observe_inputs(layers: dict[str, nn.Module], observers: dict[str, Callable[[torch.Tensor], None]]):
    """Call ``observers[name](input)`` on every forward of ``layers[name]``; hooks always removed."""
    handles = [
        layers[name].register_forward_hook(lambda _m, inputs, _out, fn=fn: fn(inputs[0].detach()))
        for name, fn in observers.items()
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class BlockStep:
    """One block on the device, with the inputs of all calibration batches."""

    def __init__(self, index: int, block: nn.Module, inputs: BlockInputs):
        self.index, self.block, self._inputs = index, block, inputs
        self.linear_layers = find_linear_sublayers(block)

    @torch.no_grad()
    def forward(self, observers: dict[str, Callable] | None = None, advance: bool = False) -> None:
        """Run the block on every batch; with ``advance`` its outputs become the next block's inputs."""
        with observe_inputs(self.linear_layers, observers or {}):
            device = next(self.block.parameters()).device
            for b, hidden in enumerate(self._inputs.hidden):
                # Hidden states kept on the host are streamed to the block's device one batch at a time.
                out = self.block(hidden.to(device), *self._inputs.args[self.index][b], **self._inputs.kwargs[self.index][b])
                if isinstance(out, (tuple, list)):
                    out = out[0]
                if advance:
                    self._inputs.hidden[b] = out.to(hidden.device)


def sequential_blocks(
    model: nn.Module, token_batches: list[torch.Tensor], device: torch.device | str, desc: str = "blocks",
    storage: torch.device | str | None = None,
) -> Iterator[BlockStep]:
    """Yield a :class:`BlockStep` per block, the block on ``device`` while the caller works on it.

    The caller must call ``step.forward(..., advance=True)`` exactly once per step (last), so the
    next block sees this block's outputs. ``storage``: where the hidden states of all batches are
    kept between blocks (default ``device``; ``cpu`` streams them per batch to a GPU, see owl.memory).
    """
    device = torch.device(device)
    blocks = find_decoder_blocks(model)
    inputs = capture_block_inputs(model, token_batches, device, torch.device(storage) if storage else None)
    home = next(blocks[0].parameters()).device
    for index, block in enumerate(tqdm(blocks, desc=desc, unit="block")):
        block.to(device)
        try:
            yield BlockStep(index, block, inputs)
        finally:
            block.to(home)
