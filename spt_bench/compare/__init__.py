"""`spt-bench compare`: runs as rows, metrics as columns, with CIs, gains and significance.

Modules: `runs` (reading run folders; shared by compare, plots and report), `labels` (run labels
and seed groups), `stats` (gains, p-values, Holm, comparability checks), `build` (the rows of a
comparison), `table` (the column model the human-readable formats draw) and `render` (markdown,
LaTeX, CSV, JSON, rich; the `compare` command).

Reads only finished run folders (those with `metrics.json`); every number shown comes from a
run's `metrics.json` (values, CIs), is computed here from its per-example scores
(`example_scores.jsonl`, or the text-free `example_stats.jsonl`), or is a mean/std over the
seeds of one setting, so each cell traces back to files in the run folders.

Definitions (also in docs/reports.md):
- rows: runs that differ only in their training seed form one row (mean over seeds, sample
  std, per-seed values in json/csv); `group_seeds=False` gives one row per run.
- relative gain of a row over the baseline, per metric, in percent:
  100 * (row - baseline) / |baseline|, sign-flipped for lower-is-better metrics so that a
  positive gain always means "better"; undefined when the baseline value is 0.
- AVG: the SPT paper's summary figure, the mean relative gain over its ten metrics
  (F1, BLEU, ROUGE-1/2/L, BERTScore F1/P/R, Dist-1/2). The paper's F1 is unnormalised, so AVG
  uses our `f1_raw` (not the ParlAI-normalised `f1`).
- p-values: the paired bootstrap over the test examples when the row and the baseline have one
  seed each; with several seeds on a side, a t-test on the per-seed values (metrics.ttest:
  Welch's, calibrated at the seed level; docs/metrics.md); Holm-adjusted across the metrics of
  a row by default (`p_adjust_scope="table"`: across every p-value of the table); `*` marks
  p < 0.05 and `**` p < 0.01. The legend names each row's test.
- example sets: ids must match, and so must the references where the per-example files carry
  their hashes (`reference_sha`); `force` compares anyway, the paired statistics on the
  examples that match.
"""

from spt_bench.compare.build import Comparison, ComparisonRow, build_comparison
from spt_bench.compare.labels import RunGroup, assign_labels, group_runs
from spt_bench.compare.render import compare_command, output_format, render, render_rich
from spt_bench.compare.runs import RunRecord, discover_runs, load_run, load_runs
from spt_bench.compare.stats import (
    ComparisonRefused,
    adjust_p_values,
    paired_p_values,
    relative_gain,
    row_p_values,
)
from spt_bench.compare.table import SHORT_NAMES, fmt_value

__all__ = [
    "SHORT_NAMES",
    "Comparison",
    "ComparisonRefused",
    "ComparisonRow",
    "RunGroup",
    "RunRecord",
    "adjust_p_values",
    "assign_labels",
    "build_comparison",
    "compare_command",
    "discover_runs",
    "fmt_value",
    "group_runs",
    "load_run",
    "load_runs",
    "output_format",
    "paired_p_values",
    "relative_gain",
    "render",
    "render_rich",
    "row_p_values",
]
