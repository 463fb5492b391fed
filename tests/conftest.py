"""Shared test set-up: no network, no display, tiny generated datasets, and helpers to run the engine."""

from __future__ import annotations

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["LORA_STUDIO_CACHE"] = tempfile.mkdtemp(prefix="lora-studio-test-cache-")  # not the user's cache

import pytest  # noqa: E402

from tests.support.engine import make_dataset  # noqa: E402


@pytest.fixture
def dataset_dir(tmp_path):
    """Six small captioned images of coloured shapes."""
    return make_dataset(tmp_path / "dataset", count=6)
