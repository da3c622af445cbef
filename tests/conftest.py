"""Shared fixtures: the real ConvAI2 file from ../shared (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONVAI2_FILE = "valid_self_original_no_cands.txt"


def convai2_dir() -> Path:
    env = os.environ.get("SPT_BENCH_CONVAI2_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data" / "convai2"


@pytest.fixture(scope="session")
def convai2_valid() -> Path:
    """Path to ConvAI2 valid_self_original_no_cands.txt; missing data is a failure, not a skip."""
    path = convai2_dir() / CONVAI2_FILE
    assert path.is_file(), (
        f"ConvAI2 file not found at {path}; set SPT_BENCH_CONVAI2_DIR to the folder holding it"
    )
    return path


@pytest.fixture(scope="module")
def single_thread():
    """Models this small run fastest on one thread (and do not stall when cores are shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
