"""Plots from run folders: turn analysis, SPT prompt selection, training curves.

matplotlib is imported lazily and used through `matplotlib.figure.Figure` (Agg canvas, no pyplot
state), so plotting works headless and never changes a caller's backend. Colours are the
Okabe-Ito palette (colour-blind safe) with distinct markers/line styles, so lines stay apart in
greyscale too. The format follows the output extension: .png (default), .svg or .pdf.
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spt_bench.compare import SHORT_NAMES, RunRecord
from spt_bench.errors import InputError, SptBenchError
from spt_bench.io import atomic_write_bytes, output_file, read_jsonl
from spt_bench.run_folder import RunFolder

# Okabe & Ito (2008); yellow last: weakest contrast on white.
OKABE_ITO: tuple[str, ...] = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#E69F00",  # orange
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow
)
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES: tuple[str, ...] = ("-", "--", "-.", ":")
IMAGE_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
DPI = 150

METRIC_TITLES: dict[str, str] = {
    "f1": "F1 (ParlAI-normalised)",
    "f1_raw": "F1 raw (SPT paper's F1)",
    "bleu": "BLEU (sacrebleu)",
    "bleu1": "BLEU-1",
    "bleu2": "BLEU-2",
    "rouge1": "ROUGE-1 F",
    "rouge2": "ROUGE-2 F",
    "rougeL": "ROUGE-L F",
    "bertscore_f1": "BERTScore F1",
    "bertscore_p": "BERTScore precision",
    "bertscore_r": "BERTScore recall",
    "dist1": "Distinct-1",
    "dist2": "Distinct-2",
    "avg_len": "Response length",
    "persona_f1": "Persona F1",
    "ppl": "Perplexity",
}
# Train-log keys that are not loss terms.
NON_LOSS_KEYS = frozenset(
    {
        "step",
        "epoch",
        "lr",
        "examples_per_s",
        "tokens_per_s",
        "elapsed_s",
        "time",
        "wall_s",
        "grad_norm",
        "prompt_usage",
        "retriever_entropy",
        "selection_agreement",
        "dev_loss",
        "best_dev_loss",
        "step_seconds",
        "dev_ppl",
        "dev_tokens",
        "examples_seen",
        "tokens_seen",
        "event",
        "split",
    }
)


def metric_title(metric: str) -> str:
    return METRIC_TITLES.get(metric, SHORT_NAMES.get(metric, metric))


def metric_axis_label(metric: str) -> str:
    """Y-axis label with the unit: x100 scores, tokens for length, plain ratio for ppl."""
    if metric == "avg_len":
        return "mean length (whitespace tokens)"
    if metric == "ppl":
        return "perplexity (per token)"
    return f"{SHORT_NAMES.get(metric, metric)} (score ×100)"


# ------------------------------------------------------------------------------------ helpers


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return fig


def _image_format(out: str | os.PathLike) -> str:
    suffix = Path(out).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        raise SptBenchError(
            f"{out}: unsupported image type {suffix or '(none)'}; use .png, .svg or .pdf"
        )
    return IMAGE_FORMATS[suffix]


def save_figure(fig: Any, out: str | os.PathLike) -> Path:
    """Render to memory, then write atomically (no half-written image after a crash)."""
    out = Path(out)
    fmt = _image_format(out)
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=DPI, metadata=_metadata(fmt))
    atomic_write_bytes(out, buf.getvalue())  # mode 0666 less the umask, like every output
    return out


def _metadata(fmt: str) -> dict:
    # fixed metadata: the same plot gives the same bytes (no creation date)
    if fmt == "png":
        return {"Software": "spt-bench"}
    if fmt == "svg":
        return {"Date": None}
    return {"CreationDate": None}


def _style(i: int) -> dict:
    return {
        "color": OKABE_ITO[i % len(OKABE_ITO)],
        "marker": MARKERS[i % len(MARKERS)],
        "linestyle": LINESTYLES[(i // len(OKABE_ITO)) % len(LINESTYLES)],
    }


def _bucket_order(label: str) -> tuple[int, str]:
    m = re.match(r"\s*(\d+)", str(label))
    return (int(m.group(1)) if m else 10**9, str(label))


def turn_bucket_of(turn: int, buckets: Sequence[str]) -> str | None:
    """Map a 0-based turn to a by_turn bucket label: "k" exactly, or "k+" for the merged tail
    (also "a-b" ranges)."""
    for label in buckets:
        text = str(label).strip()
        if text.isdigit() and int(text) == turn:
            return label
        m = re.fullmatch(r"(\d+)\s*\+", text) or re.fullmatch(r">=\s*(\d+)", text)
        if m and turn >= int(m.group(1)):
            return label
        m = re.fullmatch(r"(\d+)\s*[-–]\s*(\d+)", text)
        if m and int(m.group(1)) <= turn <= int(m.group(2)):
            return label
    return None


def bootstrap_mean_ci(
    values: Sequence[float], *, n_resamples: int = 1000, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile 95% CI of a mean by resampling values (seeded)."""
    import numpy as np

    arr = np.asarray([v for v in values if v is not None], dtype=float)
    if len(arr) < 2:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(arr), size=(n_resamples, len(arr)))
    means = arr[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def _predictions(run: RunRecord) -> list[dict]:
    path = run.path / RunFolder.PREDICTIONS
    if not path.is_file():
        raise InputError(path, None, "file not found")
    return list(read_jsonl(path))


# ------------------------------------------------------------------------------------ turns


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
    buckets = sorted(by_turn, key=_bucket_order)
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
    from metrics.bootstrap import bootstrap_ci
    from metrics.table import ScoreTable

    return bootstrap_ci(ScoreTable.from_per_example(mine), n_resamples=n_resamples, seed=seed)


def _turns_by_id(run: RunRecord, rows: list[dict]) -> dict[str, int]:
    if rows and all("turn" in r for r in rows):
        return {str(r["id"]): int(r["turn"]) for r in rows}
    return {str(p["id"]): int(p["turn"]) for p in _predictions(run) if "turn" in p}


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
        all_buckets = sorted({b for s in series[metric] for b in s.buckets}, key=_bucket_order)
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
    from metrics.turns import min_bucket_size

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


# ------------------------------------------------------------------------------------ prompts


@dataclass
class PromptUsage:
    k: int
    buckets: list[str]
    overall: list[int]  # selections per prompt
    per_bucket: list[list[int]]  # [prompt][bucket]
    bucket_totals: list[int]
    metric: str
    metric_mean: list[float | None]
    metric_ci: list[tuple[float, float] | None]


def prompt_usage(
    run: RunRecord, *, metric: str = "f1", n_resamples: int = 1000, seed: int = 0
) -> PromptUsage:
    """Selections per SPT prompt overall and per turn bucket, and the mean of an example-level
    metric over the examples each prompt was selected for."""
    preds = _predictions(run)
    chosen = [p for p in preds if p.get("selected_prompt") is not None]
    if not chosen:
        raise SptBenchError(
            f"{run.path}: predictions have no 'selected_prompt' (method {run.method} does not "
            "select prompts; `plot prompts` is for SPT runs)"
        )
    k = int(run.method_options.get("k") or 0)
    for p in chosen:
        k = max(k, int(p["selected_prompt"]) + 1, len(p.get("prompt_scores") or []))
    by_turn = run.metrics.get("by_turn") or {}
    buckets = sorted(by_turn, key=_bucket_order) if by_turn else []
    if not buckets:
        buckets = [str(t) for t in sorted({int(p["turn"]) for p in chosen})]
    overall = [0] * k
    per_bucket = [[0] * len(buckets) for _ in range(k)]
    totals = [0] * len(buckets)
    members: list[list[str]] = [[] for _ in range(k)]
    for p in chosen:
        j = int(p["selected_prompt"])
        overall[j] += 1
        members[j].append(str(p["id"]))
        b = turn_bucket_of(int(p.get("turn", 0)), buckets)
        if b is not None:
            per_bucket[j][buckets.index(b)] += 1
            totals[buckets.index(b)] += 1
    scores = {str(r["id"]): r for r in run.example_scores}
    means: list[float | None] = []
    cis: list[tuple[float, float] | None] = []
    for j in range(k):
        vals = [
            float(scores[i][metric])
            for i in members[j]
            if i in scores and _finite(scores[i].get(metric))
        ]
        if members[j] and not vals:
            raise SptBenchError(
                f"{run.path / 'example_scores.jsonl'}: no per-example {metric!r} values "
                "(use an example-level metric such as f1, rougeL, bertscore_f1)"
            )
        means.append(sum(vals) / len(vals) if vals else None)
        cis.append(bootstrap_mean_ci(vals, n_resamples=n_resamples, seed=seed + j))
    return PromptUsage(k, buckets, overall, per_bucket, totals, metric, means, cis)


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
    import numpy as np

    _image_format(out)
    u = prompt_usage(run, metric=metric, n_resamples=n_resamples, seed=seed)
    total = sum(u.overall)
    fig = _figure(max(11.0, 0.55 * len(u.buckets) + 4), 8.2)
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 1.15])
    ax_share = fig.add_subplot(grid[0, 0])
    ax_metric = fig.add_subplot(grid[0, 1])
    ax_heat = fig.add_subplot(grid[1, :])
    prompts = list(range(u.k))
    colors = [OKABE_ITO[j % len(OKABE_ITO)] for j in prompts]

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
    overall_mean = run.overall.get(metric)
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
    fig.suptitle(f"SPT prompt selection: {run.label}")
    return save_figure(fig, out)


