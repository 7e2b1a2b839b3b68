"""Zero-shot accuracy of an in-memory causal LM through lm-evaluation-harness.

The paper (like Wanda and SparseGPT) reports 0-shot accuracy on seven lm-eval tasks and their mean.
This module evaluates a model object that lives in memory (typically just pruned) with lm-eval's
own task definitions -- prompts, answer choices, splits and metrics -- so the numbers are
comparable with the papers' tables; nothing is written to disk except lm-eval's dataset cache.

Data: with ``data_dir`` (the kit passes ``OWL_DATA_DIR``) a task whose evaluation split is
mirrored at ``<data_dir>/zeroshot/<task>/<split>.jsonl`` is read from that file: a small YAML in a
temporary directory ``include:``s lm-eval's own task file and overrides only where the rows come
from (``dataset_path: json``, ``data_files``, the split names). Other tasks come from the Hugging
Face Hub as lm-eval normally loads them; when the Hub cannot be reached the load runs in offline
mode, so it fails at once (or uses the local datasets cache) instead of retrying for minutes.
A task whose rows cannot be had lands in ``missing`` with a one-line reason; it is never silently
dropped, and ``mean`` is over ``tasks_in_mean`` only. See docs/zeroshot.md.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import tempfile
import threading
import urllib.error
import urllib.request
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Sequence

from owl.errors import OwlError
from owl.uncertainty import mean_stderr

logger = logging.getLogger("owl.zeroshot")

#: The seven tasks of the Wanda / SparseGPT / OWL zero-shot tables, by their lm-eval names.
DEFAULT_TASKS: tuple[str, ...] = (
    "boolq",
    "rte",
    "hellaswag",
    "winogrande",
    "arc_easy",
    "arc_challenge",
    "openbookqa",
)

#: The lm-eval metric the papers' tables report per task: ``acc`` everywhere. The Wanda author states
#: that the paper reports lm-eval's ``acc``, not ``acc_norm`` (locuslab/wanda issue #31: LLaMA-2-7B
#: HellaSwag 57.17 is acc, acc_norm would be 76.0); OWL compares with Wanda under the same lm-eval
#: protocol and its code picks no other metric. ``acc_norm`` is still reported, where lm-eval
#: computes it, under ``result["acc_norm"]``. See docs/zeroshot.md.
PAPER_METRIC: dict[str, str] = {task: "acc" for task in DEFAULT_TASKS}

#: Whether the prompts start with the tokenizer's BOS token. Wanda called lm-eval 0.3 with
#: ``add_special_tokens=False`` (lm-eval 0.3's setting for causal models) and OWL's scoring script
#: tokenises with ``add_special_tokens=False``, so the papers' prompts carry no BOS; lm-eval 0.4's
#: default (None) would let a LLaMA tokenizer add one.
PAPER_ADD_BOS_TOKEN: bool = False

_OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_TRUE = {"1", "ON", "YES", "TRUE"}
_HUB_PROBE_TIMEOUT_S = 3.0


# ---- task loading ------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _default_task_manager():
    """lm-eval's TaskManager over its built-in tasks (indexing takes a few seconds: built once)."""
    from lm_eval.tasks import TaskManager

    return TaskManager()


def _lm_eval_version() -> str:
    try:
        from importlib.metadata import version

        return version("lm_eval")
    except Exception:  # pragma: no cover - metadata missing in odd installs
        return "unknown"


def _task_entry(name: str):
    entry = _default_task_manager().task_index.get(name)
    if entry is None or entry.yaml_path is None or not isinstance(entry.cfg, dict):
        return None
    return entry


def _eval_split(cfg: dict[str, Any]) -> str | None:
    """The split lm-eval evaluates on: the test split if the task has one, else validation."""
    return cfg.get("test_split") or cfg.get("validation_split")


