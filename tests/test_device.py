"""Device choices on CPU, with torch's CUDA queries replaced: default dtype, auto's bf16 by compute
capability of the requested GPU, cuda:N validation, what result.json records, outlier ratios."""

import os

import pytest
import torch

from owl import precision
from owl.cli import build_parser, main
from owl.errors import OwlError


def fake_gpus(monkeypatch, capabilities, names=None):
    """Pretend this machine has GPUs of the given compute capabilities."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(capabilities))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    index = lambda d: torch.device(d).index if isinstance(d, (str, torch.device)) and torch.device(d).index is not None else (d if isinstance(d, int) else 0)  # noqa: E731
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: capabilities[index(d if d is not None else 0)])
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # torch 2.13 counts emulation: must not matter
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: (names or ["GPU"] * len(capabilities))[index(d if d is not None else 0)])


def test_auto_is_bf16_only_on_native_bf16_gpus_and_asks_the_requested_one(monkeypatch):
    fake_gpus(monkeypatch, [(7, 0), (8, 0), (7, 5), (9, 0)])  # V100, A100, T4, H100
    assert precision.auto_dtype("cuda:0") == "float16"
    assert precision.auto_dtype("cuda:1") == "bfloat16"
    assert precision.auto_dtype("cuda:2") == "float16"
    assert precision.auto_dtype("cuda:3") == "bfloat16"
    assert precision.auto_dtype("cuda") == "float16"  # the current device, cuda:0 here


def test_default_dtype_is_float16_on_cuda_and_float32_on_cpu(monkeypatch):
    assert precision.default_dtype("cpu") == "float32"
    assert precision.default_dtype("cuda:1") == "float16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert precision.default_dtype(None) == "float32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert precision.default_dtype(None) == "float16"
    # The CLI resolves it once: the settings (and result.json) hold the concrete dtype.
    from owl.cli import _settings_from_args

    for device, dtype in (("cpu", "float32"), ("cuda", "float16")):
        assert _settings_from_args(build_parser().parse_args(["prune", "--device", device])).dtype == dtype
    assert _settings_from_args(build_parser().parse_args(["prune", "--device", "cuda", "--dtype", "float32"])).dtype == "float32"


def test_workflow_configs_pass_dtype_explicitly():
    """The CLI default changed on CUDA only; the workflow's runs never relied on it."""
    from pathlib import Path

    import yaml

    for path in Path(__file__).resolve().parents[1].glob("config/*.yaml"):
        cfg = yaml.safe_load(path.read_text())
        if "settings" in cfg:
            assert cfg["settings"].get("dtype"), path


