"""Scoring a predictions file and writing metrics.json + example_scores.jsonl beside it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from spt_bench.inputs import file_sha256
from spt_bench.io import atomic_write_json, atomic_write_text
from spt_bench.metrics.bertscore import BertScoreOptions
from spt_bench.metrics.model_scores import ModelScoring
from spt_bench.metrics.predictions import read_prediction_rows
from spt_bench.metrics.scorer import ScoreReport, score_predictions
from spt_bench.run_folder import RunFolder, enclosing_run_folder

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
    return metrics_path.with_name(_prefixed(metrics_path, EXAMPLE_SCORES_NAME))


def write_example_scores(report: ScoreReport, path: str | Path) -> None:
    """Per-example values and sufficient statistics, one JSON object a line (atomic)."""
    lines = [json.dumps(ex, ensure_ascii=False) for ex in report.per_example]
    atomic_write_text(path, "\n".join(lines) + "\n")


def example_stats_path(metrics_path: Path) -> Path:
    """example_stats.jsonl beside metrics.json; `<stem>.example_stats.jsonl` for other names."""
    return metrics_path.with_name(_prefixed(metrics_path, EXAMPLE_STATS_NAME))


def _prefixed(metrics_path: Path, name: str) -> str:
    """`name` for metrics.json; `<stem>.name` for `<stem>.metrics.json` or `<stem>.json`."""
    if metrics_path.name == RunFolder.METRICS:
        return name
    stem = metrics_path.name.removesuffix("." + RunFolder.METRICS)
    return f"{Path(stem).stem if stem == metrics_path.name else stem}.{name}"


def output_path(predictions: Path, out: str | Path | None) -> Path | None:
    """Where `score` writes metrics.json; None: a new `scores/<time>/` folder of the run whose
    predictions these are (made when the scores are written). A run folder's files belong to
    its run, so an --out inside any run folder is refused; a standalone file's scores go
    beside it as `<stem>.metrics.json`, so two files scored in one folder never replace each
    other's; an --out that holds the scores of another predictions file is refused."""
    from spt_bench.errors import ConfigError

    if out is None:
        if RunFolder(predictions.parent).is_run():
            return None
        return predictions.with_name(f"{predictions.stem}.{RunFolder.METRICS}")
    path = Path(out)
    run = enclosing_run_folder(path.parent)
    if run is not None:
        raise ConfigError(
            f"--out {path} is inside run folder {run.path}, whose files only its run writes; "
            f"leave out --out (a run's predictions are scored into "
            f"{run.path / run.SCORES}/<time>/) or write elsewhere"
        )
    if path.is_file():
        try:
            previous = json.loads(path.read_text(encoding="utf-8")).get("predictions_sha256")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            raise ConfigError(f"--out {path} exists and is not a metrics file") from None
        if previous and previous != file_sha256(predictions):
            raise ConfigError(
                f"--out {path} holds the scores of another predictions file; choose another --out"
            )
    return path


def model_scores_cache_path(predictions: Path, metrics_path: Path | None) -> Path:
    """The model-score cache of `score`: RUN/scores/model_scores.jsonl for a run's predictions
    (scores/ is `score`'s own part of a run folder), else beside the metrics file."""
    if metrics_path is None:
        return predictions.parent / RunFolder.SCORES / RunFolder.MODEL_SCORES
    return metrics_path.with_name(_prefixed(metrics_path, RunFolder.MODEL_SCORES))


def example_stats_rows(per_example: list[dict]) -> list[dict]:
    """Per-example rows without text: ids, dialog ids, turns, selected prompt, every
    per-example metric and the corpus metrics' sufficient statistics (BLEU counts, NLL sums,
    distinct-n as n-gram counts and run-local n-gram ids instead of the prediction)."""
    from spt_bench.metrics.table import ScoreTable

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
    model_scoring: ModelScoring | None = None,
) -> ScoredFile:
    """Score a predictions JSONL; write metrics.json and the per-example scores (see
    `output_path` for where), atomically. Bad output places are refused before scoring.
    Model-based scores are cached in `model_scores_cache_path(...)` (reused across scorings)."""
    import dataclasses

    predictions = Path(predictions)
    metrics_path = output_path(predictions, out)
    rows = read_prediction_rows(predictions)
    if model_scoring is not None and model_scoring.cache is None:
        cache = model_scores_cache_path(predictions, metrics_path)
        model_scoring = dataclasses.replace(model_scoring, cache=cache)
    report = score_predictions(
        rows, bertscore=bertscore, n_resamples=n_resamples, seed=seed, model_scoring=model_scoring
    )
    payload = report.to_json()
    payload["predictions_file"] = str(predictions.resolve())
    payload["predictions_sha256"] = file_sha256(predictions)

    def write(metrics: Path) -> None:
        payload["example_scores_file"] = example_scores_path(metrics).name
        write_example_scores(report, example_scores_path(metrics))
        write_example_stats(report.per_example, example_stats_path(metrics))
        atomic_write_json(metrics, payload)

    if metrics_path is None:  # a run's predictions: a fresh scores/<time>/ of the run
        dest = RunFolder(predictions.parent).publish_scores(lambda d: write(d / RunFolder.METRICS))
        metrics_path = dest / RunFolder.METRICS
    else:
        write(metrics_path)
    return ScoredFile(report, metrics_path, example_scores_path(metrics_path))
