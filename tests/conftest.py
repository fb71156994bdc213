"""Session fixtures shared by the suite: local data dir, the converted SmolLM2, tiny random models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Tests read the real prompt sets and benchmarks beside the checkout; never the Hub.
os.environ.setdefault("DISTILL_DATA_DIR", str(ROOT.parent / "shared" / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ["DISTILL_DATA_DIR"])
    assert (path / "gsm8k").is_dir(), f"DISTILL_DATA_DIR={path} does not hold the shared data sets"
    return path


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The embedded SmolLM2-135M-Instruct as an HF folder (converted once, cached under DISTILL_HOME)."""
    from distill.models import fetch_embedded

    return fetch_embedded("smollm2-135m")
