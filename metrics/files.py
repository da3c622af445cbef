"""Scoring a predictions file and writing metrics.json + example_scores.jsonl beside it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from metrics.bertscore import BertScoreOptions
from metrics.predictions import read_prediction_rows
from metrics.scorer import ScoreReport, score_predictions
from spt_bench.io import atomic_write_json, atomic_write_text

EXAMPLE_SCORES_NAME = "example_scores.jsonl"


@dataclass
class ScoredFile:
    report: ScoreReport
    metrics_path: Path
    examples_path: Path


def example_scores_path(metrics_path: Path) -> Path:
    """example_scores.jsonl beside metrics.json; `<stem>.example_scores.jsonl` for other names."""
    if metrics_path.name == "metrics.json":
        return metrics_path.with_name(EXAMPLE_SCORES_NAME)
    return metrics_path.with_name(f"{metrics_path.stem}.{EXAMPLE_SCORES_NAME}")


def write_example_scores(report: ScoreReport, path: str | Path) -> None:
    """Per-example values and sufficient statistics, one JSON object a line (atomic)."""
    lines = [json.dumps(ex, ensure_ascii=False) for ex in report.per_example]
    atomic_write_text(path, "\n".join(lines) + "\n")


def output_path(predictions: Path, out: str | Path | None) -> Path:
    """Where `score` writes metrics.json. Beside the input by default - except inside a run
    folder, whose own metrics.json and example_scores.jsonl belong to its run: there the
    scores go to a new `scores/<time>/` folder of the run, and an explicit --out naming one of
    the run's result files is refused. Never overwrites another command's result."""
    from spt_bench.errors import ConfigError
    from spt_bench.run_folder import RunFolder

    if out is not None:
        path = Path(out)
        folder = RunFolder(path.parent)
        if folder.is_run() and path.name in (*folder.RESULT_FILES, folder.CONFIG):
            raise ConfigError(
                f"--out {path} would overwrite the run's own {path.name}; "
                f"name another file (default: {folder.path / folder.SCORES}/<time>/)"
            )
        return path
    folder = RunFolder(predictions.parent)
    if folder.is_run():
        return folder.new_scores_dir() / "metrics.json"
    return predictions.with_name("metrics.json")


def score_file(
    predictions: str | Path,
    *,
    out: str | Path | None = None,
    bertscore: BertScoreOptions | None = BertScoreOptions(),
    n_resamples: int = 1000,
    seed: int = 0,
) -> ScoredFile:
    """Score a predictions JSONL; write metrics.json (default: beside the input) and the
    per-example scores beside it, both atomically."""
    predictions = Path(predictions)
    metrics_path = output_path(predictions, out)
    rows = read_prediction_rows(predictions)
    report = score_predictions(rows, bertscore=bertscore, n_resamples=n_resamples, seed=seed)
    examples_path = example_scores_path(metrics_path)
    payload = report.to_json()
    payload["predictions_file"] = str(predictions)
    payload["example_scores_file"] = examples_path.name
    write_example_scores(report, examples_path)
    atomic_write_json(metrics_path, payload)
    return ScoredFile(report, metrics_path, examples_path)
