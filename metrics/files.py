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
    rows = read_prediction_rows(predictions)
    report = score_predictions(rows, bertscore=bertscore, n_resamples=n_resamples, seed=seed)
    metrics_path = Path(out) if out is not None else predictions.with_name("metrics.json")
    examples_path = example_scores_path(metrics_path)
    payload = report.to_json()
    payload["predictions_file"] = str(predictions)
    payload["example_scores_file"] = examples_path.name
    write_example_scores(report, examples_path)
    atomic_write_json(metrics_path, payload)
    return ScoredFile(report, metrics_path, examples_path)
