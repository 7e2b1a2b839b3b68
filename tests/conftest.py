"""Shared fixtures: tiny models, a tiny data directory, an isolated cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from owl.testing import FAMILIES, save_tiny_model, tiny_model, tiny_tokenizer, write_tiny_data_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("OWL_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="session", params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture()
def model(family, tokenizer):
    return tiny_model(family, vocab_size=len(tokenizer))


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    return write_tiny_data_dir(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {f: save_tiny_model(root / f, family=f) for f in FAMILIES}


@pytest.fixture()
def owl_env(monkeypatch, tiny_data_dir, tmp_path):
    """OWL_DATA_DIR at the tiny data and a fresh cache for this test."""
    monkeypatch.setenv("OWL_DATA_DIR", str(tiny_data_dir))
    monkeypatch.setenv("OWL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path
