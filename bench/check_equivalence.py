"""Check that the performance rewrites give the same results, bit for bit.

- ``owl.masks``: against straightforward stable-sort implementations (the definitions the masks
  promise) on random, tied, quantised, signed-zero, infinite and NaN inputs;
- ``owl.sparsegpt.sparsegpt_prune_``: against the previous column loop (kept below verbatim as
  ``reference_sparsegpt_prune_``), unstructured and N:M, float32 and bfloat16, dead inputs,
  blocksizes that do not divide the width; compared as raw bits (``-0.0 != 0.0`` here).

CPU only, well under a minute:
    python bench/check_equivalence.py
"""

from __future__ import annotations

import itertools

import torch

from owl.masks import lowest_k_flat_mask, magnitude_mask, nm_mask, row_mask
from owl.sparsegpt import _upper_cholesky_of_inverse, sparsegpt_prune_


def ref_row_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    k = int(scores.shape[1] * sparsity)
    mask = torch.zeros(scores.shape, dtype=torch.bool)
    if k > 0:
        mask.scatter_(-1, torch.sort(scores.float(), dim=-1, stable=True).indices[..., :k], True)
    return mask


def ref_flat_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    flat = torch.zeros(values.numel(), dtype=torch.bool)
    if k > 0:
        flat[torch.sort(values.float().flatten(), stable=True).indices[:k]] = True
    return flat.reshape(values.shape)


def ref_nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    rows, cols = scores.shape
    return ref_row_mask(scores.reshape(-1, m), n / m if n else 0.0).reshape(rows, cols) if n else torch.zeros(scores.shape, dtype=torch.bool)


def cases(generator: torch.Generator):
    shapes = [(1, 1), (1, 7), (3, 65), (64, 64), (17, 300), (96, 576), (5, 1536), (0, 10)]
    for rows, cols in shapes:
        base = torch.rand(rows, cols, generator=generator)
        yield "uniform", base
        yield "quantised8", (base * 8).floor()  # heavy ties
        yield "quantised2", (base * 2).floor()  # almost all ties
        yield "constant", torch.zeros(rows, cols)
        signed = (base - 0.5).round() * 0.0  # +0.0 and -0.0 mixed
        signed[torch.rand(rows, cols, generator=generator) < 0.5] *= -1
        yield "signed_zeros", signed
        inf = base.clone()
        inf[torch.rand(rows, cols, generator=generator) < 0.2] = float("inf")
        inf[torch.rand(rows, cols, generator=generator) < 0.1] = -float("inf")
        yield "infinities", inf
        nan = base.clone()
        nan[torch.rand(rows, cols, generator=generator) < 0.1] = float("nan")
        yield "nan", nan
        yield "half", (base * 64).floor().half()
        yield "negative", base - 0.5


@torch.no_grad()
def reference_sparsegpt_prune_(weight, hessian, sparsity, prune_n=0, prune_m=0, blocksize=128, percdamp=0.01):
    """The column loop as it was before the performance work (stable sort, [rows, count] layout)."""
    rows, cols = weight.shape
    w = weight.detach().to(dtype=torch.float32, copy=True)
    h = hessian.detach().to(device=w.device, dtype=torch.float32, copy=True)
    diagonal = torch.arange(cols, device=w.device)
    dead = torch.diag(h) == 0
    h[diagonal[dead], diagonal[dead]] = 1.0
    w[:, dead] = 0.0
    h[diagonal, diagonal] += percdamp * torch.mean(torch.diag(h))
    hinv = _upper_cholesky_of_inverse(h, percdamp)
    del h
    for start in range(0, cols, blocksize):
        end = min(start + blocksize, cols)
        count = end - start
        w1 = w[:, start:end].clone()
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[start:end, start:end]
        d1 = torch.diag(hinv1)
        mask1 = torch.zeros(w1.shape, dtype=torch.bool, device=w.device)
        if prune_n == 0:
            k = int(w1.numel() * sparsity)
            if k > 0:
                saliency = (w1**2 / d1.reshape(1, -1) ** 2).flatten()
                mask1.view(-1)[torch.sort(saliency, stable=True).indices[:k]] = True
        for i in range(count):
            if prune_n != 0 and i % prune_m == 0:
                saliency = w1[:, i : i + prune_m] ** 2 / d1[i : i + prune_m].reshape(1, -1) ** 2
                lowest = torch.sort(saliency, dim=1, stable=True).indices[:, :prune_n]
                mask1[:, i : i + prune_m].scatter_(1, lowest, True)
            col = w1[:, i]
            q = col.masked_fill(mask1[:, i], 0.0)
            q1[:, i] = q
            err = (col - q) / hinv1[i, i]
            w1[:, i:] -= err.unsqueeze(1) * hinv1[i, i:].unsqueeze(0)
            err1[:, i] = err
        w[:, start:end] = q1
        if end < cols:
            w[:, end:] -= err1 @ hinv[start:end, end:]
    weight.copy_(w.to(weight.dtype))


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    view = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}[a.dtype]
    return torch.equal(a.view(view), b.view(view))


