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

import dataclasses
import logging
from dataclasses import dataclass

import torch
from torch import nn

from owl.errors import OwlError

log = logging.getLogger(__name__)

LOWER_HINT = "lower --nsamples, --seqlen or --calib_batch_size"


@dataclass(frozen=True)
class Footprint:
    """Bytes a sequential pass (calibration, pruning or block-by-block evaluation) holds, by kind."""

    activations: int  # hidden states of all windows for one block
    batch: int  # hidden states of one batch (a block's output is written while its input lives)
    intermediate: int  # the biggest intermediate of one batch in a block (MLP width, attention scores)
    block: int  # parameters of the largest block, or of the modules outside the blocks if larger
    statistics: int  # the method's accumulators for one block (Wanda's row norms, SparseGPT's Hessians)
    description: str  # what ``activations`` is made of, for messages
    scratch: int = 0  # float32 copies of one batch's linear inputs (the statistics' Workspace)
    solver: int = 0  # SparseGPT: factors held with the Hessians, their temporaries, a group's float32 weights
    forward_copy: int = 0  # mixed precision: the block's forward copy (made at full width, then cast)
    capture_extra: int = 0  # mixed precision: the windows captured at the weights' dtype while cast

    def on_device(self, streamed: bool) -> int:
        """Bytes on the device: everything, or (streamed) one batch in and out instead of all windows.
        The capture (all windows at the weights' dtype and their cast) and the block work are not
        at the same time: the larger of the two counts."""
        held = 2 * self.batch if streamed else self.activations + self.batch
        working = self.intermediate + self.block + self.statistics + self.scratch + self.solver + self.forward_copy
        capture = 0 if streamed else self.capture_extra
        return held + max(working, capture)

    def on_host(self) -> int:
        """Bytes on the host when it holds the activations (the model's own weights are already loaded)."""
        return self.activations + self.batch + self.capture_extra


def calibration_footprint(
    nsamples: int, seqlen: int, batch_size: int, hidden_size: int, dtype_bytes: int, *,
    widest_layer: int, attention_heads: int, block_bytes: int, statistic_bytes: int, dtype_name: str = "",
    scratch_bytes: int = 0, solver_bytes: int = 0, weight_bytes: int | None = None,
) -> Footprint:
    """The footprint from the run's sizes (pure arithmetic; all sizes in elements, result in bytes).
    ``dtype_bytes``: the block forwards' precision; ``weight_bytes``: the weights' (default the
    same; where it differs, mixed precision adds a block copy and the windows' cast)."""
    batch_size = min(batch_size, nsamples)
    token_bytes = seqlen * dtype_bytes
    mlp = batch_size * token_bytes * widest_layer
    scores = batch_size * attention_heads * seqlen * token_bytes  # eager / math attention materialises them
    mixed = weight_bytes is not None and weight_bytes != dtype_bytes
    return Footprint(
        activations=nsamples * token_bytes * hidden_size,
        batch=batch_size * token_bytes * hidden_size,
        intermediate=max(mlp, scores),
        block=block_bytes,
        statistics=statistic_bytes,
        description=f"{nsamples} windows x {seqlen} tokens x {hidden_size} features{' ' + dtype_name if dtype_name else ''}",
        scratch=scratch_bytes,
        solver=solver_bytes,
        forward_copy=block_bytes if mixed else 0,
        capture_extra=nsamples * seqlen * hidden_size * weight_bytes if mixed else 0,
    )


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


