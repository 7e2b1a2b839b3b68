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


# ---- planning the paper's grid (pure functions, the paper's shapes on the meta device) ---------------
from owl.memory import (  # noqa: E402
    ModelShape, pass_footprint, paper_model_shape, plan_evaluation, plan_run, plan_zero_shot, shape_of,
    whole_model_evaluation_bytes,
)

PAPER_RUN = dict(weight_bytes=2, forward_bytes=2, eval_bytes=2, nsamples=128, seqlen=2048, calib_batch_size=8,
                 host_free=None, eval_windows=166)


def test_paper_shapes_have_the_published_parameter_counts():
    counts = {m: paper_model_shape(m).total_params for m in
              ("huggyllama/llama-7b", "huggyllama/llama-13b", "huggyllama/llama-30b", "huggyllama/llama-65b", "facebook/opt-6.7b")}
    assert counts["huggyllama/llama-7b"] == 6_738_415_616
    assert counts["huggyllama/llama-13b"] == 13_015_864_320
    assert counts["huggyllama/llama-30b"] == 32_528_943_616
    assert counts["huggyllama/llama-65b"] == 65_285_660_672
    assert 6.6e9 < counts["facebook/opt-6.7b"] < 6.9e9
    assert round(counts["huggyllama/llama-65b"] * 2 / GiB, 1) == 121.6  # the issue's figure for float16


def test_llama_65b_float16_on_one_80gb_gpu_is_pruned_and_evaluated_block_by_block():
    shape = paper_model_shape("huggyllama/llama-65b")
    for sparsegpt in (False, True):
        plan = plan_run(shape, sparsegpt=sparsegpt, gpu_free=[79 * GiB], **PAPER_RUN)
        assert plan.calibration_storage == plan.pruning_storage == "device"
        assert plan.evaluation.mode == "blocks" and plan.evaluation.storage == "device"
        assert plan.device_peak < 79 * GiB < plan.weights
    # Smaller cards: the windows' hidden states go to the host, still block by block.
    plan = plan_run(shape, sparsegpt=False, gpu_free=[8 * GiB], **PAPER_RUN)
    assert plan.calibration_storage == "host" and plan.evaluation.mode == "blocks" and plan.evaluation.storage == "host"
    # Refused only where even one block (1.51 GiB in float16) with one batch does not fit.
    block = shape.block_params * 2
    assert round(block / GiB, 2) == 1.51
    with pytest.raises(OwlError) as error:
        plan_run(shape, sparsegpt=False, gpu_free=[block], **PAPER_RUN)
    assert "\n" not in str(error.value) and "even with the activations streamed from the host" in str(error.value)


def test_evaluation_is_whole_where_it_fits_and_blocks_elsewhere():
    shape = paper_model_shape("huggyllama/llama-7b")
    whole = whole_model_evaluation_bytes(shape, 2048, 4, 2)
    assert plan_evaluation(shape, 166, 2048, 4, 2, "cuda:0", whole, None).mode == "whole"
    assert plan_evaluation(shape, 166, 2048, 4, 2, "cuda:0", whole - 1, None).mode == "blocks"
    assert plan_evaluation(shape, 166, 2048, 4, 2, "cpu", 0, None).mode == "whole"  # the host holds the model anyway
    with pytest.raises(OwlError, match="^evaluation needs about .*--eval_batch_size"):
        plan_evaluation(shape, 166, 2048, 4, 2, "cuda:0", GiB // 4, None)


def test_zero_shot_one_gpu_then_spread_then_host_then_refused():
    plan = plan_zero_shot(10 * GiB, GiB, GiB, {0: 12 * GiB, 1: 12 * GiB}, None)
    assert plan.gpus == 1 and not plan.max_memory
    spread = plan_zero_shot(30 * GiB, GiB, GiB, {3: 12 * GiB, 0: 12 * GiB, 1: 12 * GiB, 2: 12 * GiB}, None)
    assert spread.gpus == 3 and list(spread.max_memory) == [3, 0, 1] and spread.host_bytes == 0
    assert all(v <= 11 * GiB for v in spread.max_memory.values())
    offload = plan_zero_shot(30 * GiB, GiB, GiB, {0: 12 * GiB}, 64 * GiB)
    assert offload.gpus == 1 and offload.host_bytes == 19 * GiB and "cpu" in offload.max_memory
    with pytest.raises(OwlError, match="^zero-shot evaluation needs"):
        plan_zero_shot(100 * GiB, GiB, GiB, {0: 12 * GiB}, 8 * GiB)
    # LLaMA-65B in float16 on 80 GB cards: two GPUs.
    shape = paper_model_shape("huggyllama/llama-65b")
    plan = plan_run(shape, sparsegpt=False, gpu_free=[79 * GiB] * 8, zero_shot_batch_size=8, **PAPER_RUN)
    assert plan.zero_shot.gpus == 2


def test_shape_of_a_loaded_model_equals_the_meta_one():
    from owl.memory import shape_from_config

    model = tiny_model("opt")
    assert shape_of(model) == shape_from_config(model.config)
    assert shape_of(model).total_params == sum(p.numel() for p in model.parameters())


def test_estimate_holds_the_device_side_items():
    """SparseGPT's factors, temporaries and stacked float32 weights, the float32 scratch, and in mixed
    precision the full-width block copy and the windows' cast are all in the estimate."""
    shape = ModelShape(n_blocks=2, hidden=64, heads=4, vocab=320, linears=((64, 64),) * 4 + ((64, 128),) * 2 + ((128, 64),),
                       block_params=4 * 64 * 64 + 3 * 64 * 128 + 128, outside_params=2 * 320 * 64 + 64)
    wanda = pass_footprint(shape, 16, 32, 4, 4, 4, RowNormAccumulator.nbytes)
    sparsegpt = pass_footprint(shape, 16, 32, 4, 4, 4, HessianAccumulator.nbytes, sparsegpt=True)
    assert wanda.solver == 0 and wanda.scratch == 4 * 32 * (64 + 128) * 4
    factors = 4 * (6 * 64 * 64 + 128 * 128)
    group = 4 * (4 * 64 * 64 + 2 * 64 * 128)
    assert sparsegpt.solver == factors + 3 * 4 * 128 * 128 + 2 * group
    mixed = pass_footprint(shape, 16, 32, 4, 2, 4, RowNormAccumulator.nbytes)
    assert mixed.forward_copy == mixed.block and mixed.capture_extra == 16 * 32 * 64 * 4
    assert mixed.on_device(False) >= mixed.activations + mixed.batch + mixed.capture_extra


def test_docs_gpu_table_is_the_plan_commands_output():
    """docs/gpu.md's table of what the paper's grid needs is what `python -m owl.memory plan` prints."""
    import contextlib
    import io
    from pathlib import Path

    from owl.memory import main as plan_main

    repo = Path(__file__).resolve().parents[1]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert plan_main(["plan", str(repo / "config" / "paper.yaml"), "--gpu_gib", "79", "--gpus", "8"]) == 0
    table = [line for line in printed.getvalue().splitlines() if line.startswith("|")]
    assert len(table) == 7 and "LLaMA-65B | 121.60 GiB float16" in table[5] and "block by block" in table[5]
    docs = (repo / "docs" / "gpu.md").read_text()
    assert "\n".join(table) in docs
