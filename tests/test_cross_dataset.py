"""Cross-dataset evaluation (`--eval-data`): train on one source, test on another's test split;
the run folder records both, and compare will not mix runs evaluated on different data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from spt_bench.compare.runs import load_run
from spt_bench.compare.stats import ComparisonRefused, check_comparable
from spt_bench.data import write_examples_jsonl
from spt_bench.data.example import Example
from tests.run_helpers import make_run

runner = CliRunner()
FAST = ["--model", "tiny-random", "--no-bertscore", "--no-model-metrics", "--method", "lora",
        "--max-steps", "1", "--max-new-tokens", "3", "--dev-limit", "1"]  # fmt: skip


def _eval_fixture(path: Path) -> Path:
    """10 dialogues of 2 turns in canonical JSONL, unlike the sample (its own words and ids)."""
    examples = [
        Example(
            f"x{d}",
            t,
            (f"i grow {d} tomatoes.",),
            tuple(f"q{d} {k}" for k in range(2 * t + 1)),
            f"answer {d} {t}",
        )  # fmt: skip
        for d in range(10)
        for t in range(2)
    ]
    write_examples_jsonl(examples, path)
    return path


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_trained_on_the_sample_scores_the_eval_data_test_split_and_records_both(
    tmp_path: Path,
) -> None:
    fixture = _eval_fixture(tmp_path / "garden.jsonl")
    res = runner.invoke(app, ["run", *FAST, "--eval-data", str(fixture), "--out",
                              str(tmp_path / "cross")], catch_exceptions=False)  # fmt: skip
    assert res.exit_code == 0, res.output
    run = tmp_path / "cross"
    preds = _rows(run / "predictions.jsonl")
    # convai2-valid-split of the 10 fixture dialogues: the last 1 (10%) is the test split
    assert {p["dialog_id"] for p in preds} <= {f"x{d}" for d in range(10)}
    assert len(preds) == 2 and all(p["reference"].startswith("answer") for p in preds)
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["source"] is None and config["data"]["eval_data"] == str(fixture)
    inputs = json.loads((run / "inputs.json").read_text())
    assert set(inputs["data"]) == {"source", "eval_data"}
    assert inputs["data"]["eval_data"]["path"] == str(fixture)
    assert inputs["data"]["source"]["kind"] == "sample"
    data = json.loads((run / "metrics.json").read_text())
    assert data["n"] == 2

    # a run evaluated on other data (the synthetic run folder of the compare tests): compare
    # refuses to mix them unless forced
    other = make_run(tmp_path, "other", method="lora", method_options={"lora_r": 8})
    runs = [load_run(other), load_run(run)]
    with pytest.raises(ComparisonRefused, match=r"evaluated on garden.jsonl vs synthetic.*--force"):
        check_comparable(runs)
    assert check_comparable(runs, force=True)[0].startswith("forced:")


def test_eval_data_test_split_is_the_one_an_in_domain_run_on_it_uses(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from spt_bench.data.splits import load_splits, splits_for_config

    fixture = str(_eval_fixture(tmp_path / "garden.jsonl"))
    data = SimpleNamespace(source=None, train_data=None, test_data=None, eval_data=fixture,
                           split_protocol="convai2-valid-split", split_seed=0, variant=None,
                           msc_history="none")  # fmt: skip
    cross = splits_for_config(data)
    assert cross.test == load_splits(fixture).test  # same ids: the two runs compare directly
    assert cross.train == load_splits(None).train  # trained on the sample
    assert cross.description["eval"]["data"] == fixture
