"""Perplexity, as Wanda / SparseGPT / OWL compute it.

Non-overlapping windows of ``seqlen`` tokens (the remainder dropped), ``ppl = exp(mean over
windows of the mean token NLL)``. The LM head is applied in chunks of tokens so a large
vocabulary (Gemma 3: 262k) never materialises a full ``[batch, seqlen, vocab]`` logits tensor.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from tqdm.auto import tqdm

from owl.sequential import windows_per_block_call

# Logits per chunk: 2**23 values (32 MiB of float32) whatever the vocabulary. Small enough that
# the chunk's logits, their float32 copy and log-softmax stay near the cache: on a 2-core CPU the
# head + loss of a bfloat16 model ran 2x faster than with 2**26 (float32: 5-8% faster), with
# identical NLLs (docs/benchmarks.md); each token's NLL does not depend on the chunking.
_LOGIT_BUDGET = 2**23


def split_windows(token_ids: torch.Tensor, seqlen: int, limit: int | None = None) -> torch.Tensor:
    """``[n_windows, seqlen]`` non-overlapping windows of a 1-D token stream, remainder dropped."""
    token_ids = token_ids.reshape(-1)
    n_windows = token_ids.numel() // seqlen
    if limit is not None:
        n_windows = min(n_windows, limit)
    return token_ids[: n_windows * seqlen].view(n_windows, seqlen)


def _softcap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    return logits if not cap else torch.tanh(logits / cap) * cap


@torch.no_grad()
def window_nlls(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token NLL of each window: ``[batch]`` float64."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    head = model.get_output_embeddings()
    if decoder is None or head is None:  # unknown layout: plain forward (materialises logits)
        logits = model(input_ids=input_ids, use_cache=False).logits.float()
        hidden, head = None, None
    else:
        # One decoder call per window on a CPU (cache-sized intermediates; each window's hidden
        # states, so its NLL, are the same bits as in a batched call: tests/test_evaluation.py).
        step = windows_per_block_call(input_ids.device) or len(input_ids)
        hidden = torch.cat([decoder(input_ids=input_ids[i : i + step], use_cache=False).last_hidden_state[:, :-1]
                            for i in range(0, len(input_ids), step)])
    targets = input_ids[:, 1:]
    cap = getattr(model.config, "final_logit_softcapping", None)
    batch, positions = targets.shape
    total = torch.zeros(batch, dtype=torch.float64, device=input_ids.device)
    if hidden is None:
        nll = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
        return nll.view(batch, positions).double().mean(dim=1)
    chunk = max(1, _LOGIT_BUDGET // head.weight.shape[0] // batch)
    for start in range(0, positions, chunk):
        logits = _softcap(head(hidden[:, start : start + chunk]).float(), cap)
        nll = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets[:, start : start + chunk].reshape(-1), reduction="none"
        )
        total += nll.view(batch, -1).double().sum(dim=1)
    return total / positions


@torch.no_grad()
def perplexity(
    model: nn.Module,
    token_ids: torch.Tensor,
    seqlen: int,
    device: torch.device | str,
    batch_size: int = 4,
    limit: int | None = None,
    desc: str = "evaluating",
) -> tuple[float, int]:
    """``(perplexity, number of windows)`` of ``model`` (already on ``device``) on a token stream."""
    windows = split_windows(token_ids, seqlen, limit)
    if windows.shape[0] == 0:
        raise ValueError(f"no evaluation window: {token_ids.numel()} tokens, seqlen {seqlen}")
    nlls = []
    for start in tqdm(range(0, windows.shape[0], batch_size), desc=desc, unit="batch"):
        nlls.append(window_nlls(model, windows[start : start + batch_size].to(device)).cpu())
    mean_nll = torch.cat(nlls).mean().item()
    return math.exp(mean_nll), windows.shape[0]
