"""The faster paths of the pruning pass compute what the plain paths compute.

One statistic per distinct linear input, the observe forward that stops once every input is seen,
SparseGPT's shared factorisation, mixed-precision forwards, and the ``auto`` precision choice.
"""

import pytest
import torch

from owl import precision
from owl.methods import LayerTarget, MethodOptions
from owl.models import find_decoder_blocks, find_linear_sublayers
from owl.pruning import compute_statistics, prune_model
from owl.sequential import SharedInputStatistics, sequential_blocks
from owl.sparsegpt import factor_hessian, sparsegpt_prune_, sparsegpt_prune_group_
from owl.statistics import HessianAccumulator, RowNormAccumulator, lower_triangle_blocks


def _windows(n=4, seqlen=24, vocab=300, seed=0):
    return torch.randint(0, vocab, (n, seqlen), generator=torch.Generator().manual_seed(seed))


def _per_layer_inputs(step):
    """Every linear layer's inputs of this block, one list per layer, from plain forward hooks."""
    seen = {name: [] for name in step.linear_layers}
    handles = [layer.register_forward_hook(lambda _m, i, _o, n=name: seen[n].append(i[0].detach().clone()))
               for name, layer in step.linear_layers.items()]
    try:
        step.forward()  # no statistics: a full forward, nothing advanced
    finally:
        for h in handles:
            h.remove()
    return seen


@pytest.mark.parametrize("accumulator", [RowNormAccumulator, HessianAccumulator])
def test_shared_statistics_equal_per_layer_accumulation_bit_for_bit(model, family, accumulator):
    for step in sequential_blocks(model, list(_windows().split(3)), "cpu", chunk_size=None):
        inputs = _per_layer_inputs(step)
        layers = step.linear_layers
        shared = SharedInputStatistics(layers, lambda n: accumulator(layers[n].in_features))
        step.forward(shared)
        values = shared.values()
        for name, batches in inputs.items():
            direct = accumulator(layers[name].in_features)
            for x in batches:
                direct.add(x)
            assert torch.equal(values[name], direct.value), name
        groups = sorted(sorted(g) for g in shared.groups.values())
        attention = sorted(n for n in layers if n.endswith(("q_proj", "k_proj", "v_proj")))
        assert attention in groups  # q/k/v read one tensor: one accumulator
        if family != "opt":
            assert sorted(n for n in layers if n.endswith(("gate_proj", "up_proj"))) in groups
        assert len(groups) < len(layers)
        step.forward(advance=True)
        break


@pytest.mark.parametrize("accumulator", [RowNormAccumulator, HessianAccumulator])
def test_forward_one_window_at_a_time_changes_nothing_bit_for_bit(model, accumulator):
    """Chunked block calls give the whole batch's statistics and block outputs, bit for bit."""
    batches = list(_windows(n=5).split(3))  # uneven: 3 + 2
    results = {}
    for chunk_size in (None, 1, 2):
        values, outputs = [], []
        for step in sequential_blocks(model, [b.clone() for b in batches], "cpu", chunk_size=chunk_size):
            layers = step.linear_layers
            shared = SharedInputStatistics(layers, lambda n: accumulator(layers[n].in_features))
            step.forward(shared)
            values.append(shared.values())
            step.forward(advance=True)
            outputs.append([h.clone() for h in step._inputs.hidden])
        results[chunk_size] = values, outputs
    whole_values, whole_outputs = results[None]
    for chunk_size in (1, 2):
        values, outputs = results[chunk_size]
        for block_values, block_whole in zip(values, whole_values):
            assert all(torch.equal(block_values[n], block_whole[n]) for n in block_whole)
        for block_out, block_whole in zip(outputs, whole_outputs):
            assert all(torch.equal(a, b) for a, b in zip(block_out, block_whole))


def test_batch_rows_cuts_only_tensors_with_a_batch_dimension():
    from owl.sequential import _batch_rows

    mask, rotary, positions = torch.zeros(4, 1, 6, 6), torch.ones(1, 6, 8), torch.arange(4)
    cut = _batch_rows({"mask": mask, "emb": (rotary, rotary), "cache_position": positions, "flag": True}, 1, 3, 4)
    assert cut["mask"].shape == (2, 1, 6, 6)
    assert cut["emb"][0] is rotary and cut["cache_position"] is positions and cut["flag"] is True


