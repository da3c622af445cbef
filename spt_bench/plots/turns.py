"""Turn analysis: a metric per dialogue-turn bucket with CIs, one line per run."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from spt_bench.compare.runs import RunRecord
from spt_bench.errors import InputError, SptBenchError
from spt_bench.metrics.turns import bucket_order, turn_bucket_of
from spt_bench.plots.common import (
    _figure,
    _finite,
    _image_format,
    _style,
    metric_axis_label,
    metric_title,
    save_figure,
)
from spt_bench.run_folder import RunFolder


@dataclass
class TurnSeries:
    """One run's metric per turn bucket: values from metrics.json, CIs by bootstrap."""

    label: str
    buckets: list[str]
    values: list[float]
    ci: list[tuple[float, float] | None]
    counts: list[int]


def turn_series(
    run: RunRecord,
    metric: str,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    ci_cache: dict | None = None,
) -> TurnSeries:
    """`metric` per turn bucket of one run (values and counts from metrics.json's by_turn)."""
    by_turn = run.metrics.get("by_turn") or {}
    if not by_turn:
        raise InputError(run.path / RunFolder.METRICS, None, "no 'by_turn' table")
    buckets = sorted(by_turn, key=bucket_order)
    present = [b for b in buckets if _finite(by_turn[b].get(metric))]
    if not present:
        available = sorted(k for k, v in by_turn[buckets[0]].items() if k != "n" and _finite(v))
        raise SptBenchError(
            f"{run.path}: metric {metric!r} is not in the per-turn table "
            f"(available: {', '.join(available)})"
        )
    values = [float(by_turn[b][metric]) for b in present]
    counts = [int(by_turn[b].get("n", 0)) for b in present]
    cache = ci_cache if ci_cache is not None else {}
    stored_cis = run.metrics.get("by_turn_ci95") or {}  # the scorer's per-turn intervals
    ci = []
    for b in present:
        stored = (stored_cis.get(b) or {}).get(metric) or (by_turn[b].get("ci95") or {}).get(metric)
        if stored is not None:
            ci.append((float(stored[0]), float(stored[1])))
            continue
        key = (str(run.path), b)
        if key not in cache:
            cache[key] = _bucket_cis(run, b, buckets, n_resamples=n_resamples, seed=seed)
        got = cache[key].get(metric)
        ci.append(None if got is None else (float(got[0]), float(got[1])))
    return TurnSeries(run.label, present, values, ci, counts)


def _bucket_cis(
    run: RunRecord, bucket: str, buckets: list[str], *, n_resamples: int, seed: int
) -> dict[str, tuple[float, float]]:
    """95% bootstrap CIs of every metric over one turn bucket's rows of example_scores.jsonl;
    corpus metrics are recomputed from the rows' sufficient statistics by the scorer's code."""
    rows = run.example_scores
    turns = _turns_by_id(run, rows)
    mine = [r for r in rows if turn_bucket_of(turns.get(str(r["id"]), -1), buckets) == bucket]
    if len(mine) < 2:
        return {}
    from spt_bench.metrics.bootstrap import bootstrap_ci
    from spt_bench.metrics.table import ScoreTable

    return bootstrap_ci(ScoreTable.from_per_example(mine), n_resamples=n_resamples, seed=seed)


def _turns_by_id(run: RunRecord, rows: list[dict]) -> dict[str, int]:
    if rows and all("turn" in r for r in rows):
        return {str(r["id"]): int(r["turn"]) for r in rows}
    return {str(p["id"]): int(p["turn"]) for p in run.predictions if "turn" in p}


def plot_turns(
    runs: Sequence[RunRecord],
    metrics: Sequence[str],
    out: str | os.PathLike,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> Path:
    """Metric vs dialogue turn, one line per run with its 95% CI band; a grid for several
    metrics; the example count of every turn bucket under its tick label."""
    if not runs:
        raise SptBenchError("plot turns: no runs")
    if not metrics:
        raise SptBenchError("plot turns: give at least one --metric")
    _image_format(out)
    cache: dict = {}
    series = {
        m: [turn_series(r, m, n_resamples=n_resamples, seed=seed, ci_cache=cache) for r in runs]
        for m in metrics
    }
    ncols = 1 if len(metrics) == 1 else 2
    nrows = math.ceil(len(metrics) / ncols)
    fig = _figure(7.5 * ncols if ncols > 1 else 8.5, 4.2 * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    handles = []
    for k, metric in enumerate(metrics):
        ax = axes[k // ncols][k % ncols]
        all_buckets = sorted({b for s in series[metric] for b in s.buckets}, key=bucket_order)
        pos = {b: i for i, b in enumerate(all_buckets)}
        for i, s in enumerate(series[metric]):
            style = _style(i)
            xs = [pos[b] for b in s.buckets]
            (line,) = ax.plot(xs, s.values, label=s.label, linewidth=1.8, markersize=5, **style)
            if k == 0:
                handles.append(line)
            have = [(x, c) for x, c in zip(xs, s.ci, strict=True) if c is not None]
            if len(have) == 1:  # a band needs two buckets: show the one interval as a bar
                (x, (lo, hi)), v = have[0], s.values[xs.index(have[0][0])]
                ax.errorbar(
                    [x], [v], yerr=[[v - lo], [hi - v]], color=style["color"], capsize=5,
                    linewidth=1.4,
                )  # fmt: skip
            elif have:
                ax.fill_between(
                    [x for x, _ in have],
                    [c[0] for _, c in have],
                    [c[1] for _, c in have],
                    color=style["color"],
                    alpha=0.15,
                    linewidth=0,
                )
        ax.set_xticks(range(len(all_buckets)))
        ax.set_xticklabels([_tick_with_counts(b, series[metric]) for b in all_buckets], fontsize=8)
        ax.set_xlabel("turn of the response in its dialogue (0 = first); n = examples")
        ax.set_ylabel(metric_axis_label(metric))
        ax.set_title(metric_title(metric))
        ax.grid(True, alpha=0.3)
    for k in range(len(metrics), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    fig.suptitle("Quality by dialogue turn (lines: value; bands: 95% bootstrap CI)")
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=min(len(handles), 3),
        frameon=False,
        title="run",
    )
    return save_figure(fig, out)


def degenerate_turns_note(series: TurnSeries, n_examples: int) -> str | None:
    """Why a run's turn plot has no trend: all its examples fell in one turn bucket."""
    if len(series.buckets) > 1:
        return None
    from spt_bench.metrics.turns import min_bucket_size

    m = min_bucket_size(n_examples)
    return (
        f"{series.label}: its {n_examples} examples make one turn bucket "
        f"({series.buckets[0]!r}), so the plot shows no trend over turns and no CI band; a turn "
        f"gets its own bucket with at least {m} examples (max(30, 2% of n)): score at least "
        f"{m} examples per turn (whole dialogues: about {m} dialogues)"
    )


def _tick_with_counts(bucket: str, series: list[TurnSeries]) -> str:
    counts = []
    for s in series:
        if bucket in s.buckets:
            counts.append(s.counts[s.buckets.index(bucket)])
    distinct = list(dict.fromkeys(counts))
    n = "/".join(str(c) for c in distinct) if distinct else "0"
    return f"{bucket}\nn={n}"
