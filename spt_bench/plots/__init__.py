"""Plots from run folders: turn analysis, SPT prompt selection, training curves.

matplotlib is imported lazily and used through `matplotlib.figure.Figure` (Agg canvas, no pyplot
state), so plotting works headless and never changes a caller's backend. Colours are the
Okabe-Ito palette (colour-blind safe) with distinct markers/line styles, so lines stay apart in
greyscale too. The format follows the output extension: .png (default), .svg or .pdf.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from spt_bench.compare.runs import load_runs, load_single_run, load_unfinished_run
from spt_bench.metrics.turns import turn_bucket_of
from spt_bench.plots.common import OKABE_ITO, _image_format, bootstrap_mean_ci
from spt_bench.plots.prompts import plot_prompts, prompt_usage
from spt_bench.plots.training import plot_training, training_curves, training_figure
from spt_bench.plots.turns import degenerate_turns_note, plot_turns, turn_series
from spt_bench.run_folder import output_file

__all__ = [
    "OKABE_ITO",
    "bootstrap_mean_ci",
    "degenerate_turns_note",
    "plot_prompts",
    "plot_training",
    "plot_turns",
    "prompt_usage",
    "training_curves",
    "training_figure",
    "turn_bucket_of",
    "turn_series",
]


# ------------------------------------------------------------------------------------ commands


def plot_turns_command(
    specs: Sequence[str | os.PathLike], metrics: Sequence[str], out: str | os.PathLike
) -> Path:
    """`spt-bench plot turns`: runs from folders/globs (incomplete ones skipped with a warning)."""
    out = output_file(out, "turns.png")
    _image_format(out)
    runs = load_runs(specs, warn=_warn)
    metrics = list(dict.fromkeys(metrics))
    path = plot_turns(runs, metrics, out)
    for run in runs:
        note = degenerate_turns_note(turn_series(run, metrics[0]), int(run.metrics.get("n", 0)))
        if note:
            _warn(note)
    return path


def plot_prompts_command(
    spec: str | os.PathLike, out: str | os.PathLike, *, metric: str = "f1"
) -> Path:
    out = output_file(out, "prompts.png")
    _image_format(out)
    return plot_prompts(load_single_run(spec), out, metric=metric)


def plot_training_command(
    spec: str | os.PathLike, out: str | os.PathLike, *, panels: Sequence[str] | None = None
) -> Path:
    """Works on an unfinished run too (only train_log.jsonl is needed)."""
    out = output_file(out, "loss.png")
    _image_format(out)
    return plot_training(load_unfinished_run(spec), out, panels=panels)


def _warn(message: str) -> None:
    import sys

    print(f"warning: {message}", file=sys.stderr)
