"""Calibration and evaluation data: C4 and WikiText-2, from the Hub or from ``OWL_DATA_DIR``.

The calibration sampler is the reference code's, draw for draw, with a local RNG instead of the
global one. Tokenised results are cached on disk, keyed by the tokenizer's vocabulary and the
data source, so a second run does not tokenise again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from pathlib import Path

import torch

from owl.errors import OwlError

log = logging.getLogger(__name__)

C4_HUB_FILE = "en/c4-train.00000-of-01024.json.gz"
C4_LOCAL_GLOB = "c4-train.00000-of-01024*.json*"
WIKITEXT_CONFIG = "wikitext-2-raw-v1"


def data_dir_from_env() -> Path | None:
    value = os.environ.get("OWL_DATA_DIR")
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise OwlError(f"OWL_DATA_DIR={value!r} is not a directory; point it at a folder laid out like shared/data")
    return path


def _read_jsonl_texts(path: Path) -> list[str]:
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle if line.strip()]


def _no_source_error(what: str, local_hint: str, exc: Exception) -> OwlError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return OwlError(
        f"cannot load {what}: the Hugging Face Hub is unreachable ({reason[:120]}) and OWL_DATA_DIR is not set; "
        f"either allow Hub access or set OWL_DATA_DIR to a folder holding {local_hint}"
    )


class TextSource:
    """Where the texts come from, with a fingerprint for caches and result files."""

    def __init__(self, data_dir: Path | None = None):
        self.data_dir = data_dir

    def describe(self, what: str) -> str:
        if self.data_dir is None:
            return {"c4": f"hub:allenai/c4/{C4_HUB_FILE}", "wikitext2": f"hub:wikitext/{WIKITEXT_CONFIG}"}[what]
        return f"local:{self.data_dir}"

    def c4_documents(self) -> tuple[list[str], str]:
        """C4 training documents in file order, and a description of their source."""
        if self.data_dir is not None:
            matches = sorted((self.data_dir / "c4").glob(C4_LOCAL_GLOB))
            if not matches:
                raise OwlError(f"OWL_DATA_DIR={self.data_dir} has no c4/{C4_LOCAL_GLOB}; see shared/data/README.md for the layout")
            return _read_jsonl_texts(matches[0]), f"local:{matches[0].name}"
        try:
            import datasets

            # Never the config name 'allenai--c4': current datasets rejects it.
            rows = datasets.load_dataset("allenai/c4", data_files={"train": C4_HUB_FILE}, split="train")
        except Exception as exc:  # noqa: BLE001 - any failure means no Hub
            raise _no_source_error("C4", f"c4/{C4_LOCAL_GLOB}", exc) from None
        return list(rows["text"]), f"hub:allenai/c4/{C4_HUB_FILE}"

    def wikitext_rows(self, split: str) -> tuple[list[str], str]:
        """WikiText-2 raw rows of a split (``train``, ``validation``, ``test``), empty rows included."""
        if self.data_dir is not None:
            path = self.data_dir / WIKITEXT_CONFIG / f"{split}.jsonl"
            if not path.exists():
                raise OwlError(f"OWL_DATA_DIR={self.data_dir} has no {WIKITEXT_CONFIG}/{split}.jsonl (the WikiText-2 {split} split)")
            return _read_jsonl_texts(path), f"local:{WIKITEXT_CONFIG}/{split}.jsonl"
        try:
            import datasets

            rows = datasets.load_dataset("wikitext", WIKITEXT_CONFIG, split=split)
        except Exception as exc:  # noqa: BLE001
            raise _no_source_error(f"WikiText-2 {split}", f"{WIKITEXT_CONFIG}/{split}.jsonl", exc) from None
        return list(rows["text"]), f"hub:wikitext/{WIKITEXT_CONFIG}/{split}"


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of the vocabulary and special-token behaviour (for cache keys)."""
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    probe = tokenizer("probe text").input_ids
    digest = hashlib.sha256((vocab + repr(probe) + type(tokenizer).__name__).encode()).hexdigest()
    return digest[:16]


def _tokenize(tokenizer, text: str) -> list[int]:
    # Default special tokens, as the reference code tokenises.
    return tokenizer(text, return_tensors="pt").input_ids[0].tolist()


