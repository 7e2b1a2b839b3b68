"""The pruning of a run, recorded before its evaluation starts, so a failed evaluation loses nothing.

``owl prune --save DIR`` writes, once the model is pruned and before any evaluation:

- ``DIR/pruned_weights.pt``: every decoder block's linear weight as a bit-packed mask of its zeros
  (1 bit per weight: 8.1 GB for LLaMA-65B) and, for SparseGPT, which also updates the weights it
  keeps, the kept values in the working dtype (about 30% of the weights at 70% sparsity);
- ``DIR/pruning.json``: status ``"pruned, evaluation pending"``, the settings that decide the
  pruning, everything the result will record about it (sparsities, outlier ratios, timings,
  statistics path) and a SHA-256 of the pruned weights.

Both are written atomically, the weights first, so a record never names a missing or half-written
file; ``result.json`` is still written only after evaluation (the workflow takes it as "done").
A later ``owl prune`` with the same pruning settings and ``--save`` (or ``owl evaluate DIR``)
loads the dense model, restores the pruned weights from the file (checked against the hash) and
evaluates without pruning again. Once ``result.json`` is written both files are removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from owl.errors import OwlError
from owl.models import find_decoder_blocks, find_linear_sublayers
from owl.results import write_json_atomic

log = logging.getLogger(__name__)

PRUNING_RECORD = "pruning.json"
PRUNED_WEIGHTS = "pruned_weights.pt"
PENDING = "pruned, evaluation pending"
# Settings that change what is evaluated or where it is written, never the pruned weights.
EVALUATION_FIELDS = frozenset({
    "save", "save_model", "cache_dir", "stats_path", "eval_limit", "eval_dataset", "eval_dtype", "eval_batch_size",
    "eval_zero_shot", "tasks", "zero_shot_limit", "zero_shot_batch_size",
})


def pruning_settings(settings: dict) -> dict:
    """The settings that decide the pruned weights (a record is reused only on equal ones)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items() if k not in EVALUATION_FIELDS}


def _pruned_layers(model: nn.Module):
    for index, block in enumerate(find_decoder_blocks(model)):
        for name, layer in find_linear_sublayers(block).items():
            yield f"{index}.{name}", layer.weight


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of every block's linear weights (their bytes, in block and module order)."""
    digest = hashlib.sha256()
    for _, weight in _pruned_layers(model):
        digest.update(weight.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """A bool tensor as uint8 bits (8 per byte, numpy's bit order)."""
    return torch.from_numpy(np.packbits(mask.detach().cpu().reshape(-1).numpy()))


def unpack_mask(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    count = int(np.prod(shape))
    return torch.from_numpy(np.unpackbits(packed.numpy(), count=count).astype(bool)).reshape(shape)


def save_pruning(run_dir: str | Path, model: nn.Module, settings: dict, partial_result: dict, keep_values: bool) -> Path:
    """Write the pruned weights, then the record (both atomically); the record's path.
    ``keep_values``: store the kept weights too (the method changed them: SparseGPT)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    layers = {}
    for name, weight in _pruned_layers(model):
        zeros = weight.detach() == 0
        layers[name] = {"shape": tuple(weight.shape), "zeros": pack_mask(zeros),
                        "kept": weight.detach()[~zeros].cpu().clone() if keep_values else None}
    tmp = run_dir / f".{PRUNED_WEIGHTS}.tmp"
    torch.save({"layers": layers}, tmp)
    os.replace(tmp, run_dir / PRUNED_WEIGHTS)
    record = {"status": PENDING, "settings": settings, "pruning_settings": pruning_settings(settings), "weights_file": PRUNED_WEIGHTS,
              "weights_sha256": weights_digest(model), "result": partial_result}
    return write_json_atomic(run_dir / PRUNING_RECORD, record)


def find_pruning(run_dir: str | Path | None, settings: dict) -> dict | None:
    """The record in ``run_dir`` if it holds a pruning with these settings, else None (logged)."""
    if run_dir is None:
        return None
    path = Path(run_dir) / PRUNING_RECORD
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        log.warning("ignoring %s: not readable (%s)", path, error)
        return None
    if record.get("pruning_settings") != json.loads(json.dumps(pruning_settings(settings))):
        log.warning("ignoring %s: recorded for other pruning settings; pruning again", path)
        return None
    if not (Path(run_dir) / record.get("weights_file", PRUNED_WEIGHTS)).exists():
        log.warning("ignoring %s: its weights file is missing; pruning again", path)
        return None
    return record


def restore_pruning(run_dir: str | Path, model: nn.Module, record: dict) -> None:
    """Set the dense ``model``'s block weights to the recorded pruned ones; one-line OwlError when
    the result differs from what was recorded (another checkpoint or dtype than the run's)."""
    path = Path(run_dir) / record.get("weights_file", PRUNED_WEIGHTS)
    stored = torch.load(path)["layers"]
    with torch.no_grad():
        for name, weight in _pruned_layers(model):
            entry = stored.get(name)
            if entry is None or tuple(entry["shape"]) != tuple(weight.shape):
                raise OwlError(f"{path} does not match the model: layer {name} is missing or of another shape; delete it to prune again")
            zeros = unpack_mask(entry["zeros"], tuple(weight.shape)).to(weight.device)
            if entry["kept"] is not None:
                weight[~zeros] = entry["kept"].to(device=weight.device, dtype=weight.dtype)
            weight[zeros] = 0
    if weights_digest(model) != record["weights_sha256"]:
        raise OwlError(f"the weights restored from {path} differ from the recorded pruning (another checkpoint or dtype?); "
                       "delete it to prune again")


def clear_pruning(run_dir: str | Path) -> None:
    """Remove the record and its weights (the result is written: nothing is pending)."""
    for name in (PRUNING_RECORD, PRUNED_WEIGHTS):
        (Path(run_dir) / name).unlink(missing_ok=True)