# ------------------------------------------------------------------------------------ training

# Logged diagnostics shown in their own panels: key -> (panel title, y-axis label).
DIAGNOSTICS: dict[str, tuple[str, str]] = {
    "lr": ("Learning-rate schedule", "learning rate"),
    "retriever_entropy": ("SPT retriever: entropy of the prompt distribution", "entropy (nats)"),
    "selection_agreement": (
        "SPT retriever: top-scored prompt = lowest-loss prompt",
        "share of batch examples",
    ),
    "grad_norm": ("Gradient norm (before clipping)", "L2 norm"),
    "score_sum": ("SPT retriever: sum of the prompt scores (scales the fused logits)", "sum_k s_k"),
}

# Palette index per diagnostic (each panel its own colour; never the weak yellow).
DIAGNOSTIC_STYLE = {
    "lr": 4,
    "retriever_entropy": 0,
    "selection_agreement": 2,
    "grad_norm": 6,
    "score_sum": 5,
}

# Train-log keys that are loss terms (the total and its components); any other numeric key a
# method logs is a diagnostic and gets its own panel, never the loss-term panel.
LOSS_TERMS = ("loss", "nll", "sel", "fusion", "ctr")

# `plot training --panels` names besides the diagnostics' own keys.
FIXED_PANELS = ("loss", "terms", "usage")