def mirror_file(task: str, data_dir: str | os.PathLike | None) -> Path | None:
    """``<data_dir>/zeroshot/<task>/<split>.jsonl`` for the split lm-eval evaluates ``task`` on."""
    if data_dir is None:
        return None
    entry = _task_entry(task)
    if entry is None:
        return None
    split = _eval_split(entry.cfg)
    if split is None:
        return None
    return Path(data_dir).expanduser().resolve() / "zeroshot" / task / f"{split}.jsonl"


def _override_yaml(task: str, path: Path) -> dict[str, Any]:
    """lm-eval's own config for ``task`` (by include), reading its evaluation split from ``path``."""
    entry = _task_entry(task)
    split = _eval_split(entry.cfg)
    cfg: dict[str, Any] = {
        "include": str(Path(entry.yaml_path).resolve()),
        "task": task,
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {split: str(path)}},
        # Only the evaluated split exists in the mirror; 0-shot needs no other.
        "training_split": None,
        "validation_split": split if split == entry.cfg.get("validation_split") else None,
        "test_split": split if split == entry.cfg.get("test_split") else None,
    }
    if entry.cfg.get("fewshot_split") not in (None, split):
        cfg["fewshot_split"] = None
    return cfg


@contextlib.contextmanager
def _hf_offline(enabled: bool = True) -> Iterator[None]:
    """Hugging Face offline mode for the duration of the block, then the previous state back.

    ``datasets`` and ``huggingface_hub`` read the offline variables when they are imported, so the
    module constants are patched as well as the environment.
    """
    if not enabled:
        yield
        return
    saved_env = {k: os.environ.get(k) for k in _OFFLINE_ENV}
    patched: list[tuple[Any, str, Any]] = []
    try:
        for k in _OFFLINE_ENV:
            os.environ[k] = "1"
        with contextlib.suppress(ImportError):
            import huggingface_hub.constants as hub_constants

            patched.append((hub_constants, "HF_HUB_OFFLINE", hub_constants.HF_HUB_OFFLINE))
        with contextlib.suppress(ImportError):
            import datasets.config as ds_config

            for attr in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
                if hasattr(ds_config, attr):
                    patched.append((ds_config, attr, getattr(ds_config, attr)))
        for module, attr, _ in patched:
            setattr(module, attr, True)
        yield
    finally:
        for module, attr, old in reversed(patched):
            setattr(module, attr, old)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _offline_requested() -> bool:
    if any(os.environ.get(k, "").upper() in _TRUE for k in (*_OFFLINE_ENV, "TRANSFORMERS_OFFLINE")):
        return True
    with contextlib.suppress(ImportError):
        import huggingface_hub.constants as hub_constants

        if hub_constants.HF_HUB_OFFLINE:
            return True
    return False


def _hub_status() -> tuple[bool, str]:
    """(reachable, why not): a single HEAD request to the Hub endpoint, bounded in time."""
    if _offline_requested():
        return False, "Hugging Face offline mode is set"
    try:
        from huggingface_hub.constants import ENDPOINT as endpoint
    except ImportError:  # pragma: no cover
        endpoint = "https://huggingface.co"
    outcome: dict[str, Any] = {}

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=_HUB_PROBE_TIMEOUT_S)
            outcome["ok"] = True
        except urllib.error.HTTPError:  # an HTTP answer at all means the Hub is reachable
            outcome["ok"] = True
        except Exception as err:  # noqa: BLE001 - any failure means unreachable
            outcome["err"] = _one_line(err)

    thread = threading.Thread(target=probe, daemon=True, name="owl-hub-probe")
    thread.start()
    thread.join(_HUB_PROBE_TIMEOUT_S + 1.0)
    if outcome.get("ok"):
        return True, ""
    return False, f"the Hugging Face Hub ({endpoint}) is unreachable: {outcome.get('err', 'timed out')}"


