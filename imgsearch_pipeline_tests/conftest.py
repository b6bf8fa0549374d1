"""Shared fixtures: generated datasets, a tiny SigLIP, and an isolated pipeline home."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Converted OpenVINO models go to the default cache ($XDG_CACHE_HOME): a folder of this run,
# not the user's ~/.cache (subprocesses the tests start inherit it).
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="imgsearch-test-cache-")

from imgsearch_pipeline.sample_data import write_dataset  # noqa: E402

from .tiny_models import save_tiny_siglip, train_spiece  # noqa: E402


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory) -> Path:
    """300 images of 96x96 in 2 shards, with near-duplicate groups and exact copies."""
    folder = tmp_path_factory.mktemp("sample")
    write_dataset(folder, images=300, shards=2, size=96, seed=3, exact_duplicates=6,
                  row_group_rows=64)
    return folder / "data"


@pytest.fixture(scope="session")
def spiece_model() -> bytes:
    """A sentencepiece vocabulary trained by sentencepiece's own trainer, once per session."""
    return train_spiece()


@pytest.fixture(scope="session")
def tiny_siglip(tmp_path_factory, spiece_model) -> Path:
    """A tiny SigLIP in the Hub's file layout of google/siglip-base-patch16-512 (tiny_models.py)."""
    return save_tiny_siglip(tmp_path_factory.mktemp("tiny-siglip"), spiece_model)


@pytest.fixture
def pipeline_home(tmp_path, monkeypatch) -> Path:
    """A fresh IMGSEARCH_HOME for one test."""
    home = tmp_path / "var"
    monkeypatch.setenv("IMGSEARCH_HOME", str(home))
    return home


def pytest_unconfigure(config) -> None:
    shutil.rmtree(os.environ["XDG_CACHE_HOME"], ignore_errors=True)
