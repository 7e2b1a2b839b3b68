"""The memory check before calibration: the estimate, where the activations go, the refusal."""

import pytest
import torch

from owl.cli import main
from owl.errors import OwlError
from owl.memory import Footprint, calibration_footprint, footprint_of, plan_storage
from owl.models import find_decoder_blocks, find_linear_sublayers
from owl.pruning import compute_statistics
from owl.statistics import HessianAccumulator, RowNormAccumulator
from owl.testing import tiny_model

GiB = 2**30


def test_issue_example_activations_alone_are_24_gb():
    """owl prune --nsamples 5000 --seqlen 2048 on SmolLM2-135M (hidden 576) in float32."""
    fp = calibration_footprint(5000, 2048, 8, 576, 4, widest_layer=1536, attention_heads=9, block_bytes=0, statistic_bytes=0)
    assert fp.activations == 5000 * 2048 * 576 * 4 and fp.activations / 1e9 == pytest.approx(23.6, abs=0.1)
    assert fp.batch == 8 * 2048 * 576 * 4
    assert fp.intermediate == 8 * 9 * 2048 * 2048 * 4  # attention scores beat the MLP width at this length
    short = calibration_footprint(5000, 16, 8, 576, 4, widest_layer=1536, attention_heads=9, block_bytes=0, statistic_bytes=0)
    assert short.intermediate == 8 * 16 * 1536 * 4


def test_batch_is_capped_by_nsamples_and_dtype_halves_everything():
    fp32 = calibration_footprint(2, 100, 8, 10, 4, widest_layer=20, attention_heads=1, block_bytes=0, statistic_bytes=0)
    bf16 = calibration_footprint(2, 100, 8, 10, 2, widest_layer=20, attention_heads=1, block_bytes=0, statistic_bytes=0)
    assert fp32.batch == fp32.activations == 2 * 100 * 10 * 4
    assert 2 * bf16.activations == fp32.activations and 2 * bf16.intermediate == fp32.intermediate


def _fp(activations, batch=1 * GiB // 100, block=GiB // 10):
    return Footprint(activations, batch, intermediate=GiB // 100, block=block, statistics=0, description="d")


def test_cpu_fits_or_refuses_in_one_line():
    assert plan_storage(_fp(10 * GiB), "cpu", None, 12 * GiB) == "device"
    assert plan_storage(_fp(10 * GiB), "cpu", None, None) == "device"  # unknown: not checked
    with pytest.raises(OwlError) as err:
        plan_storage(_fp(24 * GiB), "cpu", None, 20 * GiB)
    message = str(err.value)
    assert "\n" not in message and "24.0" in message and "20.00 GiB" in message
    assert "--nsamples" in message and "--seqlen" in message and "--calib_batch_size" in message


def test_gpu_short_host_roomy_streams_from_host():
    assert plan_storage(_fp(10 * GiB), "cuda:0", 16 * GiB, 64 * GiB) == "device"
    assert plan_storage(_fp(10 * GiB), "cuda:0", 4 * GiB, 64 * GiB) == "host"
    with pytest.raises(OwlError, match="host memory"):
        plan_storage(_fp(100 * GiB), "cuda:0", 4 * GiB, 64 * GiB)
    with pytest.raises(OwlError, match="even with the activations streamed.*--calib_batch_size"):
        plan_storage(_fp(10 * GiB, block=8 * GiB), "cuda:0", 4 * GiB, 64 * GiB)


def test_footprint_of_tiny_model_counts_blocks_and_hessians():
    model = tiny_model("llama")
    blocks = find_decoder_blocks(model)
    layers = [find_linear_sublayers(b) for b in blocks]
    fp = footprint_of(model, blocks, layers, HessianAccumulator.nbytes, 16, 32, 4, torch.float32)
    assert fp.activations == 16 * 32 * 64 * 4
    block = 4 * (4 * 64 * 64 + 3 * 64 * 128 + 2 * 64)  # q k v o, gate up down, two norms
    outside = 4 * (2 * 320 * 64 + 64)  # embeddings, head, final norm: on the device while inputs are captured
    assert fp.block == max(block, outside) == block
    big_vocab = tiny_model("llama", vocab_size=1000)
    big = footprint_of(big_vocab, find_decoder_blocks(big_vocab), [find_linear_sublayers(b) for b in find_decoder_blocks(big_vocab)],
                       HessianAccumulator.nbytes, 16, 32, 4, torch.float32)
    assert big.block == 4 * (2 * 1000 * 64 + 64)
    assert fp.statistics == 4 * (4 * 64 * 64 + 2 * 64 * 64 + 128 * 128)  # q k v o gate up: 64 inputs; down: 128
    assert footprint_of(model, blocks, layers, RowNormAccumulator.nbytes, 16, 32, 4, torch.float32).statistics == 4 * (6 * 64 + 128)


def test_host_storage_gives_the_same_statistics():
    model = tiny_model("llama")
    windows = torch.randint(0, 300, (4, 24), generator=torch.Generator().manual_seed(0))
    plain = compute_statistics(model, windows, "cpu", batch_size=3)
    streamed = compute_statistics(model, windows, "cpu", batch_size=3, storage="cpu")
    for a, b in zip(plain.scaler_rows, streamed.scaler_rows):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_oversized_calibration_is_refused_before_any_work(tiny_model_dirs, owl_env, monkeypatch, capsys):
    monkeypatch.setattr("owl.memory.available_bytes", lambda device: 64 * 2**20)  # a 64 MiB machine
    sampled = []
    monkeypatch.setattr("owl.pipeline.calibration_windows", lambda *a, **k: sampled.append(a))
    out = owl_env / "out"
    code = main(["prune", "--model", str(tiny_model_dirs["llama"]), "--prune_method", "wanda", "--nsamples", "5000",
                 "--seqlen", "64", "--device", "cpu", "--save", str(out), "-q"])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]  # not progress bars
    assert code == 2 and not (out / "result.json").exists() and not sampled
    assert len(errors) == 1 and errors[0].startswith("owl: error: calibration needs about")
    err = errors[0]
    assert "5000 windows x 64 tokens x 64 features float32" in err and "--nsamples" in err


def test_freed_host_memory_is_reused_where_glibc_allows_it():
    import platform

    from owl.memory import reuse_freed_host_memory

    applied = reuse_freed_host_memory()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert applied
    assert reuse_freed_host_memory() == applied  # idempotent