def plan_storage(footprint: Footprint, device: str, device_free: int | None, host_free: int | None,
                 step: str = "calibration", hint: str = LOWER_HINT) -> str:
    """Where the activations live: ``"device"`` or ``"host"`` (streamed per batch to a GPU).

    ``device`` is the device's name (``cpu``, ``cuda:0``); a free amount of ``None`` is unknown and
    not checked. Raises :class:`OwlError` (one line: estimate, availability, what to lower) when
    neither fits.
    """
    what = f"the activations of one block ({footprint.description}: {gib(footprint.activations)})"
    if device == "cpu":
        need = footprint.on_device(streamed=False) - footprint.block  # the blocks are in host memory already
        if host_free is not None and need > host_free:
            raise OwlError(f"{step} needs about {gib(need)} of memory for {what} and one batch, but the host has "
                           f"{gib(host_free)} available; {hint}")
        return "device"
    full = footprint.on_device(streamed=False)
    if device_free is None or full <= device_free:
        return "device"
    streamed = footprint.on_device(streamed=True)
    host_ok = host_free is None or footprint.on_host() <= host_free
    if streamed <= device_free and host_ok:
        return "host"
    if not host_ok:
        raise OwlError(f"{step} needs about {gib(full)} on {device} ({gib(device_free)} free) or, streamed from the host, "
                       f"{gib(footprint.on_host())} of host memory ({gib(host_free)} available) for {what}; {hint}")
    raise OwlError(f"{step} needs about {gib(streamed)} on {device} even with the activations streamed from the host "
                   f"(largest block {gib(footprint.block)}, one batch's intermediates {gib(footprint.intermediate)}, "
                   f"statistics and solver {gib(footprint.statistics + footprint.solver)}), but {gib(device_free)} is free; "
                   f"{'lower --calib_batch_size or --seqlen' if step == 'calibration' else hint}")


# ---- model shapes -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelShape:
    """What a memory plan needs from a model: sizes only, discovered from a loaded model or from a
    model built on the meta device from its config (:func:`shape_from_config`), never from its name."""

    n_blocks: int
    hidden: int
    heads: int
    vocab: int
    linears: tuple[tuple[int, int], ...]  # (in_features, out_features) of each linear layer of the largest block
    block_params: int  # every parameter of the largest block
    outside_params: int  # parameters outside the blocks (embeddings, final norm, head; tied ones once)
    no_split: tuple[str, ...] = ()  # the block class names accelerate must keep whole

    @property
    def total_params(self) -> int:
        return self.n_blocks * self.block_params + self.outside_params

    @property
    def widest(self) -> int:
        return max(out for _, out in self.linears)


