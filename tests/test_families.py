"""Every pruning method, unstructured and N:M, runs on every tiny model family (``family`` fixture:
LLaMA, Mistral, OPT, Qwen2 with q/k/v biases, Gemma 3 with sliding and global attention layers)."""

import pytest
import torch

from owl.methods import LayerTarget, MethodOptions
from owl.models import find_decoder_blocks, find_linear_sublayers, layer_zero_fractions
from owl.pruning import prune_model


def _windows(n=4, seqlen=24, vocab=300, seed=0):
    return torch.randint(0, vocab, (n, seqlen), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "method, target",
    [
        ("magnitude", LayerTarget(0.5)),
        ("wanda", LayerTarget(0.5)),
        ("sparsegpt", LayerTarget(0.5)),
        ("wanda", LayerTarget(0.5, 2, 4)),
        ("sparsegpt", LayerTarget(0.5, 2, 4)),
    ],
    ids=["magnitude", "wanda", "sparsegpt", "wanda-2:4", "sparsegpt-2:4"],
)
@torch.no_grad()
def test_every_method_prunes_every_family(model, method, target):
    biases = {name: layer.bias.clone() for block in find_decoder_blocks(model)
              for name, layer in find_linear_sublayers(block).items() if layer.bias is not None}
    n_blocks = len(find_decoder_blocks(model))
    prune_model(model, method, [target] * n_blocks, MethodOptions(), "cpu", _windows(), batch_size=3)
    overall, per_block = layer_zero_fractions(model)
    # SparseGPT also zeroes the weights of dead inputs (OPT's ReLU features that never fire here).
    slack = 0.01 if method == "sparsegpt" else 1e-3
    assert overall == pytest.approx(0.5, abs=slack) and per_block == pytest.approx([0.5] * n_blocks, abs=slack)
    if target.structured:
        for block in find_decoder_blocks(model):
            for layer in find_linear_sublayers(block).values():
                groups = layer.weight.reshape(layer.weight.shape[0], -1, 4)
                assert ((groups == 0).sum(-1) >= 2).all()
    # Biases (Qwen2's q/k/v, OPT's) are not weights to prune.
    for block in find_decoder_blocks(model):
        for name, layer in find_linear_sublayers(block).items():
            if name in biases:
                torch.testing.assert_close(layer.bias, biases[name])
    assert torch.isfinite(model(input_ids=_windows(n=1), use_cache=False).logits).all()


def test_qwen2_has_qkv_biases_and_gemma3_mixes_attention_types(tokenizer):
    from owl.testing import tiny_model

    attn = find_decoder_blocks(tiny_model("qwen2"))[0].self_attn
    assert all(getattr(attn, p).bias is not None for p in ("q_proj", "k_proj", "v_proj")) and attn.o_proj.bias is None
    config = tiny_model("gemma3").config
    assert {"sliding_attention", "full_attention"} <= set(config.layer_types) and config.sliding_window < 24