@pytest.mark.parametrize("chunk_size", [None, 1])
def test_observe_forward_stops_before_the_last_linear_runs(model, chunk_size):
    calls = 1 if chunk_size is None else len(_windows())
    for step in sequential_blocks(model, [_windows()], "cpu", chunk_size=chunk_size):
        layers = step.linear_layers
        ran = {name: 0 for name in layers}
        handles = [layer.register_forward_hook(lambda *_a, n=name: ran.__setitem__(n, ran[n] + 1)) for name, layer in layers.items()]
        shared = SharedInputStatistics(layers, lambda n: RowNormAccumulator(layers[n].in_features))
        step.forward(shared)
        assert sorted(ran.values()) == [0] + [calls] * (len(layers) - 1)  # the last one's matmul skipped
        assert shared.values().keys() == layers.keys()
        for h in handles:
            h.remove()
        before = [h.clone() for h in step._inputs.hidden]
        step.forward(shared)
        assert all(torch.equal(a, b) for a, b in zip(before, step._inputs.hidden))  # nothing advanced
        step.forward(advance=True)
        break


def test_missing_input_is_an_error_not_a_silent_zero():
    layers = {"a": torch.nn.Linear(3, 2), "b": torch.nn.Linear(3, 2)}
    shared = SharedInputStatistics(layers, lambda n: RowNormAccumulator(3))
    shared.start_batch()
    shared.observe("a", torch.ones(2, 3))
    with pytest.raises(RuntimeError, match="no input observed"):
        shared.values()


@pytest.mark.parametrize("features", [5, 300, 700])
def test_blocked_hessian_lower_triangle_equals_the_full_product_bit_for_bit(features):
    generator = torch.Generator().manual_seed(features)
    batches = [torch.randn(2, 96, features, generator=generator) * torch.rand(features, generator=generator) * 4
               for _ in range(3)]
    accumulator = HessianAccumulator(features)
    full = torch.zeros(features, features)
    for x in batches:
        accumulator.add(x)
        rows = x.reshape(-1, features)
        full.addmm_(rows.t(), rows)
    value = accumulator.value
    expected = full * (2.0 / 6)
    lower = torch.tril(torch.ones(features, features, dtype=torch.bool))
    assert torch.equal(value[lower], expected[lower])  # what Cholesky reads: unchanged
    assert torch.equal(value, value.t())
    assert torch.allclose(value, expected, rtol=1e-5, atol=1e-4)


def test_lower_triangle_blocks_cover_every_row_once():
    for features in (1, 255, 256, 576, 1536, 8192):
        blocks = lower_triangle_blocks(features)
        assert blocks[0][0] == 0 and blocks[-1][1] == features
        assert all(a < b and b == c for (a, b), (c, _) in zip(blocks, blocks[1:] + [(blocks[-1][1], None)]))
        assert len(blocks) == max(1, features // 256)


@pytest.mark.parametrize(("rows", "n", "m"), [((24, 8, 8), 0, 0), ((7, 40), 0, 0), ((16, 16), 2, 4)])
def test_sparsegpt_group_equals_one_layer_at_a_time_bit_for_bit(rows, n, m):
    generator = torch.Generator().manual_seed(len(rows))
    cols = 48
    x = torch.randn(200, cols, generator=generator) * torch.rand(cols, generator=generator) * 3
    x[:, 5] = 0  # a dead input
    h = 2 * x.t() @ x / 200
    weights = [torch.randn(r, cols, generator=generator) for r in rows]
    one_by_one = [w.clone() for w in weights]
    for w in one_by_one:
        sparsegpt_prune_(w, h, 0.7, prune_n=n, prune_m=m, blocksize=16)
    grouped = [w.clone() for w in weights]
    sparsegpt_prune_group_(grouped, factor_hessian(h, 0.01), 0.7, prune_n=n, prune_m=m, blocksize=16)
    for a, b in zip(one_by_one, grouped):
        assert torch.equal(a, b)
    if not n:  # each weight its own count per block of 16 columns (the dead column's zeros prune first)
        for w in grouped:
            assert (w == 0).sum().item() == 3 * int(len(w) * 16 * 0.7)


def test_sparsegpt_with_shared_factor_equals_sparsegpt_with_hessian():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 16, generator=g)
    h = 2 * x.t() @ x / 64
    h[3, :] = 0
    h[:, 3] = 0  # a dead input
    w = torch.randn(8, 16, generator=g)
    a, b = w.clone(), w.clone()
    sparsegpt_prune_(a, h, 0.5, blocksize=8)
    sparsegpt_prune_(b, factor_hessian(h, 0.01), 0.5, blocksize=8)
    assert torch.equal(a, b)
    assert bool((b[:, 3] == 0).all())