def is_loss_term(key: str) -> bool:
    return key in LOSS_TERMS or key.endswith("_loss")


@dataclass
class TrainingCurves:
    """Series from train_log.jsonl: training-row losses, dev losses, diagnostics."""

    losses: dict[str, tuple[list[int], list[float]]]
    dev: tuple[list[int], list[float]]
    diagnostics: dict[str, tuple[list[int], list[float]]]
    # SPT: selections per prompt on the dev set at each evaluation (step, counts)
    dev_usage: list[tuple[int, list[int]]] = field(default_factory=list)


def training_curves(run_path: str | os.PathLike) -> TrainingCurves:
    """Read train_log.jsonl. Rows with `dev_loss` are evaluations; other rows with `step` are
    training logs whose numeric fields are loss terms unless listed as diagnostics or
    bookkeeping (step, epoch, throughput, ...)."""
    path = RunFolder(run_path).train_log
    if not path.is_file():
        raise InputError(path, None, "file not found (the method does not train?)")
    curves = TrainingCurves({}, ([], []), {})

    def add(series: dict, key: str, step: int, value: float) -> None:
        steps, values = series.setdefault(key, ([], []))
        steps.append(step)
        values.append(value)

    for row in read_jsonl(path, tolerate_truncated_tail=True):
        if not _finite(row.get("step")):
            continue
        step = int(row["step"])
        if _finite(row.get("dev_loss")):
            curves.dev[0].append(step)
            curves.dev[1].append(float(row["dev_loss"]))
            usage = row.get("prompt_usage")
            if isinstance(usage, list) and usage and all(_finite(u) for u in usage):
                curves.dev_usage.append((int(row["step"]), [int(u) for u in usage]))
            continue  # an evaluation row: its other numbers are not training-batch values
        if "dev_loss" in row or row.get("type", "train") != "train":
            continue  # other event rows (evaluations, notes) carry no training-batch losses
        for key, value in row.items():
            if not _finite(value):
                continue
            if key in DIAGNOSTICS or (key not in NON_LOSS_KEYS and not is_loss_term(key)):
                add(curves.diagnostics, key, step, float(value))
            elif key not in NON_LOSS_KEYS:
                add(curves.losses, key, step, float(value))
    if not curves.losses and not curves.dev[0]:
        raise InputError(path, None, "no loss values (rows need 'step' and loss fields)")
    return curves