def _one_line(err: BaseException | str, limit: int = 240) -> str:
    text = str(err).strip().splitlines()
    msg = text[0] if text else ""
    if isinstance(err, BaseException):
        msg = f"{type(err).__name__}: {msg}" if msg else type(err).__name__
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def _validate_tasks(tasks: str | Sequence[str]) -> list[str]:
    if isinstance(tasks, str):
        tasks = [t for t in tasks.split(",")]
    names: list[str] = []
    for t in tasks:
        name = str(t).strip()
        if name not in DEFAULT_TASKS:
            raise OwlError(f"unknown zero-shot task {name!r}; allowed: {', '.join(DEFAULT_TASKS)}")
        if name not in names:
            names.append(name)
    if not names:
        raise OwlError(f"no zero-shot task given; allowed: {', '.join(DEFAULT_TASKS)}")
    return names


def _validate_limit(limit: Any) -> int | float | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, float)):
        raise OwlError(f"zero-shot limit must be a positive integer (examples per task) or None, got {limit!r}")
    if isinstance(limit, float) and not limit.is_integer():
        if 0.0 < limit < 1.0:
            return limit  # lm-eval reads a float below 1 as a fraction of each task
        raise OwlError(f"zero-shot limit must be a positive integer or a fraction in (0, 1), got {limit!r}")
    if int(limit) < 1:
        raise OwlError(f"zero-shot limit must be a positive integer (examples per task) or None, got {limit!r}")
    return int(limit)


def load_tasks(
    tasks: str | Sequence[str] = DEFAULT_TASKS,
    data_dir: str | os.PathLike | None = None,
) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """lm-eval Task objects for ``tasks``, rows from the local mirror where there is one.

    Returns ``(loaded, missing, source)``: ``{task: lm_eval Task}``, ``{task: one-line reason}``
    and ``{task: "local:<file>" | "hub:<dataset path>"}``. Unknown names raise OwlError.
    """
    names = _validate_tasks(tasks)
    loaded: dict[str, Any] = {}
    missing: dict[str, str] = {}
    source: dict[str, str] = {}
    local: dict[str, Path] = {}
    remote: list[str] = []
    no_mirror: dict[str, str] = {}
    for name in names:
        if _task_entry(name) is None:
            missing[name] = f"lm-eval {_lm_eval_version()} has no task named {name!r}"
            continue
        path = mirror_file(name, data_dir)
        if path is not None and path.is_file():
            local[name] = path
        else:
            if path is not None:
                no_mirror[name] = f"no local mirror {path}"
            remote.append(name)

    if local:
        from lm_eval.tasks import TaskManager
        import yaml

        with tempfile.TemporaryDirectory(prefix="owl-zeroshot-") as tmp:
            for name, path in local.items():
                (Path(tmp) / f"{name}.yaml").write_text(yaml.safe_dump(_override_yaml(name, path), sort_keys=False))
            manager = TaskManager(include_path=tmp, include_defaults=False)
            for name, path in local.items():
                try:
                    with _hf_offline():
                        loaded[name] = manager.load([name])["tasks"][name]
                    source[name] = f"local:{path}"
                except Exception as err:  # noqa: BLE001 - reported, never dropped
                    missing[name] = f"local mirror {path} could not be read: {_one_line(err)}"

    if remote:
        reachable, why = _hub_status()
        manager = _default_task_manager()
        for name in remote:
            prefix = f"{no_mirror[name]}; " if name in no_mirror else ""
            try:
                with _hf_offline(not reachable):
                    loaded[name] = manager.load([name])["tasks"][name]
                source[name] = f"hub:{_task_entry(name).cfg.get('dataset_path')}" + (
                    " (offline cache)" if not reachable else ""
                )
            except Exception as err:  # noqa: BLE001 - reported, never dropped
                reason = why if not reachable else "loading from the Hub failed"
                missing[name] = f"{prefix}{reason} ({_one_line(err, 160)})"

    for name, reason in missing.items():
        logger.warning("zero-shot task %s is missing: %s", name, reason)
    # keep the caller's order
    loaded = {n: loaded[n] for n in names if n in loaded}
    missing = {n: missing[n] for n in names if n in missing}
    return loaded, missing, source


# ---- evaluation --------------------------------------------------------------------------------