def test_mixed_precision_prunes_float32_weights_to_target(model):
    windows = _windows()
    n_blocks = len(find_decoder_blocks(model))
    targets = [LayerTarget(0.5)] * n_blocks
    prune_model(model, "wanda", targets, MethodOptions(), "cpu", windows, batch_size=2, forward_dtype=torch.bfloat16)
    for block in find_decoder_blocks(model):
        for layer in find_linear_sublayers(block).values():
            assert layer.weight.dtype == torch.float32
            assert (layer.weight == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)


def test_mixed_precision_statistics_are_close_to_float32(model):
    windows = _windows()
    exact = compute_statistics(model, windows, "cpu", 2)
    mixed = compute_statistics(model, windows, "cpu", 2, forward_dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.float32  # the model itself is untouched
    for a, b in zip(exact.scaler_rows, mixed.scaler_rows):
        for name in a:
            torch.testing.assert_close(b[name], a[name], rtol=0.1, atol=1e-3)
            assert not torch.equal(b[name], a[name]) or a[name].abs().max() == 0  # it did run in bfloat16


@pytest.mark.parametrize(("flags", "device", "expected"), [
    (["avx2", "avx512f", "avx512_bf16"], "cpu", "bfloat16"),
    (["avx2", "amx_bf16"], "cpu", "bfloat16"),
    (["avx2"], "cpu", "float32"),
])
def test_auto_precision_follows_the_cpu_flags(monkeypatch, flags, device, expected):
    monkeypatch.setattr(precision, "cpu_info", lambda: {"model": "test", "flags": flags})
    assert precision.resolve_dtype("auto", device) == expected
    assert precision.resolve_dtype("float16", device) == "float16"
    assert precision.resolve_dtype(None, device) is None
    assert precision.precision_record(device)["native_bf16"] is (expected == "bfloat16")


@pytest.mark.parametrize("accumulator", [RowNormAccumulator, HessianAccumulator])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_parts_in_a_reused_workspace_equal_the_concatenation_bit_for_bit(accumulator, dtype):
    """add_parts writes a batch's chunks into reused scratch instead of concatenating them afresh:
    the same statistic, bit for bit, even when the scratch still holds another batch's values."""
    from owl.statistics import Workspace

    generator = torch.Generator().manual_seed(0)
    batches = [[torch.randn(1, 37, 300, generator=generator).to(dtype) * 10 for _ in range(3)] for _ in range(2)]
    workspace = Workspace()
    via_parts, via_cat = accumulator(300), accumulator(300)
    for parts in batches:
        via_parts.add_parts(parts, workspace)
        via_cat.add(torch.cat(parts))
    assert via_parts.samples == via_cat.samples == 6
    assert torch.equal(via_parts.value, via_cat.value)
    assert len(workspace._buffers) == 1  # one buffer, reused by the second batch


def test_a_pass_reuses_one_workspace_across_blocks(model):
    workspaces = set()
    for step in sequential_blocks(model, [_windows()], "cpu"):
        workspaces.add(id(step.workspace))
        step.forward(advance=True)
    assert len(workspaces) == 1


def test_joined_outputs_are_written_over_the_dead_inputs_only_when_safe():
    from owl.sequential import _joined_outputs

    inputs = torch.randn(4, 5, 3)
    outputs = [torch.randn(1, 5, 3) for _ in range(4)]
    expected = torch.cat(outputs)
    joined = _joined_outputs(outputs, inputs)
    assert torch.equal(joined, expected) and joined.data_ptr() == inputs.data_ptr()  # no fresh allocation
    aliased_inputs = torch.randn(4, 5, 3)
    aliased = [aliased_inputs[i:i + 1] for i in range(4)]  # a block that returned its input unchanged
    again = _joined_outputs(aliased, aliased_inputs)
    assert torch.equal(again, aliased_inputs) and again.data_ptr() != aliased_inputs.data_ptr()
    other_dtype = _joined_outputs([o.to(torch.bfloat16) for o in outputs], inputs)
    assert other_dtype.dtype == torch.bfloat16 and torch.equal(other_dtype, expected.to(torch.bfloat16))
