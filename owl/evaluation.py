"""Perplexity, as Wanda / SparseGPT / OWL compute it.

Non-overlapping windows of ``seqlen`` tokens (the remainder dropped), ``ppl = exp(mean over
windows of the mean token NLL)``. The LM head is applied in chunks of tokens so a large
vocabulary (Gemma 3: 262k) never materialises a full ``[batch, seqlen, vocab]`` logits tensor.

A model larger than the device is evaluated block by block (:func:`perplexity_by_blocks`): the
sequential runner the pruning uses carries every window through one block at a time, then the
decoder's own forward runs with the blocks replaced by the stored outputs, so its final norm (and
any projection after it) and the head apply as in a plain forward; owl.memory.plan_evaluation
decides which.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from tqdm.auto import tqdm

from owl.models import find_decoder_blocks
from owl.sequential import blocks_swapped, check_finite, non_finite_error, sequential_blocks, windows_per_block_call

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
        targets = input_ids[:, 1:]
        nll = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
        return nll.view(targets.shape).double().mean(dim=1)
    # One decoder call per window on a CPU (cache-sized intermediates; each window's hidden
    # states, so its NLL, are the same bits as in a batched call: tests/test_evaluation.py).
    step = windows_per_block_call(input_ids.device) or len(input_ids)
    hidden = torch.cat([decoder(input_ids=input_ids[i : i + step], use_cache=False).last_hidden_state[:, :-1]
                        for i in range(0, len(input_ids), step)])
    return head_nlls(model, hidden, input_ids)


@torch.no_grad()
def head_nlls(model: nn.Module, hidden: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token NLL of each window from the decoder's final hidden states (all positions
    but the last): the head in chunks of tokens, ``[batch]`` float64."""
    head = model.get_output_embeddings()
    targets = input_ids[:, 1:]
    cap = getattr(model.config, "final_logit_softcapping", None)
    batch, positions = targets.shape
    total = torch.zeros(batch, dtype=torch.float64, device=input_ids.device)
    chunk = max(1, _LOGIT_BUDGET // head.weight.shape[0] // batch)
    for start in range(0, positions, chunk):
        logits = _softcap(head(hidden[:, start : start + chunk]).float(), cap)
        nll = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets[:, start : start + chunk].reshape(-1), reduction="none"
        )
        total += nll.view(batch, -1).double().sum(dim=1)
    return total / positions


class _Replay(nn.Module):
    """Stands in for a decoder block: passes its input on or, as the last block, returns the
    stored output of the real one, so the decoder's forward applies what follows the blocks."""

    def __init__(self):
        super().__init__()
        self.output: torch.Tensor | None = None

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states if self.output is None else self.output


def _first_non_finite_block(model: nn.Module, input_ids: torch.Tensor) -> str:
    """Which block first outputs NaN or infinity on ``input_ids`` (its name for a message)."""
    found: list[int] = []

    def hook(index):
        def check(_module, _inputs, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            if not found and not bool(torch.isfinite(out).all()):
                found.append(index)
        return check

    handles = [block.register_forward_hook(hook(i)) for i, block in enumerate(find_decoder_blocks(model))]
    try:
        model(input_ids=input_ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return f"the output of block {found[0]}" if found else "the head's output"


def _evaluation_windows(token_ids: torch.Tensor, seqlen: int, limit: int | None) -> torch.Tensor:
    windows = split_windows(token_ids, seqlen, limit)
    if windows.shape[0] == 0:
        raise ValueError(f"no evaluation window: {token_ids.numel()} tokens, seqlen {seqlen}")
    return windows


def _perplexity_of(nlls: list[torch.Tensor]) -> float:
    """``exp`` of the mean over windows of each window's mean token NLL."""
    return math.exp(torch.cat(nlls).mean().item())


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
    windows = _evaluation_windows(token_ids, seqlen, limit)
    nlls = []
    for start in tqdm(range(0, windows.shape[0], batch_size), desc=desc, unit="batch"):
        batch = windows[start : start + batch_size].to(device)
        batch_nlls = window_nlls(model, batch)
        if not bool(torch.isfinite(batch_nlls).all()):  # float16 overflow: name the block, never report NaN
            raise non_finite_error(_first_non_finite_block(model, batch), next(model.parameters()).dtype)
        nlls.append(batch_nlls.cpu())
    return _perplexity_of(nlls), windows.shape[0]


@torch.no_grad()
def perplexity_by_blocks(
    model: nn.Module,
    token_ids: torch.Tensor,
    seqlen: int,
    device: torch.device | str,
    batch_size: int = 4,
    limit: int | None = None,
    storage: torch.device | str | None = None,
) -> tuple[float, int]:
    """:func:`perplexity` of a model kept on the host, with one block at a time on ``device``
    (``storage``: where the windows' hidden states wait between blocks, default ``device``). The
    same windows, batches and per-window arithmetic as the plain forward: equal perplexities
    (tests/test_evaluation.py)."""
    device = torch.device(device)
    windows = _evaluation_windows(token_ids, seqlen, limit)
    batches = list(windows.split(batch_size))
    hidden: list[torch.Tensor] = []
    for step in sequential_blocks(model, batches, device, desc="evaluating (block by block)", storage=storage):
        step.forward(advance=True)  # refuses non-finite block outputs, naming the block
        hidden = step.hidden_states
    blocks = find_decoder_blocks(model)
    replays = [_Replay() for _ in blocks]
    decoder = model.get_decoder()
    nlls = []
    with blocks_swapped(blocks, replays):
        home = next(model.parameters()).device
        model.to(device)  # the blocks are replays now: only embeddings, final norm and head move
        try:
            for batch, block_output in zip(batches, hidden):
                batch = batch.to(device)
                replays[-1].output = block_output.to(device)
                final = decoder(input_ids=batch, use_cache=False).last_hidden_state[:, :-1]
                batch_nlls = head_nlls(model, final, batch)
                check_finite(batch_nlls, "the head's output")
                nlls.append(batch_nlls.cpu())
                replays[-1].output = None
        finally:
            model.to(home)
    return _perplexity_of(nlls), windows.shape[0]