def _model_devices(model) -> set[str]:
    device_map = getattr(model, "hf_device_map", None)
    if isinstance(device_map, dict) and device_map:
        return {_normalise_device(d) for d in device_map.values()}
    return {_normalise_device(p.device) for p in model.parameters()}


def _normalise_device(device) -> str:
    import torch

    try:
        d = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    except (RuntimeError, TypeError):  # e.g. "disk" in an accelerate device map
        return str(device)
    if d.type != "cpu" and d.index is None:
        d = torch.device(d.type, 0)
    return str(d)


def spread_model(model, max_memory: dict) -> dict:
    """Spread ``model`` over GPUs (and the host) with accelerate, whole blocks per device, within
    ``max_memory`` (``{gpu index: bytes, "cpu": bytes}``, owl.memory.plan_zero_shot); the device map.
    lm-eval then evaluates it where it is; accelerate moves each batch between the devices."""
    from accelerate import dispatch_model, infer_auto_device_map

    device_map = infer_auto_device_map(model, max_memory=max_memory,
                                       no_split_module_classes=list(getattr(model, "_no_split_modules", None) or []))
    logger.info("zero-shot: the model spread over %s", sorted({str(d) for d in device_map.values()}))
    dispatch_model(model, device_map)
    return device_map


def _first_param(model):
    for p in model.parameters():
        return p
    raise OwlError("the model has no parameters; cannot evaluate it zero-shot")


def scored_start_bounds(requests: Sequence[tuple[Any, Sequence[int], Sequence[int]]], max_length: int) -> list[int]:
    """For every input length L, a lower bound on the first scored position of any row of length >= L.

    ``requests`` are lm-eval's ``(strings, context_tokens, continuation_tokens)``. lm-eval feeds a
    causal model ``(context + continuation)[-(max_length + 1):][:-1]`` and scores the last
    ``len(continuation)`` positions, so a request of input length ``n`` needs logits from position
    ``n - len(continuation)`` on. ``bounds[L]`` is the smallest such start over requests with input
    length >= L (the suffix minimum), so it stays a valid bound when L underestimates a row's length.
    """
    if not requests:
        return []
    longest = 0
    start_at: dict[int, int] = {}
    for _, context, continuation in requests:
        length = min(len(context) + len(continuation), max_length + 1) - 1
        start = length - len(continuation)
        start_at[length] = min(start, start_at.get(length, start))
        longest = max(longest, length)
    bounds = [longest] * (longest + 1)
    suffix_min = longest
    for length in range(longest, -1, -1):
        suffix_min = min(suffix_min, start_at.get(length, suffix_min))
        bounds[length] = suffix_min
    return bounds


def logits_to_keep(input_ids, bounds: Sequence[int], pad_id: int = 0) -> int:
    """How many trailing positions of a right-padded batch lm-eval will score (at least 1).

    A row's length is taken up to its last token that is not ``pad_id`` (lm-eval right-pads causal
    batches with id 0); a real trailing ``pad_id`` token only shortens that estimate, which lowers
    the bound and keeps more logits, never too few.
    """
    import torch

    width = int(input_ids.shape[-1])
    positions = torch.arange(1, width + 1, device=input_ids.device)
    lengths = ((input_ids != pad_id) * positions).amax(dim=-1).tolist()
    last = len(bounds) - 1
    first_scored = min(bounds[min(int(n), last)] for n in lengths)
    return max(1, min(width, width - first_scored))


