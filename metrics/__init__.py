"""spt-bench metrics: one scorer for every method and for any predictions file.

    from spt_bench.metrics import score_predictions, ScoreReport, BertScoreOptions, paired_bootstrap,
                        METRICS, render_score_report

Scoring a file into a run folder (`metrics.files`: score_file, write_example_scores, ...)
is imported from that module: it depends on the harness's run folders, which this package's
core does not.

Importing this package is cheap (numpy only); sacrebleu, rouge-score, bert-score and torch load
inside the functions that use them. Definitions of every metric: docs/metrics.md.
"""

from spt_bench.metrics.bertscore import BertScoreOptions
from spt_bench.metrics.bootstrap import bootstrap_ci, paired_bootstrap
from spt_bench.metrics.predictions import read_prediction_rows, validate_rows
from spt_bench.metrics.registry import METRICS, Metric, MetricRegistry
from spt_bench.metrics.render import render_score_report
from spt_bench.metrics.scorer import ScoreReport, score_predictions
from spt_bench.metrics.table import ScoreTable

__all__ = [
    "METRICS",
    "BertScoreOptions",
    "Metric",
    "MetricRegistry",
    "ScoreReport",
    "ScoreTable",
    "bootstrap_ci",
    "paired_bootstrap",
    "read_prediction_rows",
    "render_score_report",
    "score_predictions",
    "validate_rows",
]
