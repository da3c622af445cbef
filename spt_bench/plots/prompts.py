"""`plot prompts`: which prompt a prompt-selecting method (its `prompt_usage` hook) chose per
example, overall and per turn, and the metric of the examples each prompt served."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from spt_bench.compare.runs import RunRecord
from spt_bench.errors import SptBenchError
from spt_bench.metrics.turns import bucket_order
from spt_bench.plots.common import (
    OKABE_ITO,
    _figure,
    _finite,
    _image_format,
    bootstrap_mean_ci,
    metric_axis_label,
    metric_title,
    save_figure,
)


def prompt_usage(
    run: RunRecord, *, metric: str = "f1", n_resamples: int = 1000, seed: int = 0
) -> Any:
    """Selections per prompt overall and per turn bucket (the method's `prompt_usage` hook), and
    the mean of an example-level metric over the examples each prompt was selected for."""
    from spt_bench.methods import method_class

    cls = method_class(run.method)
    by_turn = run.metrics.get("by_turn") or {}
    u = None
    if cls is not None:
        u = cls.prompt_usage(
            run.predictions,
            k=int(run.method_options.get("k") or 0),
            buckets=sorted(by_turn, key=bucket_order) if by_turn else None,
        )
    if u is None:
        fields, names = _prompt_selectors()
        raise SptBenchError(
            f"{run.path}: predictions have no {fields} (method {run.method} does not select "
            f"prompts; `plot prompts` is for {names} runs)"
        )
    scores = {str(r["id"]): r for r in run.example_scores}
    u.metric = metric
    for j in range(u.k):
        members = u.members[j]
        vals = [
            float(scores[i][metric])
            for i in members
            if i in scores and _finite(scores[i].get(metric))
        ]
        if members and not vals:
            raise SptBenchError(
                f"{run.path / 'example_scores.jsonl'}: no per-example {metric!r} values "
                "(use an example-level metric such as f1, rougeL, bertscore_f1)"
            )
        u.metric_mean.append(sum(vals) / len(vals) if vals else None)
        u.metric_ci.append(bootstrap_mean_ci(vals, n_resamples=n_resamples, seed=seed + j))
    return u


def _prompt_selectors() -> tuple[str, str]:
    """(the row fields that carry a selected prompt, the methods that select one), for messages."""
    from spt_bench.methods import Method, list_methods

    selecting = [
        c for c in list_methods() if c.prompt_usage.__func__ is not Method.prompt_usage.__func__
    ]
    selecting = [c for c in selecting if c.row_fields]
    fields = dict.fromkeys(repr(f.name) for c in selecting for f in c.row_fields if f.carry)
    return " / ".join(fields) or "selected prompt", ", ".join(c.name for c in selecting)


def plot_prompts(
    run: RunRecord,
    out: str | os.PathLike,
    *,
    metric: str = "f1",
    n_resamples: int = 1000,
    seed: int = 0,
) -> Path:
    """Three panels: selection share per prompt, share per turn bucket (heatmap), and
    per-prompt mean metric with 95% CI."""
    _image_format(out)
    u = prompt_usage(run, metric=metric, n_resamples=n_resamples, seed=seed)
    fig = _figure(max(11.0, 0.55 * len(u.buckets) + 4), 8.2)
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 1.15])
    colors = [OKABE_ITO[j % len(OKABE_ITO)] for j in range(u.k)]
    _share_panel(fig.add_subplot(grid[0, 0]), u, colors)
    _metric_panel(fig.add_subplot(grid[0, 1]), u, colors, run.overall.get(metric))
    _turn_heatmap(fig, fig.add_subplot(grid[1, :]), u)
    fig.suptitle(f"{u.title}: {run.label}")
    return save_figure(fig, out)


def _share_panel(ax_share: Any, u: Any, colors: list[str]) -> None:
    """Selection share per prompt (bars labelled with counts; dashed: the uniform share)."""
    prompts = list(range(u.k))
    total = sum(u.overall)
    shares = [100.0 * c / total for c in u.overall]
    bars = ax_share.bar(prompts, shares, color=colors)
    for bar, c in zip(bars, u.overall, strict=True):
        ax_share.annotate(
            f"{c}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 2),
            textcoords="offset points",
        )
    ax_share.axhline(100.0 / u.k, color="0.4", linestyle="--", linewidth=1)
    ax_share.set_xticks(prompts)
    ax_share.set_xlabel("prompt index")
    ax_share.set_ylabel("selected for (% of test examples)")
    ax_share.set_title(
        f"Selection frequency (n={total} examples)\n"
        f"bar labels: counts; dashed line: uniform share ({100.0 / u.k:.0f}%)",
        fontsize=10,
    )
    ax_share.set_ylim(0, max(shares) * 1.18 + 1)


def _metric_panel(ax_metric: Any, u: Any, colors: list[str], overall_mean: float | None) -> None:
    """Mean metric of the examples each prompt served, with 95% CIs (dashed: all examples)."""
    prompts = list(range(u.k))
    metric = u.metric
    tops = [1.0]
    for j in prompts:
        mean, ci = u.metric_mean[j], u.metric_ci[j]
        if mean is None:
            ax_metric.annotate(
                "never\nselected", (j, 0), ha="center", va="bottom", fontsize=8, color="0.4"
            )
            continue
        err = None if ci is None else [[mean - ci[0]], [ci[1] - mean]]
        ax_metric.bar(j, mean, color=colors[j], yerr=err, capsize=4, ecolor="0.2")
        ax_metric.annotate(
            f"{mean:.1f}",
            (j, 0),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
            color="0.1",
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
        )
        tops.append(ci[1] if ci is not None else mean)
    tops.append(overall_mean or 0.0)
    ax_metric.set_xlim(-0.6, u.k - 0.4)
    ax_metric.set_ylim(0, max(tops) * 1.15)
    if overall_mean is not None:
        ax_metric.axhline(overall_mean, color="0.4", linestyle="--", linewidth=1)
    ax_metric.set_xticks(prompts)
    ax_metric.set_xticklabels([f"{j}\nn={u.overall[j]}" for j in prompts], fontsize=8)
    ax_metric.set_xlabel("prompt index (n = examples it was selected for)")
    ax_metric.set_ylabel(metric_axis_label(metric))
    reference = "" if overall_mean is None else f"; dashed line: all examples ({overall_mean:.1f})"
    ax_metric.set_title(
        f"Mean {metric_title(metric)} per selected prompt (value at the bar's foot)\n"
        f"error bars: 95% CI{reference}",
        fontsize=10,
    )


def _turn_heatmap(fig: Any, ax_heat: Any, u: Any) -> None:
    """Selection share per turn bucket (% of the bucket's examples), one row per prompt."""
    import numpy as np

    prompts = list(range(u.k))
    share = np.zeros((u.k, len(u.buckets)))
    for b, tot in enumerate(u.bucket_totals):
        if tot:
            for j in prompts:
                share[j, b] = 100.0 * u.per_bucket[j][b] / tot
    im = ax_heat.imshow(share, aspect="auto", cmap="cividis", vmin=0, vmax=100)
    for j in prompts:
        for b in range(len(u.buckets)):
            ax_heat.text(
                b,
                j,
                f"{share[j, b]:.0f}",
                ha="center",
                va="center",
                fontsize=9,
                color="black" if share[j, b] > 55 else "white",
            )
    ax_heat.set_xticks(range(len(u.buckets)))
    ax_heat.set_xticklabels(
        [f"{b}\nn={t}" for b, t in zip(u.buckets, u.bucket_totals, strict=True)], fontsize=8
    )
    ax_heat.set_yticks(prompts)
    ax_heat.set_xlabel("turn of the response in its dialogue (0 = first); n = examples")
    ax_heat.set_ylabel("prompt index")
    ax_heat.set_title("Selection share per turn (% of the turn's examples)")
    fig.colorbar(im, ax=ax_heat, label="% of the turn's examples", pad=0.01)
