"""Will the calibration fit? An estimate of what a sequential pass holds, checked before any work.

The sequential driver keeps the hidden states of every calibration window for the current block
(they are the next block's inputs), one block's parameters, the method's statistics of that
block and the intermediates of one batch. The first of these grows with ``nsamples x seqlen``
and is what kills a run silently (the kernel's OOM killer) when it does not fit. The estimate is
pure arithmetic (:func:`calibration_footprint`, :func:`plan_storage`); reading the model and the
machine is separate (:func:`footprint_of`, :func:`available_bytes`).

Where the device is a GPU that cannot hold the activations but the host can, the activations stay
in host memory and each batch is moved to the GPU for its forward pass (automatic; logged).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from owl.errors import OwlError

log = logging.getLogger(__name__)

LOWER_HINT = "lower --nsamples, --seqlen or --calib_batch_size"


@dataclass(frozen=True)
class Footprint:
    """Bytes a sequential calibration pass holds, by kind."""

    activations: int  # hidden states of all calibration windows for one block
    batch: int  # hidden states of one batch (a block's output is written while its input lives)
    intermediate: int  # the biggest intermediate of one batch in a block (MLP width, attention scores)
    block: int  # parameters of the largest block, or of the modules outside the blocks if larger
    statistics: int  # the method's accumulators for one block (Wanda's row norms, SparseGPT's Hessians)
    description: str  # what ``activations`` is made of, for messages

    def on_device(self, streamed: bool) -> int:
        """Bytes on the device: everything, or (streamed) one batch in and out instead of all windows."""
        held = 2 * self.batch if streamed else self.activations + self.batch
        return held + self.intermediate + self.block + self.statistics

    def on_host(self) -> int:
        """Bytes on the host when it holds the activations (the model's own weights are already loaded)."""
        return self.activations + self.batch


def calibration_footprint(
    nsamples: int, seqlen: int, batch_size: int, hidden_size: int, dtype_bytes: int, *,
    widest_layer: int, attention_heads: int, block_bytes: int, statistic_bytes: int, dtype_name: str = "",
) -> Footprint:
    """The footprint from the run's sizes (pure arithmetic; all sizes in elements, result in bytes)."""
    batch_size = min(batch_size, nsamples)
    token_bytes = seqlen * dtype_bytes
    mlp = batch_size * token_bytes * widest_layer
    scores = batch_size * attention_heads * seqlen * token_bytes  # eager / math attention materialises them
    return Footprint(
        activations=nsamples * token_bytes * hidden_size,
        batch=batch_size * token_bytes * hidden_size,
        intermediate=max(mlp, scores),
        block=block_bytes,
        statistics=statistic_bytes,
        description=f"{nsamples} windows x {seqlen} tokens x {hidden_size} features{' ' + dtype_name if dtype_name else ''}",
    )


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


def plan_storage(footprint: Footprint, device: str, device_free: int | None, host_free: int | None) -> str:
    """Where the activations live: ``"device"`` or ``"host"`` (streamed per batch to a GPU).

    ``device`` is the device's name (``cpu``, ``cuda:0``); a free amount of ``None`` is unknown and
    not checked. Raises :class:`OwlError` (one line: estimate, availability, what to lower) when
    neither fits.
    """
    what = f"the activations of one block ({footprint.description}: {gib(footprint.activations)})"
    if device == "cpu":
        need = footprint.on_device(streamed=False) - footprint.block  # the blocks are in host memory already
        if host_free is not None and need > host_free:
            raise OwlError(f"calibration needs about {gib(need)} of memory for {what} and one batch, but the host has "
                           f"{gib(host_free)} available; {LOWER_HINT}")
        return "device"
    full = footprint.on_device(streamed=False)
    if device_free is None or full <= device_free:
        return "device"
    streamed = footprint.on_device(streamed=True)
    host_ok = host_free is None or footprint.on_host() <= host_free
    if streamed <= device_free and host_ok:
        return "host"
    if not host_ok:
        raise OwlError(f"calibration needs about {gib(full)} on {device} ({gib(device_free)} free) or, streamed from the host, "
                       f"{gib(footprint.on_host())} of host memory ({gib(host_free)} available) for {what}; {LOWER_HINT}")
    raise OwlError(f"calibration needs about {gib(streamed)} on {device} even with the activations streamed from the host "
                   f"(largest block {gib(footprint.block)}, one batch's intermediates {gib(footprint.intermediate)}, "
                   f"statistics {gib(footprint.statistics)}), but {gib(device_free)} is free; lower --calib_batch_size or --seqlen")


# ---- reading the model and the machine ------------------------------------------------------------
def _module_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def footprint_of(model: nn.Module, blocks: nn.ModuleList, linear_layers: list[dict], statistic_nbytes,
                 nsamples: int, seqlen: int, batch_size: int, dtype: torch.dtype) -> Footprint:
    """The footprint of calibrating ``model``; ``statistic_nbytes(in_features)`` is the method's
    accumulator size per layer (0 for methods without one)."""
    first = next(iter(linear_layers[0].values()))
    hidden_size = getattr(model.config, "hidden_size", None) or first.in_features
    block_bytes = max(_module_bytes(b) for b in blocks)
    outside = _module_bytes(model) - sum(_module_bytes(b) for b in blocks)  # on the device while inputs are captured
    return calibration_footprint(
        nsamples, seqlen, batch_size, hidden_size, torch.empty((), dtype=dtype).element_size(),
        widest_layer=max(layer.out_features for layers in linear_layers for layer in layers.values()),
        attention_heads=getattr(model.config, "num_attention_heads", 0) or 0,
        block_bytes=max(block_bytes, outside),
        statistic_bytes=max(sum(statistic_nbytes(layer.in_features) for layer in layers.values()) for layers in linear_layers),
        dtype_name=str(dtype).removeprefix("torch."),
    )


def available_bytes(device: torch.device) -> int | None:
    """Free memory of ``device``: CUDA's free memory, or the host's MemAvailable; None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        import psutil

        return psutil.virtual_memory().available
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def activation_storage(footprint: Footprint, device: torch.device) -> torch.device:
    """Check the footprint against the machine; the device the activations are kept on."""
    host_free = available_bytes(torch.device("cpu"))
    device_free = None if device.type == "cpu" else available_bytes(device)
    where = plan_storage(footprint, "cpu" if device.type == "cpu" else str(device), device_free, host_free)
    if where == "host":
        log.warning("the activations (%s) do not fit on %s (%s free): kept in host memory and streamed per batch",
                    gib(footprint.activations), device, gib(device_free))
        return torch.device("cpu")
    return device


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def reuse_freed_host_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Ask glibc's malloc to keep freed memory for the next allocation instead of handing it back.

    A block forward allocates and frees intermediates of a few to tens of MB per window. With
    glibc's defaults such blocks are mapped from the OS and unmapped on free, or trimmed off the
    heap, so every window pays page faults again: 0.8-6.3 million minor faults and 3-27 s of
    system time in a 60-80 s float32 pruning pass of SmolLM2-135M (8 windows of 2048, 2 threads;
    docs/benchmarks.md), varying from run to run. Allocations up to ``mmap_threshold`` (glibc's
    maximum on 64-bit) then come from the heap, which keeps up to ``trim_threshold`` of free
    memory. It changes where tensors live, never what is computed. Returns whether it applied
    (False on a C library other than glibc)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