def check_sparsegpt() -> int:
    generator = torch.Generator().manual_seed(1)
    checked = 0
    for rows, cols, blocksize in [(64, 96, 32), (48, 200, 64), (128, 256, 128), (96, 576, 128), (7, 130, 128)]:
        x = torch.randn(4 * cols, cols, generator=generator) * (torch.rand(cols, generator=generator) * 3)
        x[:, :3] = 0  # dead inputs
        hessian = 2 / 4 * x.t() @ x
        base = torch.randn(rows, cols, generator=generator)
        quantised = (base * 4).round() / 4  # ties in the saliency
        for weight, dtype, options in itertools.product(
            (base, quantised), (torch.float32, torch.bfloat16),
            ({"sparsity": 0.5}, {"sparsity": 0.7}, {"sparsity": 0.0}, {"sparsity": 0.5, "prune_n": 2, "prune_m": 4},
             {"sparsity": 0.0, "prune_n": 4, "prune_m": 8}),
        ):
            if options.get("prune_m") and (cols % options["prune_m"] or blocksize % options["prune_m"]):
                continue
            a, b = weight.to(dtype).clone(), weight.to(dtype).clone()
            sparsegpt_prune_(a, hessian, blocksize=blocksize, **options)
            reference_sparsegpt_prune_(b, hessian, blocksize=blocksize, **options)
            assert same_bits(a, b), ("sparsegpt", rows, cols, blocksize, dtype, options)
            checked += 1
    return checked


def main() -> None:
    generator = torch.Generator().manual_seed(0)
    checked = 0
    for (name, scores), sparsity in itertools.product(list(cases(generator)), [0.0, 0.01, 0.3, 0.5, 0.7, 0.999, 1.0]):
        got, want = row_mask(scores, sparsity), ref_row_mask(scores, sparsity)
        assert torch.equal(got, want), ("row_mask", name, tuple(scores.shape), sparsity)
        k = int(scores.numel() * sparsity)
        assert torch.equal(lowest_k_flat_mask(scores.float(), k), ref_flat_mask(scores, k)), ("flat", name, tuple(scores.shape), sparsity)
        got = magnitude_mask(scores, sparsity)
        assert torch.equal(got, ref_flat_mask(scores.float().abs(), k)), ("magnitude", name, tuple(scores.shape), sparsity)
        checked += 3
    for (name, scores), (n, m) in itertools.product(list(cases(generator)), [(2, 4), (4, 8), (5, 8), (1, 2)]):
        if scores.shape[1] % m:
            continue
        assert torch.equal(nm_mask(scores, n, m), ref_nm_mask(scores, n, m)), ("nm", name, n, m)
        checked += 1
    print(f"ok: {checked} mask comparisons identical to the stable-sort definitions")
    print(f"ok: {check_sparsegpt()} SparseGPT runs bit-identical to the previous column loop")


if __name__ == "__main__":
    main()