def test_missing_gpu_index_is_refused_in_one_line_before_the_model_loads(monkeypatch, tiny_model_dirs, owl_env, capsys):
    fake_gpus(monkeypatch, [(9, 0)])
    assert precision.check_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(OwlError, match=r"^--device cuda:7 is not available: this machine has 1 GPU\(s\), cuda:0 to cuda:0$"):
        precision.check_device("cuda:7")
    loads = []
    monkeypatch.setattr("owl.pipeline.load_model", lambda *a, **k: loads.append(a))
    code = main(["prune", "--model", str(tiny_model_dirs["llama"]), "--device", "cuda:7", "--save", str(owl_env / "o"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not loads and err == ["owl: error: --device cuda:7 is not available: this machine has 1 GPU(s), cuda:0 to cuda:0"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(OwlError, match="no CUDA GPU"):
        precision.check_device("cuda")


def test_precision_record_holds_what_a_gpu_run_needs(monkeypatch):
    fake_gpus(monkeypatch, [(8, 0), (9, 0)], names=["NVIDIA A100", "NVIDIA H100 80GB HBM3"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d=None: 123456789)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(precision, "_nvidia_driver_version", lambda: "570.86.15")
    record = precision.precision_record("cuda:1")
    assert record["gpu"] == "NVIDIA H100 80GB HBM3" and record["device_index"] == 1 and record["gpu_count"] == 2
    assert record["gpu_capability"] == "9.0" and record["native_bf16"] is True
    assert record["cuda_version"] == "12.8" and record["driver_version"] == "570.86.15"
    assert record["peak_gpu_memory_bytes"] == 123456789
    assert {"tf32_matmul", "tf32_cudnn", "float32_matmul_precision"} <= set(record)
    assert "gpu" not in precision.precision_record("cpu")


def test_the_cpu_record_reads_the_first_processors_family_model_and_flags(monkeypatch):
    import builtins
    import io

    text = ("processor\t: 0\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f\n\n"
            "processor\t: 1\ncpu family\t: 6\nmodel\t\t: 143\nmodel name\t: AMD EPYC\nflags\t\t: avx2 amx_tile\n")
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda path, *a, **k: io.StringIO(text) if path == "/proc/cpuinfo" else real_open(path, *a, **k))
    precision.cpu_info.cache_clear()  # the record is read once per process
    try:
        assert precision.cpu_info() == {"model": "AMD EPYC", "family": "25", "model_number": "17", "flags": ["avx2", "avx512f"]}
    finally:
        precision.cpu_info.cache_clear()


def test_the_record_names_the_cpu_kernels_and_every_setting_that_pins_them(monkeypatch):
    for name in precision.CPU_KERNEL_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    monkeypatch.setenv("OWL_UNRELATED", "1")
    kernels = precision.precision_record("cpu")["cpu_kernels"]
    assert kernels == {"capability": torch.backends.cpu.get_cpu_capability(), "settings": {"MKL_CBWR": "AVX2"}}


def test_the_recorded_kernel_set_follows_a_pin_set_before_torch_starts():
    import subprocess
    import sys

    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.skip("needs an x86 CPU with AVX2 kernels")
    code = "from owl.precision import cpu_kernels; print(cpu_kernels()['capability'])"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "AVX2"


def test_timings_synchronise_the_device(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: calls.append(d))
    from owl.pipeline import elapsed

    assert elapsed(0.0, torch.device("cuda:1")) > 0 and calls == [torch.device("cuda:1")]
    elapsed(0.0, torch.device("cpu"))
    assert len(calls) == 1


def test_outlier_ratios_once_for_all_m_equal_one_m_at_a_time():
    from owl.allocation import outlier_ratio
    from owl.masks import wanda_scores
    from owl.models import find_decoder_blocks, find_linear_sublayers
    from owl.pruning import compute_statistics
    from owl.testing import tiny_model

    model = tiny_model("llama")
    stats = compute_statistics(model, torch.randint(0, 300, (4, 16), generator=torch.Generator().manual_seed(0)), "cpu", 2)
    layers = [find_linear_sublayers(b) for b in find_decoder_blocks(model)]
    by_m = stats.outlier_ratios_by_m(layers, [3.0, 5.0, 7.0, 10.0], device="cpu")
    for m, ratios in by_m.items():
        reference = [outlier_ratio([wanda_scores(ls[n].weight, rows[n]) for n in ls], m) for ls, rows in zip(layers, stats.scaler_rows)]
        assert ratios == reference == stats.outlier_ratios(layers, m)
    assert by_m[3.0] != by_m[10.0]


def test_pruning_counts_zeros_on_the_device_as_the_host_does():
    from owl.methods import LayerTarget, MethodOptions
    from owl.models import layer_zero_fractions, zero_fractions
    from owl.pruning import prune_model
    from owl.testing import tiny_model

    for method in ("magnitude", "wanda"):
        model = tiny_model("gemma3")
        counts = prune_model(model, method, [LayerTarget(0.5)] * 4, MethodOptions(), "cpu",
                             torch.randint(0, 300, (4, 16), generator=torch.Generator().manual_seed(0)), 2)
        assert zero_fractions(counts) == layer_zero_fractions(model)


def test_sparsegpt_on_overflowing_activations_is_refused_naming_the_block():
    """float16 overflow inside a block: SparseGPT's Hessian would fail its Cholesky with a raw
    RuntimeError; the statistic is refused first, in one line naming the block."""
    from owl.methods import LayerTarget, MethodOptions
    from owl.models import find_decoder_blocks
    from owl.pruning import prune_model
    from owl.testing import tiny_model

    model = tiny_model("llama")
    find_decoder_blocks(model)[1].input_layernorm.weight.data[:] = 1e25  # q/k/v's inputs: their squares overflow float32
    with pytest.raises(OwlError) as error:
        prune_model(model, "sparsegpt", [LayerTarget(0.5)] * 4, MethodOptions(), "cpu",
                    torch.randint(0, 300, (4, 16), generator=torch.Generator().manual_seed(0)), 2)
    message = str(error.value)
    assert "\n" not in message and "block 1" in message and "bfloat16 or float32" in message


def test_spread_model_dispatches_with_accelerate_and_keeps_the_outputs():
    """The zero-shot spread on a CPU (trivially: one device in the map); the forward is unchanged."""
    from owl.testing import tiny_model
    from owl.zeroshot import _model_devices, spread_model

    model = tiny_model("llama")
    ids = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        device_map = spread_model(model, {"cpu": 2**30})
        after = model(input_ids=ids).logits
    assert set(device_map.values()) == {"cpu"} and _model_devices(model) == {"cpu"}
    assert torch.equal(before, after)
