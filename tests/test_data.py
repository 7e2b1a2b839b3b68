"""The calibration sampler draws exactly what the reference draws; data sources fail clearly."""

import random

import pytest
import torch

from owl.data import (
    TextSource,
    TokenCache,
    calibration_windows,
    data_dir_from_env,
    sample_windows_from_documents,
    wikitext2_test_tokens,
)
from owl.errors import OwlError


def _reference_sampler(documents, tokenizer, nsamples, seqlen, seed):
    """The reference code's loop, with the global RNG, as the guide describes it."""
    random.seed(seed)
    out = []
    for _ in range(nsamples):
        while True:
            i = random.randint(0, len(documents) - 1)
            enc = tokenizer(documents[i], return_tensors="pt")
            if enc.input_ids.shape[1] > seqlen:
                break
        j = random.randint(0, enc.input_ids.shape[1] - seqlen - 1)
        out.append(enc.input_ids[:, j : j + seqlen])
    return torch.cat(out)


def test_sampler_matches_reference_and_leaves_global_rng_alone(tokenizer, tiny_data_dir):
    documents, _ = TextSource(tiny_data_dir).c4_documents()
    random.seed(123)
    before = random.random()
    random.seed(123)
    ours = sample_windows_from_documents(documents, tokenizer, nsamples=6, seqlen=40, seed=0)
    assert random.random() == before  # our sampler used a local RNG
    assert torch.equal(ours, _reference_sampler(documents, tokenizer, 6, 40, 0))
    other = sample_windows_from_documents(documents, tokenizer, nsamples=6, seqlen=40, seed=1)
    assert not torch.equal(ours, other)


def test_seqlen_longer_than_every_document_is_a_clear_error(tokenizer):
    with pytest.raises(OwlError, match="--seqlen 500 is too long"):
        sample_windows_from_documents(["short text", "another short one"], tokenizer, 2, 500, 0)


def test_data_dir_env(monkeypatch, tmp_path):
    monkeypatch.delenv("OWL_DATA_DIR", raising=False)
    assert data_dir_from_env() is None
    monkeypatch.setenv("OWL_DATA_DIR", str(tmp_path / "nope"))
    with pytest.raises(OwlError, match="OWL_DATA_DIR"):
        data_dir_from_env()


def test_missing_local_files_are_named(tmp_path):
    with pytest.raises(OwlError, match="c4/"):
        TextSource(tmp_path).c4_documents()
    with pytest.raises(OwlError, match="wikitext-2-raw-v1/test.jsonl"):
        TextSource(tmp_path).wikitext_rows("test")


def test_no_hub_and_no_data_dir_names_both_ways(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    for call in (lambda: TextSource(None).c4_documents(), lambda: TextSource(None).wikitext_rows("test")):
        with pytest.raises(OwlError) as info:
            call()
        message = str(info.value)
        assert "Hub" in message and "OWL_DATA_DIR" in message and "\n" not in message


def test_tokens_are_cached(tokenizer, tiny_data_dir, tmp_path):
    source = TextSource(tiny_data_dir)
    cache = TokenCache(tmp_path, tokenizer)
    first, _ = calibration_windows(tokenizer, "c4", 4, 32, 0, source, cache)
    ids, _ = wikitext2_test_tokens(tokenizer, source, cache)
    calls = []
    original = type(tokenizer).__call__
    try:
        type(tokenizer).__call__ = lambda self, text, *a, **k: calls.append(text) or original(self, text, *a, **k)
        again, _ = calibration_windows(tokenizer, "c4", 4, 32, 0, TextSource(tiny_data_dir), TokenCache(tmp_path, tokenizer))
        ids_again, _ = wikitext2_test_tokens(tokenizer, source, TokenCache(tmp_path, tokenizer))
    finally:
        type(tokenizer).__call__ = original
    assert torch.equal(first, again) and torch.equal(ids, ids_again)
    assert set(calls) <= {"probe text"}  # only the fingerprint probe, no re-tokenisation


def test_wikitext_calibration_uses_train_split(tokenizer, tiny_data_dir, tmp_path):
    windows, source = calibration_windows(tokenizer, "wikitext2", 3, 16, 0, TextSource(tiny_data_dir), TokenCache(tmp_path, tokenizer))
    assert windows.shape == (3, 16) and "train" in source
