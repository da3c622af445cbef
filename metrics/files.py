"""Scoring a predictions file and writing metrics.json + example_scores.jsonl beside it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from metrics.bertscore import BertScoreOptions
from metrics.predictions import read_prediction_rows
from metrics.scorer import ScoreReport, score_predictions
from spt_bench.io import atomic_write_json, atomic_write_text
from spt_bench.run_folder import RunFolder

EXAMPLE_SCORES_NAME = RunFolder.EXAMPLE_SCORES
# Text-free per-example scores: what compare needs for paired tests and re-derived CIs, with no
# dialogue text at all (safe to commit next to metrics.json; docs/metrics.md).
EXAMPLE_STATS_NAME = RunFolder.EXAMPLE_STATS
# Fields of a per-example score row that are (or may quote) text.
TEXT_FIELDS = ("prediction", "reference", "persona", "history", "context", "input")


@dataclass
class ScoredFile:
    report: ScoreReport
    metrics_path: Path
    examples_path: Path


def example_scores_path(metrics_path: Path) -> Path:
    """example_scores.jsonl beside metrics.json; `<stem>.example_scores.jsonl` for other names."""
    if metrics_path.name == RunFolder.METRICS:
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
        return folder.new_scores_dir() / RunFolder.METRICS
    return predictions.with_name(RunFolder.METRICS)


def example_stats_rows(per_example: list[dict]) -> list[dict]:
    """Per-example rows without text: ids, dialog ids, turns, selected prompt, every
    per-example metric and the corpus metrics' sufficient statistics (BLEU counts, NLL sums,
    distinct-n as n-gram counts and run-local n-gram ids instead of the prediction)."""
    from metrics.table import ScoreTable

    grams = ScoreTable.from_per_example(per_example).textfree_ngrams()
    out = []
    for row, g in zip(per_example, grams, strict=True):
        clean = {
            k: v for k, v in row.items() if k not in TEXT_FIELDS and not k.startswith("ngrams")
        }
        clean.update(g)
        out.append(clean)
    return out


def write_example_stats(per_example: list[dict], path: str | Path) -> None:
    """Write the text-free per-example score file (atomic), e.g. example_stats.jsonl."""
    lines = [json.dumps(ex, ensure_ascii=False) for ex in example_stats_rows(per_example)]
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_example_scores(run_dir: str | Path) -> tuple[list[dict], Path] | None:
    """A run folder's per-example scores: example_scores.jsonl (with text) when present, else
    the text-free example_stats.jsonl; None when it has neither."""
    from spt_bench.io import read_jsonl

    for name in (EXAMPLE_SCORES_NAME, EXAMPLE_STATS_NAME):
        path = Path(run_dir) / name
        if path.is_file():
            return list(read_jsonl(path)), path
    return None


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
    if metrics_path.name == RunFolder.METRICS:
        write_example_stats(report.per_example, metrics_path.with_name(EXAMPLE_STATS_NAME))
    atomic_write_json(metrics_path, payload)
    return ScoredFile(report, metrics_path, examples_path)