def _scored_logits_lm_class(base):
    """An lm-eval HFLM that computes the LM head and log-softmax only where lm-eval scores.

    lm-eval takes the log-softmax over the whole vocabulary at every position of every padded row,
    yet scores only the continuation tokens (one token for BoolQ's long passages). Returning the
    last ``k`` positions is allowed by lm-eval: it locates each continuation from the end of the
    returned logits (``inplen + (logits.shape[0] - padding_len_inp)``). The scores are unchanged
    (tests/test_zeroshot.py compares them with plain HFLM); see docs/benchmarks.md for the time.
    """

    class ScoredLogitsLM(base):
        _start_bounds: list[int] | None = None

        def _loglikelihood_tokens(self, requests, *args, **kwargs):
            self._start_bounds = scored_start_bounds(requests, self.max_length) if self.backend == "causal" else None
            try:
                return super()._loglikelihood_tokens(requests, *args, **kwargs)
            finally:
                self._start_bounds = None

        def _model_call(self, inps, attn_mask=None, labels=None):
            if not self._start_bounds or attn_mask is not None or labels is not None:
                return super()._model_call(inps, attn_mask=attn_mask, labels=labels)
            import torch

            keep = logits_to_keep(inps, self._start_bounds)
            with torch.no_grad(), torch.autocast(
                device_type=self.device.type,
                dtype=self.mixed_precision_dtype,
                enabled=self.mixed_precision_dtype is not None,
            ):
                return self.model(inps, logits_to_keep=keep).logits

    return ScoredLogitsLM


