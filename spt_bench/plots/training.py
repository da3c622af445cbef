"""Training curves from train_log.jsonl: losses with the dev loss, loss terms, logged
diagnostics and dev prompt usage, sharing the step axis."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spt_bench.compare.runs import RunRecord
from spt_bench.errors import InputError, SptBenchError
from spt_bench.io import read_jsonl
from spt_bench.methods import LogField
from spt_bench.plots.common import (
    OKABE_ITO,
    _figure,
    _finite,
    _image_format,
    _style,
    save_figure,
)
from spt_bench.run_folder import RunFolder

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

# Diagnostics every training run logs; methods add theirs (Method.log_fields), placed by order.
SHARED_DIAGNOSTICS: tuple[LogField, ...] = (
    LogField("lr", "diagnostic", "Learning-rate schedule", "learning rate", style=4, order=0),
    LogField(
        "grad_norm", "diagnostic", "Gradient norm (before clipping)", "L2 norm", style=6, order=30
    ),
)

# Train-log keys that are loss terms (the total and its components; methods add theirs); any
# other numeric key a method logs is a diagnostic and gets its own panel, never the loss-term
# panel.
SHARED_LOSS_TERMS = ("loss", "nll")

# `plot training --panels` names besides the diagnostics' own keys.
FIXED_PANELS = ("loss", "terms", "usage")


@dataclass(frozen=True)
class LogLayout:
    """How train_log keys are drawn: diagnostics (in panel order), loss terms, dev-usage keys."""

    diagnostics: dict[str, LogField]
    loss_terms: frozenset[str]
    dev_usage: tuple[LogField, ...]


def log_layout() -> LogLayout:
    """The shared fields plus every registered method's `log_fields`."""
    from spt_bench.methods import list_methods

    fields = [*SHARED_DIAGNOSTICS, *(f for cls in list_methods() for f in cls.log_fields)]
    diagnostics: dict[str, LogField] = {}
    for f in sorted((f for f in fields if f.kind == "diagnostic"), key=lambda f: f.order):
        diagnostics.setdefault(f.name, f)
    terms = frozenset([*SHARED_LOSS_TERMS, *(f.name for f in fields if f.kind == "loss")])
    usage = tuple({f.name: f for f in fields if f.kind == "dev_usage"}.values())
    return LogLayout(diagnostics, terms, usage)


def is_loss_term(key: str, layout: LogLayout | None = None) -> bool:
    return key in (layout or log_layout()).loss_terms or key.endswith("_loss")


@dataclass
class TrainingCurves:
    """Series from train_log.jsonl: training-row losses, dev losses, diagnostics."""

    losses: dict[str, tuple[list[int], list[float]]]
    dev: tuple[list[int], list[float]]
    diagnostics: dict[str, tuple[list[int], list[float]]]
    # selections per prompt on the dev set at each evaluation (step, counts): a method's
    # "dev_usage" log field, drawn under its title
    dev_usage: list[tuple[int, list[int]]] = field(default_factory=list)
    dev_usage_title: str = ""


def training_curves(run_path: str | os.PathLike) -> TrainingCurves:
    """Read train_log.jsonl. Rows with `dev_loss` are evaluations; other rows with `step` are
    training logs whose numeric fields are loss terms unless listed as diagnostics or
    bookkeeping (step, epoch, throughput, ...)."""
    path = RunFolder(run_path).train_log
    if not path.is_file():
        raise InputError(path, None, "file not found (the method does not train?)")
    curves = TrainingCurves({}, ([], []), {})
    layout = log_layout()

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
            for f in layout.dev_usage:
                usage = row.get(f.name)
                if isinstance(usage, list) and usage and all(_finite(u) for u in usage):
                    curves.dev_usage.append((int(row["step"]), [int(u) for u in usage]))
                    curves.dev_usage_title = f.title
                    break
            continue  # an evaluation row: its other numbers are not training-batch values
        if "dev_loss" in row or row.get("type", "train") != "train":
            continue  # other event rows (evaluations, notes) carry no training-batch losses
        for key, value in row.items():
            if not _finite(value):
                continue
            if key in layout.diagnostics or (
                key not in NON_LOSS_KEYS and not is_loss_term(key, layout)
            ):
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
    known = log_layout().diagnostics
    panels += [k for k in known if k in c.diagnostics]
    panels += [k for k in c.diagnostics if k not in known]
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
            _loss_panel(ax, c, first)
        elif panel == "terms":
            _terms_panel(ax, c, components)
        elif panel == "usage":
            _usage_panel(ax, c)
        else:
            _diagnostic_panel(ax, c, panel, run.method_options)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    from matplotlib.ticker import MaxNLocator

    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1].set_xlabel("optimizer step")
    fig.suptitle(f"Training curves: {run.label}")
    return fig


def _loss_panel(ax: Any, c: TrainingCurves, first: str | None) -> None:
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


def _terms_panel(ax: Any, c: TrainingCurves, components: list[str]) -> None:
    for i, key in enumerate(components):
        label = "total (weighted sum)" if key == "loss" else key
        _curve(ax, *c.losses[key], label, i + 2)
    ax.set_title("Training loss terms (as logged; components unweighted)")
    ax.set_ylabel("loss term")


def _usage_panel(ax: Any, c: TrainingCurves) -> None:
    """Dev prompt usage as stacked shares (one evaluation: a stacked bar)."""
    k_usage = max((len(u) for _, u in c.dev_usage), default=0)
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
    ax.set_title(f"{c.dev_usage_title or 'Prompt usage on the dev set'} (stacked shares){counts}")
    ax.set_ylabel("% of dev examples")


def _diagnostic_panel(ax: Any, c: TrainingCurves, panel: str, options: dict) -> None:
    f = log_layout().diagnostics.get(panel)
    title, ylabel = (f.title, f.ylabel) if f else (f"{panel} (as logged)", panel)
    _curve(ax, *c.diagnostics[panel], panel, f.style if f else 3)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if panel == "lr":
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    k = options.get(f.uniform_over) if f is not None and f.uniform_over else None
    if isinstance(k, int) and k > 1:
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


def _all_steps(c: TrainingCurves) -> list[int]:
    return [st for series in (*c.losses.values(), *c.diagnostics.values()) for st in series[0]]