def _moving_average(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def _curve(ax: Any, steps: list[int], values: list[float], label: str, i: int) -> None:
    """A raw line (faint) plus a moving mean when there are many points, else markers."""
    style = _style(i)
    window = max(1, len(values) // 40)
    if window > 1:
        ax.plot(steps, values, color=style["color"], alpha=0.25, linewidth=0.8)
        ax.plot(
            steps,
            _moving_average(values, window),
            color=style["color"],
            linestyle=style["linestyle"],
            linewidth=1.8,
            label=f"{label} (moving mean of {window} logs)",
        )
    else:
        ax.plot(
            steps,
            values,
            color=style["color"],
            linestyle=style["linestyle"],
            marker=style["marker"] if len(values) <= 40 else None,
            markersize=4,
            linewidth=1.6,
            label=label,
        )


def training_panels(c: TrainingCurves) -> tuple[list[str], str | None, list[str]]:
    """(panel names available for these curves, the first panel's train series, the loss
    terms of the "terms" panel). Names: loss, terms, each logged diagnostic, usage."""
    first = "nll" if "nll" in c.losses else ("loss" if "loss" in c.losses else None)
    if first is None and len(c.losses) == 1:
        (first,) = c.losses
    components = [k for k in c.losses if k != first and c.losses[k] != c.losses.get(first)]
    panels: list[str] = ["loss"]
    if components:
        panels.append("terms")
    panels += [k for k in DIAGNOSTICS if k in c.diagnostics]
    panels += [k for k in c.diagnostics if k not in DIAGNOSTICS]
    if max((len(u) for _, u in c.dev_usage), default=0) > 1:
        panels.append("usage")
    return panels, first, components


def choose_panels(available: list[str], wanted: Sequence[str] | None, where: str) -> list[str]:
    """The panels to draw, in the order asked; a name this run cannot draw is an error."""
    if not wanted:
        return available
    names = [w.strip() for item in wanted for w in str(item).split(",") if w.strip()]
    missing = [n for n in names if n not in available]
    if missing:
        raise SptBenchError(
            f"plot training: no panel {', '.join(map(repr, missing))} for {where} "
            f"(available: {', '.join(available)})"
        )
    return list(dict.fromkeys(names))


def plot_training(
    run: RunRecord, out: str | os.PathLike, *, panels: Sequence[str] | None = None
) -> Path:
    """Panels sharing the step axis: the total train loss with the dev loss, the logged loss
    terms, each logged diagnostic (learning rate, SPT retriever entropy, ...) and SPT's dev
    prompt usage; `panels` picks some of them (see `training_panels`)."""
    _image_format(out)
    return save_figure(training_figure(run, panels=panels), out)


def training_figure(run: RunRecord, *, panels: Sequence[str] | None = None) -> Any:
    """The `plot_training` figure (matplotlib Figure, one axis per panel, in order)."""
    c = training_curves(run.path)
    available, first, components = training_panels(c)
    panels = choose_panels(available, panels, str(run.path))
    k_usage = max((len(u) for _, u in c.dev_usage), default=0)
    # Panel 1 compares like with like: the train response NLL ("nll", else the total loss)
    # against the dev loss (also a response NLL). The total of a multi-term loss goes with its
    # terms; a term identical to the plotted train curve is not repeated.
    heights = [1.0 if p in ("loss", "terms") else 0.6 for p in panels]
    fig = _figure(10.5, 2.9 * sum(heights) + 1.0)
    axes = fig.subplots(
        len(panels), 1, sharex=True, squeeze=False, gridspec_kw={"height_ratios": heights}
    )[:, 0]
    for ax, panel in zip(axes, panels, strict=True):
        if panel == "loss":
            if first is not None:
                name = "train response NLL" if first == "nll" else f"train {first}"
                _curve(ax, *c.losses[first], name, 0)
            dev_steps, dev_loss = c.dev
            if dev_loss:
                ax.plot(
                    dev_steps,
                    dev_loss,
                    color=OKABE_ITO[1],
                    marker="s",
                    linestyle="--",
                    linewidth=1.6,
                    label="dev loss (response NLL)",
                )
                best = min(range(len(dev_loss)), key=dev_loss.__getitem__)
                ax.scatter(
                    [dev_steps[best]],
                    [dev_loss[best]],
                    s=110,
                    facecolors="none",
                    edgecolors="black",
                    linewidths=1.4,
                    zorder=5,
                    label=f"best dev: {dev_loss[best]:.3f} at step {dev_steps[best]}",
                )
            ax.set_title("Training and dev loss (response tokens)")
            ax.set_ylabel("loss (nats per token)")
        elif panel == "terms":
            for i, key in enumerate(components):
                label = "total (weighted sum)" if key == "loss" else key
                _curve(ax, *c.losses[key], label, i + 2)
            ax.set_title("Training loss terms (as logged; components unweighted)")
            ax.set_ylabel("loss term")
        elif panel == "usage":
            steps = [st for st, _ in c.dev_usage]
            shares = [
                [100.0 * (u[j] if j < len(u) else 0) / max(1, sum(u)) for _, u in c.dev_usage]
                for j in range(k_usage)
            ]
            labels = [f"prompt {j}" for j in range(k_usage)]
            colors = [OKABE_ITO[j % len(OKABE_ITO)] for j in range(k_usage)]
            if len(steps) > 1:
                ax.stackplot(steps, shares, labels=labels, colors=colors, alpha=0.85)
            else:  # one evaluation (the default): an area needs two points, so a stacked bar
                span = max([*_all_steps(c), steps[0], 1])
                bottom = 0.0
                for j in range(k_usage):
                    ax.bar(
                        steps, [shares[j][0]], bottom=bottom, width=max(0.8, 0.04 * span),
                        color=colors[j], alpha=0.85, label=labels[j],
                    )  # fmt: skip
                    bottom += shares[j][0]
            ax.set_ylim(0, 100)
            counts = "" if len(steps) > 1 else f": {c.dev_usage[0][1]} at step {steps[0]}"
            ax.set_title(f"SPT prompt usage on the dev set (stacked shares){counts}")
            ax.set_ylabel("% of dev examples")
        else:
            title, ylabel = DIAGNOSTICS.get(panel, (f"{panel} (as logged)", panel))
            _curve(ax, *c.diagnostics[panel], panel, DIAGNOSTIC_STYLE.get(panel, 3))
            ax.set_title(title)
            ax.set_ylabel(ylabel)
            if panel == "lr":
                ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
            k = run.method_options.get("k")
            if panel == "retriever_entropy" and isinstance(k, int) and k > 1:
                ax.axhline(math.log(k), color="0.4", linestyle="--", linewidth=1)
                ax.annotate(
                    f"ln K = {math.log(k):.2f} (uniform over {k} prompts)",
                    (0.0, math.log(k)),
                    xycoords=("axes fraction", "data"),
                    xytext=(4, 2),
                    textcoords="offset points",
                    ha="left",
                    va="bottom",
                    fontsize=8,
                    color="0.3",
                )
                ax.set_ylim(0, math.log(k) * 1.3)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    from matplotlib.ticker import MaxNLocator

    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1].set_xlabel("optimizer step")
    fig.suptitle(f"Training curves: {run.label}")
    return fig


def _all_steps(c: TrainingCurves) -> list[int]:
    return [st for series in (*c.losses.values(), *c.diagnostics.values()) for st in series[0]]


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


__all__ = [
    "OKABE_ITO",
    "plot_prompts",
    "plot_training",
    "plot_turns",
    "prompt_usage",
    "training_curves",
    "turn_series",
]


# ------------------------------------------------------------------------------------ commands


def plot_turns_command(
    specs: Sequence[str | os.PathLike], metrics: Sequence[str], out: str | os.PathLike
) -> Path:
    """`spt-bench plot turns`: runs from folders/globs (incomplete ones skipped with a warning)."""
    from spt_bench.compare import load_runs

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
    return plot_prompts(_single_run(spec), out, metric=metric)


def plot_training_command(
    spec: str | os.PathLike, out: str | os.PathLike, *, panels: Sequence[str] | None = None
) -> Path:
    """Works on an unfinished run too (only train_log.jsonl is needed)."""
    out = output_file(out, "loss.png")
    _image_format(out)
    path = Path(spec)
    if not path.is_dir():
        raise InputError(path, None, "no such run folder")
    from spt_bench.compare import RunRecord, assign_labels

    folder = RunFolder(path)
    config = folder.read_config_dict() if folder.is_run() else {}
    run = RunRecord(path=path, config=config, metrics={})
    assign_labels([run])
    return plot_training(run, out, panels=panels)


def _single_run(spec: str | os.PathLike) -> RunRecord:
    from spt_bench.compare import load_run

    path = Path(spec)
    if not path.is_dir():
        raise InputError(path, None, "no such run folder")
    if not RunFolder(path).is_finished():
        raise InputError(path, None, "incomplete run (no metrics.json)")
    run = load_run(path)
    from spt_bench.compare import assign_labels

    assign_labels([run])
    return run


def _warn(message: str) -> None:
    import sys

    print(f"warning: {message}", file=sys.stderr)
