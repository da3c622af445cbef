"""Rich terminal rendering of a ScoreReport (used by `spt-bench score` and `spt-bench run`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from spt_bench.metrics.registry import METRICS

if TYPE_CHECKING:
    from rich.console import Console

    from spt_bench.metrics.scorer import ScoreReport


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}"


def _direction(name: str) -> str:
    hib = METRICS[name].higher_is_better if name in METRICS else None
    return {True: "↑", False: "↓", None: ""}[hib]


def render_score_report(report: ScoreReport, console: Console, *, title: str | None = None) -> None:
    """Print the metrics table (value, 95% CI, direction, level), then the per-turn table."""
    from rich import box
    from rich.table import Table

    table = Table(
        title=title or f"Scores over {report.n} examples",
        box=box.SIMPLE_HEAVY,
        title_justify="left",
    )
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    table.add_column("95% CI", justify="right", style="dim")
    table.add_column("", justify="center")
    table.add_column("level", style="dim")
    for name, value in report.overall.items():
        ci = report.ci95.get(name)
        ci_text = f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "-"
        level = METRICS[name].level if name in METRICS else ""
        table.add_row(name, _fmt(value), ci_text, _direction(name), level)
    console.print(table)

    notes = []
    if report.bertscore_model is not None:
        idf = "idf" if report.bertscore_idf else "no idf"
        notes.append(
            f"BERTScore: {report.bertscore_model}, layer {report.bertscore_layer}, {idf}, "
            "no baseline rescaling"
        )
    else:
        notes.append("BERTScore: skipped")
    notes.append(
        "values x100 except avg_len, ppl, c_score and judge_*; f1 = ParlAI-normalised, "
        "f1_raw = SPT paper's"
    )
    if report.model_scores.get("calibration"):
        from spt_bench.metrics.calibration import calibration_lines

        ms = report.model_scores
        notes += calibration_lines(ms.get("instruments") or {}, ms["calibration"])
    for note in notes:
        console.print(f"[dim]{note}[/dim]")

    if not report.by_turn:
        console.print("[dim]per-turn analysis: no 'turn' field in the predictions[/dim]")
        return
    turns = Table(
        title="By dialogue turn (0-based turn of the response)",
        box=box.SIMPLE_HEAVY,
        title_justify="left",
    )
    turns.add_column("metric", style="bold")
    labels = list(report.by_turn)
    for label in labels:
        turns.add_column(label, justify="right")
    turns.add_row("n", *[str(report.by_turn[t]["n"]) for t in labels], style="dim")
    for name in report.overall:
        turns.add_row(name, *[_fmt(report.by_turn[t].get(name)) for t in labels])
    console.print(turns)
