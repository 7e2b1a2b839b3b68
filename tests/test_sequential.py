"""The block-by-block runner reproduces the full model; structure discovery works per family."""

import torch

from owl.models import find_decoder_blocks, find_linear_sublayers, layer_zero_fractions
from owl.methods import LayerTarget, MethodOptions
from owl.pruning import compute_statistics, prune_model
from owl.sequential import sequential_blocks
from owl.statistics import RowNormAccumulator


def _windows(n=3, seqlen=24, vocab=300, seed=0):
    return torch.randint(0, vocab, (n, seqlen), generator=torch.Generator().manual_seed(seed))


def test_blocks_and_linears_found_from_structure(model, family):
    blocks = find_decoder_blocks(model)
    assert len(blocks) == model.config.num_hidden_layers
    names = set(find_linear_sublayers(blocks[0]))
    expected = {
        "llama": {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"},
        "opt": {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "fc1", "fc2"},
    }
    assert names == expected.get(family, expected["llama"])
    # The LM head is not part of any block.
    assert all(layer is not model.get_output_embeddings() for block in blocks for layer in find_linear_sublayers(block).values())


@torch.no_grad()
def test_layer_by_layer_reproduces_full_model_logits(model):
    windows = _windows()
    batches = list(windows.split(2))  # uneven batches: 2 + 1
    steps = list(_run_all_blocks(model, batches))
    last_block_out = torch.cat(steps[-1])
    logits = model.get_output_embeddings()(_final_transform(model)(last_block_out))
    full = model(input_ids=windows, use_cache=False).logits
    torch.testing.assert_close(logits, full, rtol=1e-4, atol=1e-4)


def _run_all_blocks(model, batches):
    """Hidden states after each block, from the sequential runner."""
    for step in sequential_blocks(model, batches, "cpu"):
        step.forward(advance=True)
        yield [h.clone() for h in step._inputs.hidden]


def _final_transform(model):
    """The modules between the last block and the head (final norm, OPT's projection)."""
    decoder = model.get_decoder()
    modules = [getattr(decoder, name) for name in ("norm", "final_layer_norm", "project_out") if getattr(decoder, name, None) is not None]

    def apply(x):
        for module in modules:
            x = module(x)
        return x

    return apply


@torch.no_grad()
def test_runner_hidden_states_match_full_model_hidden_states(model):
    """Every block's output from the runner equals the full model's per-layer hidden state."""
    windows = _windows(n=2)
    full = model(input_ids=windows, output_hidden_states=True, use_cache=False).hidden_states
    outputs = []
    for step in sequential_blocks(model, [windows], "cpu"):
        step.forward(advance=True)
        outputs.append(step._inputs.hidden[0].clone())
    # hidden_states[i + 1] is block i's output, except the last which has the final norm applied.
    for i, out in enumerate(outputs[:-1]):
        torch.testing.assert_close(out, full[i + 1], rtol=1e-4, atol=1e-5)


def _windows_into_each_block(model, run) -> list[int]:
    """How many windows enter each block while ``run()`` runs (pre-hooks: a forward that stops
    early, once every linear input is seen, counts too)."""
    blocks = find_decoder_blocks(model)
    calls = [0] * len(blocks)
    handles = [b.register_forward_pre_hook(lambda _m, inputs, i=i: calls.__setitem__(i, calls[i] + len(inputs[0])))
               for i, b in enumerate(blocks)]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return calls


def test_statistics_pass_runs_each_block_once_per_batch(model):
    windows = _windows(n=4)
    stats = []
    calls = _windows_into_each_block(model, lambda: stats.append(compute_statistics(model, windows, "cpu", batch_size=2)))
    assert calls == [4] * len(calls)  # every window once (the CPU runs a batch one window per call)
    assert stats[0].n_blocks == len(calls)


def test_pruning_pass_runs_each_block_twice_but_the_last_once(model):
    """Observe, prune, then advance: the last block's pruned outputs feed nothing, so it is not rerun."""
    windows = _windows(n=4)
    blocks = find_decoder_blocks(model)
    targets = [LayerTarget(0.5) for _ in blocks]
    calls = _windows_into_each_block(model, lambda: prune_model(model, "wanda", targets, MethodOptions(), "cpu", windows,
                                                                  batch_size=2))
    assert calls == [8] * (len(blocks) - 1) + [4]
    last = find_linear_sublayers(blocks[-1])
    assert all(0.45 < float((layer.weight == 0).float().mean()) < 0.55 for layer in last.values())  # still pruned


def test_statistics_equal_direct_computation_on_first_block(model):
    """Batched accumulation equals the per-sample definition (mean over samples of squared norms)."""
    windows = _windows(n=4)
    stats = compute_statistics(model, windows, "cpu", batch_size=3)
    block = find_decoder_blocks(model)[0]
    layers = find_linear_sublayers(block)
    name = next(iter(layers))
    seen = []
    handle = layers[name].register_forward_hook(lambda _m, inp, _o: seen.append(inp[0].detach()))
    with torch.no_grad():
        for w in windows:
            model(input_ids=w[None], use_cache=False)
    handle.remove()
    direct = torch.stack([x.reshape(-1, x.shape[-1]).pow(2).sum(0) for x in seen]).mean(0)
    torch.testing.assert_close(stats.scaler_rows[0][name], direct, rtol=1e-4, atol=1e-6)


def test_row_norm_accumulator_is_mean_over_samples():
    acc = RowNormAccumulator(3)
    x = torch.arange(24, dtype=torch.float32).reshape(2, 4, 3)
    acc.add(x[:1])
    acc.add(x[1:])
    expected = x.pow(2).sum(dim=1).mean(dim=0)
    torch.testing.assert_close(acc.value, expected)


def test_zero_fractions_count_only_block_linears(model):
    overall, per_block = layer_zero_fractions(model)
    assert overall == 0 and per_block == [0.0] * len(find_decoder_blocks(model))
    layer = next(iter(find_linear_sublayers(find_decoder_blocks(model)[0]).values()))
    with torch.no_grad():
        layer.weight.zero_()
    overall, per_block = layer_zero_fractions(model)
    assert per_block[0] > 0 and all(p == 0 for p in per_block[1:])