def sample_windows_from_documents(
    documents: list[str], tokenizer, nsamples: int, seqlen: int, seed: int
) -> torch.Tensor:
    """The reference C4 sampler: ``[nsamples, seqlen]`` token windows.

    ``random.Random(seed)``; per sample: draw a document index until the document has more than
    ``seqlen`` tokens, then a start in ``[0, n_tokens - seqlen - 1]``. Same draws as the
    reference's ``random.seed(seed); random.randint(...)``.
    """
    rng = random.Random(seed)
    token_cache: dict[int, list[int]] = {}
    too_short: set[int] = set()
    windows = []
    for _ in range(nsamples):
        while True:
            index = rng.randint(0, len(documents) - 1)
            if index not in token_cache:
                token_cache[index] = _tokenize(tokenizer, documents[index])
            ids = token_cache[index]
            if len(ids) > seqlen:
                break
            too_short.add(index)
            if len(too_short) == len(documents):
                longest = max(len(t) for t in token_cache.values())
                raise OwlError(
                    f"--seqlen {seqlen} is too long for the calibration data: no document has more than {seqlen} tokens "
                    f"(longest: {longest}); use --seqlen below {longest}"
                )
        start = rng.randint(0, len(ids) - seqlen - 1)
        windows.append(ids[start : start + seqlen])
    return torch.tensor(windows, dtype=torch.long)


def sample_windows_from_stream(token_ids: torch.Tensor, nsamples: int, seqlen: int, seed: int) -> torch.Tensor:
    """The reference WikiText-2 calibration sampler: random windows of one long token stream."""
    total = token_ids.numel()
    if total <= seqlen + 1:
        raise OwlError(f"--seqlen {seqlen} is too long for the calibration text ({total} tokens)")
    rng = random.Random(seed)
    starts = [rng.randint(0, total - seqlen - 1) for _ in range(nsamples)]
    return torch.stack([token_ids[s : s + seqlen] for s in starts])


class TokenCache:
    """Tokenised data on disk: ``cache_dir/tokens/<tokenizer>/<key>.pt``."""

    def __init__(self, cache_dir: Path, tokenizer):
        self.root = Path(cache_dir) / "tokens" / tokenizer_fingerprint(tokenizer)

    def get_or_compute(self, key: str, compute):
        path = self.root / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.pt"
        if path.exists():
            log.info("tokens from cache %s", path)
            return torch.load(path)
        value = compute()
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")  # per process: jobs may fill the same key at once
        torch.save(value, tmp)
        os.replace(tmp, path)
        return value


def calibration_windows(
    tokenizer, dataset: str, nsamples: int, seqlen: int, seed: int, source: TextSource, cache: TokenCache
) -> tuple[torch.Tensor, str]:
    """``([nsamples, seqlen] token ids, source description)`` for ``c4`` or ``wikitext2`` (train)."""
    what = "c4" if dataset == "c4" else "wikitext2"
    key = f"calib|{dataset}|{source.describe(what)}|{nsamples}|{seqlen}|{seed}"

    def compute():
        if dataset == "c4":
            documents, described = source.c4_documents()
            return {"windows": sample_windows_from_documents(documents, tokenizer, nsamples, seqlen, seed), "source": described}
        rows, described = source.wikitext_rows("train")
        stream = torch.tensor(_tokenize(tokenizer, " ".join(rows)), dtype=torch.long)
        return {"windows": sample_windows_from_stream(stream, nsamples, seqlen, seed), "source": described}

    value = cache.get_or_compute(key, compute)
    return value["windows"], value["source"]


def wikitext2_test_tokens(tokenizer, source: TextSource, cache: TokenCache) -> tuple[torch.Tensor, str]:
    """The WikiText-2 raw test split, rows joined with blank lines, tokenised once (1-D ids)."""
    return wikitext2_tokens(tokenizer, source, cache, "test")


def wikitext2_tokens(tokenizer, source: TextSource, cache: TokenCache, split: str) -> tuple[torch.Tensor, str]:
    """A WikiText-2 raw split (``test``: what is reported; ``validation``: what is tuned on), rows
    joined with blank lines, tokenised once (1-D ids)."""
    key = f"eval|wikitext2-{split}|{source.describe('wikitext2')}"

    def compute():
        rows, described = source.wikitext_rows(split)
        return {"ids": torch.tensor(_tokenize(tokenizer, "\n\n".join(rows)), dtype=torch.long), "source": described}

    value = cache.get_or_compute(key, compute)
    return value["ids"], value["source"]
