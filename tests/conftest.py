"""Shared fixtures: the real ConvAI2 file from ../shared (never copied into the repo), and the
tiny runs that many tests read, each made once per session (tests that change one work on a
`shutil.copytree` copy; a test that writes into the shared folder fails at the session's end)."""

from __future__ import annotations

import hashlib
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


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _shared_run(folder: Path):
    """Yield a finished run folder; at the session's end, fail if any test changed it."""
    before = _digests(folder)
    yield folder
    assert _digests(folder) == before, f"a test changed the shared run {folder}; copy it first"


# The tiny full-ft run as the CLI makes it: 2 steps with a checkpoint at each, 2 dev and 3 test
# examples of the bundled sample, 4 new tokens, no BERTScore and no model metrics.
FULL_FT_RUN = ["--model", "tiny-random", "--method", "full-ft", "--max-steps", "2",
               "--save-every", "1", "--dev-limit", "2", "--eval-limit", "3",
               "--max-new-tokens", "4", "--no-bertscore", "--no-model-metrics"]  # fmt: skip


@pytest.fixture(scope="session")
def finished_full_ft(tmp_path_factory) -> Path:
    """A finished tiny full-ft run (`spt-bench run` with FULL_FT_RUN), made once per session."""
    from typer.testing import CliRunner

    from cli import app

    root = tmp_path_factory.mktemp("shared-full-ft")
    res = CliRunner().invoke(app, ["run", *FULL_FT_RUN, "--out", str(root), "--name", "base"])
    assert res.exit_code == 0, res.output
    yield from _shared_run(root / "base")


@pytest.fixture(scope="session")
def finished_spt(tmp_path_factory) -> Path:
    """A finished tiny SPT run through the harness (tiny-random, K=4, 2 steps with a dev
    evaluation at each, 6 test rows of 3 new tokens, no BERTScore and no model metrics), made
    once per session."""
    from spt_bench.config import config_from_dict
    from spt_bench.runner import run

    config = config_from_dict(
        dict(
            method="spt",
            model="tiny-random",
            max_steps=2,
            train_limit=4,
            dev_limit=2,
            eval_limit=6,
            batch_size=2,
            eval_every=1,
            max_new_tokens=3,
            bertscore=False,
            model_metrics=False,
            out=str(tmp_path_factory.mktemp("shared-spt")),
            name="spt",
        )
    )
    yield from _shared_run(run(config, progress=False).run_dir)