def _param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def shape_of(model: nn.Module) -> ModelShape:
    """The shape of a model (its parameters may live on the meta device)."""
    from owl.models import find_decoder_blocks, find_linear_sublayers

    blocks = find_decoder_blocks(model)
    largest = max(blocks, key=_param_count)
    linears = tuple((layer.in_features, layer.out_features) for layer in find_linear_sublayers(largest).values())
    config = getattr(model, "config", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return ModelShape(
        n_blocks=len(blocks),
        hidden=getattr(config, "hidden_size", None) or linears[0][0],
        heads=getattr(config, "num_attention_heads", 0) or 0,
        vocab=head.weight.shape[0] if head is not None else (getattr(config, "vocab_size", 0) or 0),
        linears=linears,
        block_params=_param_count(largest),
        outside_params=_param_count(model) - sum(_param_count(b) for b in blocks),
        no_split=tuple(getattr(model, "_no_split_modules", None) or ()),
    )


def shape_from_config(config) -> ModelShape:
    """The shape of the model a transformers config describes, built on the meta device (no memory)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return shape_of(model)


# The Hugging Face config.json values of the paper's models (huggyllama/*, facebook/opt-6.7b): what
# ``owl plan`` and the planning tests build on the meta device; no download needed.
PAPER_MODEL_CONFIGS = {
    "huggyllama/llama-7b": ("llama", dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32)),
    "huggyllama/llama-13b": ("llama", dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40)),
    "huggyllama/llama-30b": ("llama", dict(hidden_size=6656, intermediate_size=17920, num_hidden_layers=60, num_attention_heads=52)),
    "huggyllama/llama-65b": ("llama", dict(hidden_size=8192, intermediate_size=22016, num_hidden_layers=80, num_attention_heads=64)),
    "facebook/opt-6.7b": ("opt", dict(hidden_size=4096, ffn_dim=16384, num_hidden_layers=32, num_attention_heads=32,
                                      vocab_size=50272, max_position_embeddings=2048, word_embed_proj_dim=4096,
                                      do_layer_norm_before=True)),
}


def paper_model_shape(model_id: str) -> ModelShape:
    from transformers import LlamaConfig, OPTConfig

    if model_id not in PAPER_MODEL_CONFIGS:
        raise OwlError(f"no stored shape for {model_id!r}; known: {', '.join(PAPER_MODEL_CONFIGS)}")
    family, values = PAPER_MODEL_CONFIGS[model_id]
    config = LlamaConfig(vocab_size=32000, max_position_embeddings=2048, **values) if family == "llama" else OPTConfig(**values)
    return shape_from_config(config)


# ---- footprints from a shape (pure) -------------------------------------------------------------
FLOAT32 = 4
# Evaluation's head runs on chunks of 2**23 logits (owl.evaluation): the logits, their float32 copy, log-softmax.
LOGIT_CHUNK_BYTES = 3 * FLOAT32 * 2**23


def pass_footprint(shape: ModelShape, nsamples: int, seqlen: int, batch_size: int, forward_bytes: int, weight_bytes: int,
                   statistic_nbytes=None, sparsegpt: bool = False, dtype_name: str = "") -> Footprint:
    """The device footprint of one sequential pass over ``shape``: calibration (``statistic_nbytes``:
    the accumulator's bytes per input width), pruning (``sparsegpt``: the solver's items too) or
    evaluation (neither)."""
    inputs = [i for i, _ in shape.linears]
    statistics = sum(statistic_nbytes(i) for i in inputs) if statistic_nbytes else 0
    batch = min(batch_size, nsamples)
    # float32 copies of a batch's linear inputs, one per distinct width (statistics.Workspace)
    scratch = batch * seqlen * sum(set(inputs)) * FLOAT32 if statistic_nbytes else 0
    solver = 0
    if sparsegpt:
        factors = sum(FLOAT32 * i * i for i in inputs)  # held together with the Hessians (conservative: no sharing)
        temporaries = 3 * FLOAT32 * max(inputs) ** 2  # dampened copy, Cholesky factor, inverse
        group = max(sum(FLOAT32 * i * o for i, o in shape.linears if i == width) for width in set(inputs))
        solver = factors + temporaries + 2 * group  # the stacked float32 weights and the column loop's buffers
    return calibration_footprint(
        nsamples, seqlen, batch_size, shape.hidden, forward_bytes, widest_layer=shape.widest, attention_heads=shape.heads,
        block_bytes=max(shape.block_params, shape.outside_params) * weight_bytes, statistic_bytes=statistics,
        dtype_name=dtype_name, scratch_bytes=scratch, solver_bytes=solver,
        weight_bytes=weight_bytes,
    )


def whole_model_evaluation_bytes(shape: ModelShape, seqlen: int, batch_size: int, dtype_bytes: int) -> int:
    """Device bytes of evaluating the whole model at once: its weights, a batch's hidden states in
    and out, the biggest intermediate, the head's logit chunk."""
    token_bytes = batch_size * seqlen * dtype_bytes
    intermediate = max(token_bytes * shape.widest, token_bytes * shape.heads * seqlen)
    return shape.total_params * dtype_bytes + 2 * token_bytes * shape.hidden + intermediate + LOGIT_CHUNK_BYTES


@dataclass(frozen=True)
class EvaluationPlan:
    mode: str  # "whole": the model on the device; "blocks": block by block (owl.sequential), then norm and head
    storage: str  # blocks: where the windows' hidden states live between blocks, "device" or "host"
    device_bytes: int  # the estimate on the device


def plan_evaluation(shape: ModelShape, n_windows: int, seqlen: int, batch_size: int, dtype_bytes: int, device: str,
                    device_free: int | None, host_free: int | None) -> EvaluationPlan:
    """Whole model on the device when it fits there (or the device is the CPU, or its free memory is
    unknown), else block by block with the windows' hidden states on the device or the host;
    one-line :class:`OwlError` when not even one block fits."""
    whole = whole_model_evaluation_bytes(shape, seqlen, batch_size, dtype_bytes)
    if device == "cpu" or device_free is None or whole <= device_free:
        return EvaluationPlan("whole", "device", whole)
    footprint = pass_footprint(shape, n_windows, seqlen, batch_size, dtype_bytes, dtype_bytes)
    footprint = dataclasses.replace(footprint, scratch=LOGIT_CHUNK_BYTES)
    storage = plan_storage(footprint, device, device_free, host_free, step="evaluation",
                           hint="lower --eval_batch_size or --seqlen, or evaluate in a smaller --eval_dtype")
    return EvaluationPlan("blocks", storage, footprint.on_device(streamed=storage == "host"))


@dataclass(frozen=True)
class ZeroShotPlan:
    gpus: int  # GPUs the model is spread over (0: on the host)
    host_bytes: int  # weights offloaded to the host (accelerate moves them in per block: slow)
    max_memory: dict  # accelerate's max_memory: {gpu index: bytes, "cpu": bytes}; {} when on one device


def plan_zero_shot(model_bytes: int, block_bytes: int, working_bytes: int, gpu_free: dict[int, int], host_free: int | None) -> ZeroShotPlan:
    """Where the zero-shot evaluation runs (``gpu_free``: ``{gpu index: free bytes}``, the run's
    GPU first): the whole model on the first GPU if it fits, else spread
    over as many GPUs as it needs (whole blocks each, ``working_bytes`` kept free on each for a
    batch), then the host for what is left; one-line :class:`OwlError` when even that does not hold it."""
    if not gpu_free:
        return ZeroShotPlan(0, model_bytes, {})
    if model_bytes + working_bytes <= next(iter(gpu_free.values())):
        return ZeroShotPlan(1, 0, {})
    max_memory, placed = {}, 0
    for index, free in gpu_free.items():
        usable = max(0, free - working_bytes)
        usable -= usable % max(block_bytes, 1) if usable > block_bytes else 0  # whole blocks only
        if usable < block_bytes:
            continue
        max_memory[index] = usable
        placed += usable
        if placed >= model_bytes:
            return ZeroShotPlan(len(max_memory), 0, max_memory)
    rest = model_bytes - placed
    if not max_memory or (host_free is not None and rest > host_free):
        raise OwlError(f"zero-shot evaluation needs {gib(model_bytes)} for the weights plus {gib(working_bytes)} per GPU, but "
                       f"{len(gpu_free)} GPU(s) have {gib(sum(gpu_free.values()))} free and the host {gib(host_free or 0)}; "
                       "use more or larger GPUs, or a smaller --eval_dtype")
    max_memory["cpu"] = rest if host_free is None else host_free
    return ZeroShotPlan(len(max_memory) - 1, rest, max_memory)


def zero_shot_working_bytes(shape: ModelShape, batch_size: int, seqlen: int, dtype_bytes: int) -> int:
    """A zero-shot batch on one GPU: hidden states, the biggest intermediate, full-width float32 logits."""
    token = batch_size * seqlen
    return token * (2 * shape.hidden + max(shape.widest, shape.heads * seqlen)) * dtype_bytes + token * shape.vocab * FLOAT32


@dataclass(frozen=True)
class RunPlan:
    """Where each step of a run goes on a machine, and what it needs (bytes)."""

    weights: int  # the model in the working dtype (held in host memory throughout)
    calibration: Footprint  # the statistics pass (Wanda's row norms)
    calibration_storage: str  # "device" or "host"
    pruning: Footprint  # the pruning pass of the run's method
    pruning_storage: str
    evaluation: EvaluationPlan | None
    zero_shot: ZeroShotPlan | None

    @property
    def device_peak(self) -> int:
        """The most any step holds on the (first) GPU."""
        steps = [self.calibration.on_device(self.calibration_storage == "host"), self.pruning.on_device(self.pruning_storage == "host")]
        return max(steps + ([self.evaluation.device_bytes] if self.evaluation else []))

    @property
    def host_peak(self) -> int:
        """The model's weights plus the hidden states a step keeps on the host."""
        streamed = [fp.on_host() for fp, where in ((self.calibration, self.calibration_storage), (self.pruning, self.pruning_storage))
                    if where == "host"]
        return self.weights + max(streamed, default=0)


def plan_run(shape: ModelShape, *, weight_bytes: int, forward_bytes: int, eval_bytes: int, nsamples: int, seqlen: int,
             calib_batch_size: int, sparsegpt: bool, gpu_free: list[int], host_free: int | None, eval_windows: int | None,
             eval_batch_size: int = 4, zero_shot_batch_size: int | None = None, zero_shot_seqlen: int = 2048) -> RunPlan:
    """Plan every step of one run on GPUs with ``gpu_free`` bytes each (the first runs the run) and a
    host with ``host_free``: pure arithmetic; one-line :class:`OwlError` for the first step that fits
    nowhere. ``eval_windows`` None: no perplexity; ``zero_shot_batch_size`` None: no zero-shot."""
    from owl.statistics import HessianAccumulator, RowNormAccumulator

    device = "cuda:0"
    weights = shape.total_params * weight_bytes
    host_for_activations = None if host_free is None else host_free - weights
    calibration = pass_footprint(shape, nsamples, seqlen, calib_batch_size, forward_bytes, weight_bytes, RowNormAccumulator.nbytes)
    pruning = pass_footprint(shape, nsamples, seqlen, calib_batch_size, forward_bytes, weight_bytes,
                             HessianAccumulator.nbytes if sparsegpt else RowNormAccumulator.nbytes, sparsegpt=sparsegpt)
    calibration_storage = plan_storage(calibration, device, gpu_free[0], host_for_activations)
    pruning_storage = plan_storage(pruning, device, gpu_free[0], host_for_activations)
    evaluation = None if eval_windows is None else plan_evaluation(
        shape, eval_windows, seqlen, eval_batch_size, eval_bytes, device, gpu_free[0], host_for_activations)
    zero_shot = None
    if zero_shot_batch_size is not None:
        zero_shot = plan_zero_shot(shape.total_params * eval_bytes, shape.block_params * eval_bytes,
                                   zero_shot_working_bytes(shape, zero_shot_batch_size, zero_shot_seqlen, eval_bytes),
                                   dict(enumerate(gpu_free)), host_for_activations)
    return RunPlan(weights, calibration, calibration_storage, pruning, pruning_storage, evaluation, zero_shot)


# ---- reading the model and the machine ------------------------------------------------------------
def _module_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def footprint_of(model: nn.Module, blocks: nn.ModuleList, linear_layers: list[dict], statistic_nbytes,
                 nsamples: int, seqlen: int, batch_size: int, dtype: torch.dtype, sparsegpt: bool = False) -> Footprint:
    """The footprint of calibrating or pruning ``model`` with block forwards in ``dtype``;
    ``statistic_nbytes(in_features)`` is the method's accumulator size per layer (0 for methods
    without one)."""
    weight_bytes = next(model.parameters()).element_size()
    forward_bytes = torch.empty((), dtype=dtype).element_size()
    return pass_footprint(shape_of(model), nsamples, seqlen, batch_size, forward_bytes, weight_bytes, statistic_nbytes,
                          sparsegpt, dtype_name=str(dtype).removeprefix("torch."))


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


# ---- `python -m owl.memory plan CONFIG`: what a workflow config's grid needs ----------------------
def plan_table(cfg: dict, gpu_bytes: int, n_gpus: int, host_bytes: int | None, eval_windows: int) -> list[str]:
    """Markdown rows: per model of a validated workflow config, what its runs need on GPUs with
    ``gpu_bytes`` free each and a host with ``host_bytes`` (None: unlimited, the need is printed)."""
    from owl.grid import expand_grid, model_specs
    from owl.precision import resolve_dtype

    models = model_specs(cfg)
    runs = expand_grid(cfg, models)
    zero_shot_models = set((cfg.get("zero_shot") or {}).get("models") or [])
    zero_shot_batch = (cfg.get("zero_shot") or {}).get("batch_size", 8)
    rows = ["| model | weights | calibration on the GPU | pruning on the GPU | perplexity | zero-shot | GPU peak | host memory |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key, m in models.items():
        settings, calibration = m["settings"], m["calibration"]
        width = {"float32": 4, "bfloat16": 2, "float16": 2}
        dtype = resolve_dtype(settings.get("dtype") or "float16", "cuda")
        dtype = "bfloat16" if dtype == "auto" else dtype
        forward = resolve_dtype(settings.get("forward_dtype"), "cuda") or dtype
        evaluation = resolve_dtype(settings.get("eval_dtype"), "cuda") or dtype
        forward, evaluation = ("bfloat16" if d == "auto" else d for d in (forward, evaluation))  # auto on an Ampere or later GPU
        methods = {run["method"] for (model, _), run in runs.items() if model == key}
        sparsegpt = any(method.startswith("sparsegpt") for method in methods)
        shape = paper_model_shape(m["id"])
        try:
            plan = plan_run(shape, weight_bytes=width[dtype], forward_bytes=width[forward], eval_bytes=width[evaluation],
                            nsamples=calibration["nsamples"], seqlen=calibration["seqlen"],
                            calib_batch_size=calibration["calib_batch_size"], sparsegpt=sparsegpt,
                            gpu_free=[gpu_bytes] * n_gpus, host_free=host_bytes, eval_windows=eval_windows,
                            eval_batch_size=settings.get("eval_batch_size", 4),
                            zero_shot_batch_size=zero_shot_batch if key in zero_shot_models else None)
        except OwlError as error:
            rows.append(f"| {m['label']} | {gib(shape.total_params * width[dtype])} {dtype} | refused: {error} | | | | | |")
            continue
        streamed = {"host": " (activations streamed from the host)", "device": ""}
        zs = "-" if plan.zero_shot is None else (
            f"{plan.zero_shot.gpus} GPU" + ("s" if plan.zero_shot.gpus > 1 else "")
            + (f" + {gib(plan.zero_shot.host_bytes)} offloaded to the host" if plan.zero_shot.host_bytes else ""))
        ev = "-" if plan.evaluation is None else (
            f"whole model, {gib(plan.evaluation.device_bytes)}" if plan.evaluation.mode == "whole"
            else f"block by block, {gib(plan.evaluation.device_bytes)}{streamed[plan.evaluation.storage]}")
        rows.append(
            f"| {m['label']} | {gib(plan.weights)} {dtype} "
            f"| {gib(plan.calibration.on_device(plan.calibration_storage == 'host'))}{streamed[plan.calibration_storage]} "
            f"| {gib(plan.pruning.on_device(plan.pruning_storage == 'host'))} ({'SparseGPT' if sparsegpt else 'Wanda'}){streamed[plan.pruning_storage]} "
            f"| {ev} | {zs} | {gib(plan.device_peak)} | {gib(plan.host_peak)} |")
    return rows


def main(argv=None) -> int:
    """``python -m owl.memory plan CONFIG [--gpu_gib G] [--gpus N] [--host_gib H]``."""
    import argparse
    from pathlib import Path

    import yaml

    from owl.grid import ConfigError, validate_config

    parser = argparse.ArgumentParser(prog="python -m owl.memory", description="what a workflow config's grid needs: GPU and host memory per model, GPUs for zero-shot")
    parser.add_argument("command", choices=["plan"])
    parser.add_argument("config")
    parser.add_argument("--gpu_gib", type=float, default=79.0, help="free memory per GPU, GiB (an 80 GB card has about 79 free)")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs on a node, for zero-shot")
    parser.add_argument("--host_gib", type=float, default=None, help="host memory, GiB (default: not checked; the need is printed)")
    parser.add_argument("--eval_windows", type=int, default=166,
                        help="WikiText-2 test windows (166 of 2048 tokens with LLaMA's tokenizer, 140 with OPT's)")
    args = parser.parse_args(argv)
    repo = Path(__file__).resolve().parents[1]
    try:
        cfg = validate_config(yaml.safe_load(Path(args.config).read_text()), yaml.safe_load((repo / "config" / "schema.yaml").read_text()))
        rows = plan_table(cfg, int(args.gpu_gib * 2**30), args.gpus, None if args.host_gib is None else int(args.host_gib * 2**30),
                          args.eval_windows)
    except (OSError, yaml.YAMLError, ConfigError, OwlError) as err:
        parser.exit(2, f"python -m owl.memory: error: {args.config}: {err}\n".replace("\n", " ").rstrip() + "\n")
    print(f"{args.config} on GPUs with {args.gpu_gib:g} GiB free ({args.gpus} per node), WikiText-2 in {args.eval_windows} windows:")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
