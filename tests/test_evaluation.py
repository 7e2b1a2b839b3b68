"""Perplexity equals exp of the model's own loss; windows follow the paper's convention."""

import math

import torch

from owl.evaluation import perplexity, split_windows, window_nlls


def test_split_windows_drops_remainder_and_respects_limit():
    ids = torch.arange(103)
    assert split_windows(ids, 10).shape == (10, 10)
    assert split_windows(ids, 10, limit=3).tolist()[2][0] == 20
    assert split_windows(ids, 200).shape == (0, 200)


@torch.no_grad()
def test_window_nll_matches_model_loss(model):
    windows = torch.randint(0, 300, (3, 32), generator=torch.Generator().manual_seed(1))
    ours = window_nlls(model, windows)
    for i in range(3):
        loss = model(input_ids=windows[i : i + 1], labels=windows[i : i + 1], use_cache=False).loss
        assert abs(ours[i].item() - loss.item()) < 1e-5


@torch.no_grad()
def test_perplexity_is_exp_mean_window_loss_and_batch_invariant(model):
    stream = torch.randint(0, 300, (5 * 16 + 7,), generator=torch.Generator().manual_seed(2))
    losses = [
        model(input_ids=w[None], labels=w[None], use_cache=False).loss.item() for w in stream[: 5 * 16].view(5, 16)
    ]
    expected = math.exp(sum(losses) / len(losses))
    for batch_size in (1, 2, 5):
        ppl, n = perplexity(model, stream, seqlen=16, device="cpu", batch_size=batch_size)
        assert n == 5
        assert abs(ppl - expected) / expected < 1e-5
    ppl3, n3 = perplexity(model, stream, seqlen=16, device="cpu", limit=3)
    assert n3 == 3 and abs(ppl3 - math.exp(sum(losses[:3]) / 3)) / ppl3 < 1e-5


@torch.no_grad()
def test_chunked_head_matches_full_logits(model, monkeypatch):
    import owl.evaluation as evaluation

    windows = torch.randint(0, 300, (2, 40), generator=torch.Generator().manual_seed(3))
    whole = window_nlls(model, windows)
    monkeypatch.setattr(evaluation, "_LOGIT_BUDGET", 300 * 7)  # force chunks of a few tokens
    torch.testing.assert_close(window_nlls(model, windows), whole, rtol=1e-6, atol=1e-6)


@torch.no_grad()
def test_one_decoder_call_per_window_gives_the_batched_nlls_bit_for_bit(model, monkeypatch):
    import owl.evaluation as evaluation

    windows = torch.randint(0, 300, (3, 40), generator=torch.Generator().manual_seed(4))
    for dtype in (torch.float32, torch.bfloat16):
        model.to(dtype)
        per_window = window_nlls(model, windows)  # the CPU default: one window per call
        monkeypatch.setattr(evaluation, "windows_per_block_call", lambda device: None)
        batched = window_nlls(model, windows)
        monkeypatch.undo()
        assert torch.equal(per_window, batched), dtype


@torch.no_grad()
def test_block_by_block_perplexity_equals_the_plain_forward(model):
    """The model larger than the device's memory: one block at a time on the device, then final
    norm and head through the decoder's own forward. Every family, hidden states kept on the
    device or streamed from the host, several batch sizes: the same perplexity to 1e-12 relative
    (on a CPU the same bits: one window per block call either way)."""
    from owl.evaluation import perplexity_by_blocks

    stream = torch.randint(0, 300, (7 * 24 + 5,), generator=torch.Generator().manual_seed(3))
    for batch_size in (1, 3):
        plain, n = perplexity(model, stream, seqlen=24, device="cpu", batch_size=batch_size)
        for storage in (None, "cpu"):
            blocks, m = perplexity_by_blocks(model, stream, seqlen=24, device="cpu", batch_size=batch_size, storage=storage)
            assert m == n == 7
            assert abs(blocks - plain) <= 1e-12 * plain, (batch_size, storage, blocks, plain)


@torch.no_grad()
def test_non_finite_outputs_are_refused_naming_the_block(tokenizer):
    """float16 overflow: a block whose output is infinite is named in one line, whether the model is
    evaluated whole or block by block, instead of a NaN perplexity."""
    import pytest

    from owl.errors import OwlError
    from owl.evaluation import perplexity_by_blocks
    from owl.models import find_decoder_blocks
    from owl.testing import tiny_model

    model = tiny_model("llama", vocab_size=len(tokenizer))
    find_decoder_blocks(model)[2].mlp.down_proj.weight.data[:] = float("inf")
    stream = torch.randint(0, 300, (4 * 16,), generator=torch.Generator().manual_seed(4))
    for evaluate in (perplexity, perplexity_by_blocks):
        with pytest.raises(OwlError) as error:
            evaluate(model, stream, 16, "cpu", 2)
        message = str(error.value)
        assert "\n" not in message and "block 2" in message and "bfloat16 or float32" in message


def test_run_evaluates_block_by_block_when_the_plan_says_so(tiny_model_dirs, owl_env, monkeypatch):
    """owl prune on a device the whole model does not fit (free memory replaced): the evaluation is
    planned block by block before pruning, recorded, and gives the whole model's perplexity."""
    import json

    import owl.memory
    from owl.cli import main

    args = ["prune", "--model", str(tiny_model_dirs["gemma3"]), "--prune_method", "wanda", "--sparsity_ratio", "0.5",
            "--nsamples", "4", "--seqlen", "32", "--eval_limit", "5", "--device", "cpu", "--calib_batch_size", "2", "-q"]
    assert main([*args, "--save", str(owl_env / "whole")]) == 0
    whole = json.loads((owl_env / "whole" / "result.json").read_text())
    real_plan = owl.memory.plan_evaluation

    def tight_device(shape, n_windows, seqlen, batch_size, dtype_bytes, device, device_free, host_free):
        need = owl.memory.whole_model_evaluation_bytes(shape, seqlen, batch_size, dtype_bytes)
        return real_plan(shape, n_windows, seqlen, batch_size, dtype_bytes, "cuda:0", need - 1, host_free)

    monkeypatch.setattr("owl.pipeline.plan_evaluation", tight_device)
    assert main([*args, "--save", str(owl_env / "blocks")]) == 0
    blocks = json.loads((owl_env / "blocks" / "result.json").read_text())
    assert whole["evaluation_mode"] == "whole" and blocks["evaluation_mode"] == "blocks"
    assert abs(blocks["ppl"]["wikitext2"] - whole["ppl"]["wikitext2"]) <= 1e-12 * whole["ppl"]["wikitext2"]


def test_evaluation_that_fits_nowhere_is_refused_before_pruning(tiny_model_dirs, owl_env, monkeypatch, capsys):
    from owl.cli import main

    import owl.memory

    real_plan = owl.memory.plan_evaluation
    monkeypatch.setattr("owl.pipeline.plan_evaluation",
                        lambda shape, n, s, b, w, device, free, host: real_plan(shape, n, s, b, w, "cuda:0", 1000, host))
    prunings = []
    monkeypatch.setattr("owl.pipeline.prune_model", lambda *a, **k: prunings.append(a))
    out = owl_env / "refused"
    code = main(["prune", "--model", str(tiny_model_dirs["llama"]), "--prune_method", "wanda", "--nsamples", "4", "--seqlen",
                 "32", "--eval_limit", "3", "--device", "cpu", "--calib_batch_size", "2", "--save", str(out), "-q"])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 2 and not prunings and not out.exists()
    assert len(errors) == 1 and errors[0].startswith("owl: error: evaluation needs about")
