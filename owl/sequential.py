"""Run a model one decoder block at a time.

The inputs of every block are captured in one pass through the model with the blocks swapped for
catchers that record their positional and keyword arguments (``position_embeddings``,
per-layer-type attention masks, ``cache_position``, ...) and pass the hidden states on, so nothing
about a model family's calling convention is hard-coded. Each block is then moved to the device,
run on the calibration batches (with observers on its linear sublayers), and moved back, so a
model larger than the device's memory can still be processed.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from owl.errors import OwlError
from owl.models import find_decoder_blocks, find_linear_sublayers
from owl.statistics import Workspace


class _StopForward(Exception):
    """Raised by the last catcher: nothing after the blocks needs to run."""


def non_finite_error(where: str, dtype: torch.dtype) -> OwlError:
    """The one-line refusal when a block's hidden states or statistics overflow (float16 does on
    some models, e.g. Gemma 3): a NaN perplexity or a failed Cholesky otherwise, much later."""
    name = str(dtype).removeprefix("torch.")
    return OwlError(f"{where} holds NaN or infinite values in {name}: the precision overflows; "
                    "use --dtype bfloat16 or float32 (and --forward_dtype / --eval_dtype likewise)")


def check_finite(tensor: torch.Tensor, where: str) -> None:
    """Refuse non-finite values with :func:`non_finite_error` (one reduction on the tensor's device)."""
    if not bool(torch.isfinite(tensor).all()):
        raise non_finite_error(where, tensor.dtype)


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
def blocks_swapped(blocks: nn.ModuleList, replacements: list[nn.Module]):
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
    with blocks_swapped(blocks, catchers):
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


class SharedInputStatistics:
    """One accumulator per distinct input tensor of a block's linear sublayers.

    Layers that read the very same tensor (q/k/v read the normed hidden states, gate/up the
    post-attention ones) share one accumulator: the statistic is bit-identical and computed once
    (for SparseGPT that is 3 of a LLaMA block's 7 Hessians saved). Which layers share is found
    from the tensors themselves (object identity within one forward), never from layer names.
    """

    def __init__(self, names, make_accumulator: Callable[[str], object], workspace: Workspace | None = None, label: str = ""):
        self.names = list(names)
        self.label = label  # where the layers are, for messages ("block 3, ")
        self._make = make_accumulator
        self._workspace = workspace or Workspace()  # scratch for the accumulators, reusable across blocks
        self.owner: dict[str, str] = {}  # layer -> the layer whose accumulator holds its input
        self._accumulators: dict[str, object] = {}
        self._seen: dict[int, tuple[weakref.ref, str]] = {}  # id(tensor) -> (its weakref, owner), this chunk
        self._layers_seen: set[str] = set()
        self._pending: dict[str, list[torch.Tensor]] | None = None  # per owner, the chunks of this batch

    def start_batch(self, chunks: int = 1) -> None:
        """A new calibration batch, run through the block in ``chunks`` calls. With several chunks
        their inputs are kept and accumulated as one tensor at :meth:`end_batch`, so the statistic
        is the one of the whole batch, bit for bit (a sum over the batch in one reduction)."""
        self._pending = {} if chunks > 1 else None
        self.start_chunk()

    def start_chunk(self) -> None:
        self._seen.clear()
        self._layers_seen.clear()

    def end_batch(self) -> None:
        if self._pending:
            for owner, parts in self._pending.items():
                self._accumulator(owner).add_parts(parts, self._workspace)
        self._pending = None

    @property
    def batch_complete(self) -> bool:
        """Whether every layer's input of the current chunk has been observed."""
        return len(self._layers_seen) == len(self.names)

    def _accumulator(self, owner: str):
        if owner not in self._accumulators:
            self._accumulators[owner] = self._make(owner)
        return self._accumulators[owner]

    def observe(self, name: str, tensor: torch.Tensor) -> None:
        seen = self._seen.get(id(tensor))
        owner = seen[1] if seen is not None and seen[0]() is tensor else name
        if self.owner.setdefault(name, owner) != owner:
            raise RuntimeError(f"layer {name} read a different shared input than in the first batch")
        self._layers_seen.add(name)
        if owner != name:
            return
        self._seen[id(tensor)] = (weakref.ref(tensor), name)
        if self._pending is None:
            self._accumulator(name).add(tensor.detach(), self._workspace)
        else:
            self._pending.setdefault(name, []).append(tensor.detach())

    def _finite_value(self, owner: str, accumulator):
        value = accumulator.value
        check_finite(value, f"the calibration statistic of {self.label}{owner}")
        return value

    @property
    def groups(self) -> dict[str, list[str]]:
        """``{owner: [layers reading its input]}``."""
        groups: dict[str, list[str]] = {}
        for name in self.names:
            groups.setdefault(self.owner[name], []).append(name)
        return groups

    def values(self, prepare: Callable = lambda value: value) -> dict[str, object]:
        """``{layer: prepare(accumulated value)}``, computed once per distinct input."""
        missing = [name for name in self.names if name not in self.owner]
        if missing:
            raise RuntimeError(f"no input observed for {missing}")
        prepared = {owner: prepare(self._finite_value(owner, acc)) for owner, acc in self._accumulators.items()}
        return {name: prepared[self.owner[name]] for name in self.names}


@contextmanager
def _observed(layers: dict[str, nn.Module], statistics: SharedInputStatistics | None, stop_when_complete: bool):
    """Feed every linear input to ``statistics`` (pre-hooks, always removed); optionally stop the
    block's forward as soon as every input of the batch is seen (its outputs are not needed)."""
    if statistics is None:
        yield
        return

    def hook(_module, inputs, name):
        statistics.observe(name, inputs[0])  # the tensor itself: identity tells shared inputs
        if stop_when_complete and statistics.batch_complete:
            raise _StopForward

    handles = [layer.register_forward_pre_hook(lambda m, i, name=name: hook(m, i, name)) for name, layer in layers.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def windows_per_block_call(device: torch.device) -> int | None:
    """How many windows of a calibration batch go through a block in one call (None: the whole
    batch). On a CPU one at a time: the MLP intermediates of one 2048-token window fit in the
    cache, and a SmolLM2 block forward measured 0.77-0.94x of the batch-8 call at 2 threads
    (bench/bench_speed.py); evaluation's decoder calls follow it too. GPUs keep the whole batch:
    small calls waste them (not measured)."""
    return 1 if torch.device(device).type == "cpu" else None


def _batch_rows(value, start: int, end: int, batch: int):
    """``value`` (tensors, nested tuples/lists/dicts) with every tensor that has a batch dimension
    (2-D or more, first dimension ``batch``) cut to rows ``start:end``; the rest (rotary tables of
    batch 1, 1-D ``cache_position``, flags) is shared by every chunk as it is."""
    if isinstance(value, torch.Tensor):
        return value[start:end] if value.dim() >= 2 and value.shape[0] == batch else value
    if isinstance(value, (tuple, list)):
        return type(value)(_batch_rows(v, start, end, batch) for v in value)
    if isinstance(value, dict):
        return {k: _batch_rows(v, start, end, batch) for k, v in value.items()}
    return value


def _cast_floats(value, dtype: torch.dtype, memo: dict):
    """``value`` (tensors, nested tuples/lists/dicts) with floating tensors cast to ``dtype``; a
    tensor shared between batches (masks, rotary tables) stays shared through ``memo``."""
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point() or value.dtype == dtype:
            return value
        if id(value) not in memo:
            memo[id(value)] = (value, value.to(dtype))  # keep the source alive: ids stay unique
        return memo[id(value)][1]
    if isinstance(value, (tuple, list)):
        return type(value)(_cast_floats(v, dtype, memo) for v in value)
    if isinstance(value, dict):
        return {k: _cast_floats(v, dtype, memo) for k, v in value.items()}
    return value


def _joined_outputs(outputs: list[torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
    """A batch's block outputs (one per chunk) as one tensor where its ``inputs`` are kept. Chunks
    are written over the inputs, which are dead once every chunk has run: no fresh allocation of
    the batch's hidden states per block (page faults for tens of MB, see statistics.Workspace)."""
    if len(outputs) == 1:
        return outputs[0].to(inputs.device)
    fits = all(o.dtype == inputs.dtype and o.device == inputs.device for o in outputs) and \
        sum(o.shape[0] for o in outputs) == inputs.shape[0] and outputs[0].shape[1:] == inputs.shape[1:]
    aliased = any(o.untyped_storage().data_ptr() == inputs.untyped_storage().data_ptr() for o in outputs)
    if fits and not aliased and inputs.is_contiguous():
        return torch.cat(outputs, out=inputs)
    return torch.cat(outputs).to(inputs.device)


class BlockStep:
    """One block on the device, with the inputs of all calibration batches.

    ``block`` holds the weights that are pruned. Forwards run on ``block`` itself or, with a
    forward dtype other than the block's (mixed precision), on a copy in that dtype whose
    weights :meth:`sync_forward_weights` refreshes from ``block`` after pruning.
    """

    def __init__(self, index: int, block: nn.Module, inputs: BlockInputs, forward_dtype: torch.dtype | None = None,
                 chunk_size: int | None = None, is_last: bool = False, workspace: Workspace | None = None):
        self.index, self.block, self._inputs = index, block, inputs
        self.workspace = workspace or Workspace()  # statistics' scratch, one per pass: see Workspace
        self.is_last = is_last  # no block reads this one's outputs: callers need not advance it
        self.chunk_size = chunk_size  # windows per block call; None: the whole batch
        self.linear_layers = find_linear_sublayers(block)
        weight_dtype = next(block.parameters()).dtype
        if forward_dtype is None or forward_dtype == weight_dtype:
            self._forward_block = block
        else:
            self._forward_block = copy.deepcopy(block).to(forward_dtype)
        self._forward_layers = find_linear_sublayers(self._forward_block)

    def sync_forward_weights(self) -> None:
        """Copy the (pruned) weights into the forward copy; nothing to do without one."""
        if self._forward_block is not self.block:
            for name, layer in self.linear_layers.items():
                self._forward_layers[name].weight.data.copy_(layer.weight.data)

    @torch.no_grad()
    def forward(self, statistics: SharedInputStatistics | None = None, advance: bool = False) -> None:
        """Run the block on every batch, feeding its linear inputs to ``statistics``.

        With ``advance`` its outputs become the next block's inputs. Without it the outputs are
        not needed, so each batch stops once every linear input has been observed (e.g. before
        LLaMA's down_proj matmul): a quarter of the block's linear work saved.
        """
        args, kwargs = self._inputs.args[self.index], self._inputs.kwargs[self.index]
        device = next(self.block.parameters()).device
        with _observed(self._forward_layers, statistics, stop_when_complete=not advance):
            for b, hidden in enumerate(self._inputs.hidden):
                size = len(hidden)
                step = min(self.chunk_size or size, size)
                starts = range(0, size, step)
                if statistics is not None:
                    statistics.start_batch(chunks=len(starts))
                outputs = []
                for start in starts:
                    end = min(start + step, size)
                    chunk_args, chunk_kwargs = (args[b], kwargs[b]) if step == size else \
                        (_batch_rows(args[b], start, end, size), _batch_rows(kwargs[b], start, end, size))
                    if statistics is not None:
                        statistics.start_chunk()
                    try:
                        # Hidden states kept on the host are streamed to the block's device one chunk at a time.
                        out = self._forward_block(hidden[start:end].to(device), *chunk_args, **chunk_kwargs)
                    except _StopForward:
                        continue
                    outputs.append(out[0] if isinstance(out, (tuple, list)) else out)
                if statistics is not None:
                    statistics.end_batch()
                if advance:
                    joined = _joined_outputs(outputs, hidden)
                    check_finite(joined, f"the output of block {self.index}")
                    self._inputs.hidden[b] = joined

    @property
    def hidden_states(self) -> list[torch.Tensor]:
        """Per batch, the block's inputs; after ``forward(advance=True)`` its outputs."""
        return self._inputs.hidden


def sequential_blocks(
    model: nn.Module,
    token_batches: list[torch.Tensor],
    device: torch.device | str,
    desc: str = "blocks",
    forward_dtype: torch.dtype | None = None,
    storage: torch.device | str | None = None,
    chunk_size: int | None | str = "auto",
) -> Iterator[BlockStep]:
    """Yield a :class:`BlockStep` per block, the block on ``device`` while the caller works on it.

    The caller must call ``step.forward(..., advance=True)`` exactly once per step (last), so the
    next block sees this block's outputs; on the last step (``step.is_last``) no block reads them,
    so the caller may skip it. With ``forward_dtype`` the blocks run in that precision
    (hidden states and floating keyword arguments cast to it) while their weights stay as they are.
    ``storage``: where the hidden states of all batches are kept between blocks (default ``device``;
    ``cpu`` streams them per batch to a GPU, see owl.memory). ``chunk_size``: windows per block
    call (``"auto"``: :func:`windows_per_block_call`; None: whole batches). Results do not depend
    on it: the statistics are still those of whole batches, bit for bit (tests/test_speed_paths.py).
    """
    device = torch.device(device)
    if chunk_size == "auto":
        chunk_size = windows_per_block_call(device)
    blocks = find_decoder_blocks(model)
    inputs = capture_block_inputs(model, token_batches, device, torch.device(storage) if storage else None)
    if forward_dtype is not None and forward_dtype != next(model.parameters()).dtype:
        memo: dict = {}
        inputs = BlockInputs(
            [h.to(forward_dtype) for h in inputs.hidden],
            [[_cast_floats(a, forward_dtype, memo) for a in per_block] for per_block in inputs.args],
            [[_cast_floats(k, forward_dtype, memo) for k in per_block] for per_block in inputs.kwargs],
        )
        del memo
    for hidden in inputs.hidden:
        check_finite(hidden, "the input of block 0 (the embeddings)")
    home = next(blocks[0].parameters()).device
    workspace = Workspace()
    for index, block in enumerate(tqdm(blocks, desc=desc, unit="block")):
        block.to(device)
        try:
            yield BlockStep(index, block, inputs, forward_dtype, chunk_size, is_last=index == len(blocks) - 1,
                            workspace=workspace)
        finally:
            block.to(home)