def _accepts_logits_to_keep(model) -> bool:
    import inspect

    try:
        return "logits_to_keep" in inspect.signature(type(model).forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - exotic forward
        return False


def evaluate_zero_shot(
    model,
    tokenizer,
    tasks: str | Sequence[str] = DEFAULT_TASKS,
    limit: int | float | None = None,
    batch_size: int | str = 8,
    device: str | None = None,
    data_dir: str | os.PathLike | None = None,
    *,
    add_bos_token: bool | None = PAPER_ADD_BOS_TOKEN,
    scored_logits_only: bool = True,
) -> dict[str, Any]:
    """0-shot accuracy of ``model`` (a transformers causal LM in memory) on lm-eval tasks.

    Args:
        model: a ``transformers.PreTrainedModel`` (e.g. just pruned); it is evaluated where it is,
            or moved to ``device`` for the evaluation and moved back afterwards.
        tokenizer: its tokenizer (a private copy is handed to lm-eval, which may add a pad token).
        tasks: lm-eval task names, a subset of ``DEFAULT_TASKS`` (a comma-separated string works).
        limit: examples per task (the first ``limit`` rows of each evaluation split); None = all.
        batch_size: lm-eval batch size (an int, or "auto").
        device: where to run; None = where the model already is.
        data_dir: the kit's data folder; ``<data_dir>/zeroshot/<task>/<split>.jsonl`` is used
            instead of the Hub when it exists.
        add_bos_token: passed to lm-eval's HFLM. False (default) = no BOS, as in the papers;
            None = the tokenizer's own default (lm-eval 0.4's behaviour); True = always.
        scored_logits_only: compute the LM head and log-softmax only at the positions lm-eval
            scores (same scores, less time) where the model takes ``logits_to_keep``; False =
            lm-eval's plain HFLM (for comparison).

    Returns:
        ``{"accuracy": {task: acc}, "mean": float | None, "tasks_in_mean": [...],
        "missing": {task: reason}, "metric": {task: "acc" | "acc_norm"},
        "n_examples": {task: int}, "limit": limit, "acc_norm": {task: float},
        "stderr": {task: float}, "mean_stderr": float | None, "source": {task: str},
        "add_bos_token": bool | None, "lm_eval_version": str}``.
        Accuracies are fractions in [0, 1] in lm-eval's ``PAPER_METRIC`` for the task; ``stderr`` is
        lm-eval's standard error of each, ``mean_stderr`` that of the mean, ``sqrt(sum se^2) / k``
        over its k tasks (taken as independent; None unless every task in the mean has one).
    """
    names = _validate_tasks(tasks)
    limit = _validate_limit(limit)
    param = _first_param(model)
    logger.info(
        "zero-shot evaluation: model dtype %s on %s, tasks %s, limit %s, batch size %s",
        param.dtype,
        ", ".join(sorted(_model_devices(model))),
        ",".join(names),
        limit,
        batch_size,
    )

    loaded, missing, source = load_tasks(names, data_dir)
    result: dict[str, Any] = {
        "accuracy": {},
        "mean": None,
        "tasks_in_mean": [],
        "missing": dict(missing),
        "metric": {n: PAPER_METRIC[n] for n in names},
        "n_examples": {},
        "limit": limit,
        "acc_norm": {},
        "stderr": {},
        "mean_stderr": None,
        "source": {n: source[n] for n in names if n in source},
        "add_bos_token": add_bos_token,
        "lm_eval_version": _lm_eval_version(),
    }
    if not loaded:
        logger.warning("zero-shot evaluation: no task could be loaded; nothing evaluated")
        return result

    import torch
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    # Move the model to `device` for the evaluation if asked (not a model dispatched over devices).
    original_device = None
    if device is not None:
        devices = _model_devices(model)
        target = _normalise_device(device)
        if len(devices) > 1:
            logger.warning("model is spread over %s; evaluating it in place, not on %s", sorted(devices), device)
        elif devices != {target}:
            logger.info("moving the model to %s for the zero-shot evaluation (and back afterwards)", target)
            original_device = param.device
            model.to(target)
    was_training = model.training
    try:
        tok = copy.deepcopy(tokenizer)
    except Exception:  # noqa: BLE001 - fall back to the caller's tokenizer
        tok = tokenizer
    # No network is needed unless a task came from the Hub online (lm-eval may still ask the Hub
    # about the model; offline mode makes that fail at once instead of retrying).
    needs_hub = any(s.startswith("hub:") and not s.endswith("(offline cache)") for s in result["source"].values())
    try:
        with _hf_offline(not needs_hub), torch.no_grad():
            lm_class = _scored_logits_lm_class(HFLM) if scored_logits_only and _accepts_logits_to_keep(model) else HFLM
            lm = lm_class(pretrained=model, tokenizer=tok, batch_size=batch_size, add_bos_token=add_bos_token)
            out = simple_evaluate(
                model=lm,
                tasks=list(loaded.values()),
                num_fewshot=0,
                limit=limit,
                task_manager=_default_task_manager(),
                log_samples=False,
                bootstrap_iters=1000,
                # keep the caller's global RNG state (0-shot multiple choice draws nothing)
                random_seed=None,
                numpy_random_seed=None,
                torch_random_seed=None,
            )
    finally:
        model.train(was_training)
        if original_device is not None:
            model.to(original_device)
    if out is None:  # not rank 0 (never the case in one process)
        return result

    for name in names:
        if name not in loaded:
            continue
        row = out["results"].get(name)
        metric = PAPER_METRIC[name]
        if row is None or f"{metric},none" not in row:
            result["missing"][name] = f"lm-eval returned no {metric} for {name}"
            continue
        result["accuracy"][name] = float(row[f"{metric},none"])
        if "acc_norm,none" in row:
            result["acc_norm"][name] = float(row["acc_norm,none"])
        stderr = row.get(f"{metric}_stderr,none")
        if isinstance(stderr, (int, float)):
            result["stderr"][name] = float(stderr)
        n = out.get("n-samples", {}).get(name, {})
        result["n_examples"][name] = int(n.get("effective", n.get("original", 0)))

    result["tasks_in_mean"] = [n for n in names if n in result["accuracy"]]
    if result["tasks_in_mean"]:
        accs = [result["accuracy"][n] for n in result["tasks_in_mean"]]
        result["mean"] = sum(accs) / len(accs)
        if all(n in result["stderr"] for n in result["tasks_in_mean"]):
            result["mean_stderr"] = mean_stderr([result["stderr"][n] for n in result["tasks_in_mean"]])
    logger.info(
        "zero-shot accuracy: %s; mean %s over %d task(s)%s",
        ", ".join(f"{n} {a:.4f}" for n, a in result["accuracy"].items()),
        "n/a" if result["mean"] is None else f"{result['mean']:.4f}",
        len(result["tasks_in_mean"]),
        f"; missing: {', '.join(result['missing'])}" if result["missing"] else "",
    )
    return result
