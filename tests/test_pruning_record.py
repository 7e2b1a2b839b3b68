"""Nothing lost: the pruning is recorded before evaluation, and a run whose evaluation failed
evaluates again from the record without pruning again."""

import json
import subprocess
import sys

import pytest
import torch

from owl.cli import main
from owl.models import load_model
from owl.pruning_record import PENDING, PRUNED_WEIGHTS, PRUNING_RECORD, pack_mask, unpack_mask, weights_digest

SMALL = ["--nsamples", "4", "--seqlen", "32", "--eval_limit", "3", "--device", "cpu", "--calib_batch_size", "2", "-q"]


def test_masks_pack_to_one_bit_per_weight():
    mask = torch.rand(7, 13, generator=torch.Generator().manual_seed(0)) < 0.7
    packed = pack_mask(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == (7 * 13 + 7) // 8
    assert torch.equal(unpack_mask(packed, (7, 13)), mask)


@pytest.mark.parametrize("method", ["wanda_owl", "sparsegpt"])
def test_failed_evaluation_keeps_the_pruning_and_is_redone_without_pruning(tiny_model_dirs, owl_env, monkeypatch, capsys, method):
    import owl.pipeline

    model = str(tiny_model_dirs["llama"])
    args = ["prune", "--model", model, "--prune_method", method, "--sparsity_ratio", "0.6", "--Lamda", "0.1", *SMALL]
    reference = owl_env / "reference"
    assert main([*args, "--save", str(reference)]) == 0
    expected = json.loads((reference / "result.json").read_text())
    assert not (reference / PRUNING_RECORD).exists() and not (reference / PRUNED_WEIGHTS).exists()  # cleared once written

    prunings = []
    real_prune = owl.pipeline.prune_model
    monkeypatch.setattr(owl.pipeline, "prune_model", lambda *a, **k: prunings.append(1) or real_prune(*a, **k))

    def fail(*a, **k):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(owl.pipeline, "perplexity", fail)
    out = owl_env / "run"
    with pytest.raises(RuntimeError, match="simulated"):
        main([*args, "--save", str(out)])
    assert prunings == [1]
    assert not (out / "result.json").exists()  # the workflow's "done" marker is never written for a pending run
    record = json.loads((out / PRUNING_RECORD).read_text())
    assert record["status"] == PENDING
    assert record["result"]["layer_sparsities"] == expected["layer_sparsities"]
    assert record["result"]["achieved_sparsity"] == expected["achieved_sparsity"]
    assert record["result"]["outlier_ratios"] == expected["outlier_ratios"]
    assert record["result"]["timings_s"]["pruning"] > 0

    monkeypatch.setattr(owl.pipeline, "perplexity", real_perplexity := __import__("owl.evaluation").evaluation.perplexity)
    assert main(["evaluate", str(out), "-q"]) == 0
    assert prunings == [1]  # evaluated from the record: no second pruning
    result = json.loads((out / "result.json").read_text())
    assert result["ppl"] == expected["ppl"] and result["pruning_restored"] is True
    dense, _ = load_model(model)
    assert result["dense_weights_sha256"] == expected["dense_weights_sha256"] == weights_digest(dense)  # the model before pruning
    assert result["layer_achieved_sparsities"] == expected["layer_achieved_sparsities"]
    assert not (out / PRUNING_RECORD).exists() and not (out / PRUNED_WEIGHTS).exists()
    assert real_perplexity is owl.pipeline.perplexity


def test_same_settings_resume_and_other_settings_prune_again(tiny_model_dirs, owl_env, monkeypatch):
    import owl.pipeline

    model = str(tiny_model_dirs["opt"])
    args = ["prune", "--model", model, "--prune_method", "wanda", "--sparsity_ratio", "0.5", *SMALL]
    prunings = []
    real_prune = owl.pipeline.prune_model
    monkeypatch.setattr(owl.pipeline, "prune_model", lambda *a, **k: prunings.append(1) or real_prune(*a, **k))
    real_perplexity = owl.pipeline.perplexity
    monkeypatch.setattr(owl.pipeline, "perplexity", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    out = owl_env / "run"
    with pytest.raises(KeyboardInterrupt):
        main([*args, "--save", str(out)])
    monkeypatch.setattr(owl.pipeline, "perplexity", real_perplexity)
    # Other evaluation settings (a larger --eval_limit) reuse the pruning; another sparsity does not.
    assert main([*args[:-len(SMALL)], *SMALL[:4], "--eval_limit", "4", *SMALL[6:], "--save", str(out)]) == 0
    assert prunings == [1] and json.loads((out / "result.json").read_text())["eval_windows"] == 4
    other = owl_env / "other"
    with pytest.raises(KeyboardInterrupt):
        monkeypatch.setattr(owl.pipeline, "perplexity", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
        main([*args, "--save", str(other)])
    monkeypatch.setattr(owl.pipeline, "perplexity", real_perplexity)
    assert main(["prune", "--model", model, "--prune_method", "wanda", "--sparsity_ratio", "0.6", *SMALL, "--save", str(other)]) == 0
    assert prunings == [1, 1, 1]


def test_killed_process_during_evaluation_then_evaluate(tiny_model_dirs, owl_env, tmp_path):
    """A real kill: the subprocess dies (SIGKILL from inside the evaluation), the record survives."""
    out = tmp_path / "killed"
    script = (
        "import os, signal, owl.pipeline\n"
        "owl.pipeline.perplexity = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
        "from owl.cli import main\n"
        f"main(['prune', '--model', {str(tiny_model_dirs['qwen2'])!r}, '--prune_method', 'sparsegpt', '--sparsity_ratio', '0.5',"
        f" *{SMALL!r}, '--save', {str(out)!r}])\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9
    assert json.loads((out / PRUNING_RECORD).read_text())["status"] == PENDING and not (out / "result.json").exists()
    assert main(["evaluate", str(out), "-q"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["pruning_restored"] and result["ppl"]["wikitext2"] > 1
    assert main(["evaluate", str(out), "-q"]) == 2  # nothing pending any more: one-line error
