"""The column model every human-readable format renders: a header (run, trainable parameters,
one column per metric), value rows (value, best mark, CI or std), the gain table (gain,
significance mark, p-value, AVG) and the legend - built once from a Comparison."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from spt_bench.compare.stats import P_TEST_TEXT, significance_mark

if TYPE_CHECKING:  # pragma: no cover
    from spt_bench.compare.build import Comparison, ComparisonRow

SHORT_NAMES: dict[str, str] = {
    "f1": "F1",
    "f1_raw": "F1 raw",
    "bleu": "BLEU",
    "bleu1": "BLEU-1",
    "bleu2": "BLEU-2",
    "rouge1": "R-1",
    "rouge2": "R-2",
    "rougeL": "R-L",
    "bertscore_f1": "BS-F1",
    "bertscore_p": "BS-P",
    "bertscore_r": "BS-R",
    "dist1": "Dist-1",
    "dist2": "Dist-2",
    "avg_len": "Len",
    "persona_f1": "Persona F1",
    "ppl": "PPL",
    "hits@1": "Hits@1",
    "c_score": "C",
    "c_entail_rate": "Entail%",
    "c_contradict_rate": "Contra%",
    "judge_consistency": "Judge cons.",
    "judge_coherence": "Judge coh.",
}


# One precision rule for every human-readable table (compare's md/latex/rich and each run's
# report.md): 2 decimals (metrics are on a 0-100 scale, so 0.01 points), p-values 3 decimals.
DECIMALS = 2


def fmt_value(x: float | None) -> str:
    return "" if x is None else f"{x:.{DECIMALS}f}"


def fmt_gain(x: float | None) -> str:
    return "" if x is None else f"{x:+.{DECIMALS}f}"


def fmt_interval(lo: float, hi: float) -> str:
    return f"[{fmt_value(lo)}, {fmt_value(hi)}]"


def fmt_p(p: float | None) -> str:
    """'p=0.012', or 'p<0.001' below the resolution worth printing."""
    if p is None:
        return ""
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def fmt_params(n: int | None) -> str:
    """Trainable-parameter count, short: 4608, 92.2K, 2.26M."""
    if n is None:
        return ""
    if n < 1000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1e3:.1f}K"
    return f"{n / 1e6:.2f}M"


def _header(metric: str) -> str:
    return SHORT_NAMES.get(metric, metric)


def _hib_arrow(c: Comparison, metric: str) -> str:
    hib = c.higher_is_better.get(metric)
    return "" if hib is None else ("↑" if hib else "↓")


def _has_gains(c: Comparison) -> bool:
    return any(r.gain or r.avg_gain is not None for r in c.rows)


def _spread(c: Comparison, r: ComparisonRow, m: str) -> str:
    """What follows a value: its CI in brackets, or ± the std over seeds; '' when compact."""
    if c.compact:
        return ""
    if m in r.std:
        return f"±{fmt_value(r.std[m])}"
    if m in r.ci95:
        return fmt_interval(*r.ci95[m])
    return ""


def _shown_p(c: Comparison, r: ComparisonRow, m: str) -> float | None:
    return (r.p_adjusted or r.p_value).get(m) if c.p_adjust != "none" else r.p_value.get(m)


def _legend_lines(c: Comparison) -> list[str]:
    spread = (
        ""
        if c.compact
        else "brackets: 95% bootstrap CI (± sample std over seeds for rows of several seeds); "
    )
    lines = [
        f"Values x100 (except Len/PPL{_model_scales(c)}); {spread}best run per column in bold, ties all bold "
        "(↑ higher is better, ↓ lower is better).",
        "F1 = ParlAI-normalised token F1; F1 raw = unnormalised (the SPT paper's F1).",
    ]
    if _has_gains(c):
        n_tested = max((len(r.p_value) for r in c.rows), default=0)
        if c.p_adjust != "holm":
            adjust = "not adjusted for multiple comparisons"
        elif c.p_adjust_scope == "table":
            total = sum(len(r.p_value) for r in c.rows)
            adjust = (
                f"Holm-adjusted across all {total} p-values of the table (raw values in json/csv)"
            )
        else:
            adjust = (
                f"Holm-adjusted across the {n_tested} metrics of each row (raw values in json/csv)"
            )
        line = (
            "Gain = relative change vs the baseline in % (positive = better); AVG = mean gain over "
            "the paper's ten metrics (F1 raw, BLEU, R-1/2/L, BS-F1/P/R, Dist-1/2)"
        )
        if n_tested:
            line += f"; p = p-value vs the baseline by {_tests_text(c)}, {adjust}; "
            line += "* p<0.05, ** p<0.01"
        lines.append(line + ".")
    return lines + c.notes


def _tests_text(c: Comparison) -> str:
    """Which test gave each row's p-values: one name when all rows share it, else the rows of
    each test."""
    by_test: dict[str, list[str]] = {}
    for r in c.rows:
        if r.p_value and r.p_test:
            by_test.setdefault(r.p_test, []).append(r.label)
    if len(by_test) == 1:
        return P_TEST_TEXT[next(iter(by_test))]
    return ", by ".join(
        f"{P_TEST_TEXT[test]} (rows: {'; '.join(labels)})" for test, labels in by_test.items()
    )


def _model_scales(c: Comparison) -> str:
    """The model-based columns that are not x100 (docs/metrics.md "Persona consistency")."""
    shown = [SHORT_NAMES.get(m, m) for m in c.metrics if m == "c_score" or m.startswith("judge_")]
    return "".join(
        f", {n}" + (" = NLI C-score, sum over persona sentences" if n == "C" else " 1..5")
        for n in shown
    )


def _has_params(c: Comparison) -> bool:
    return any(r.trainable_params is not None for r in c.rows)


# ------------------------------------------------------------------------------------ the model


@dataclass(frozen=True)
class Column:
    metric: str
    header: str  # short name (SHORT_NAMES)
    arrow: str  # "↑" higher is better, "↓" lower, "" descriptive


@dataclass(frozen=True)
class Cell:
    """One table cell. Value cells: `text` (value at display precision), `flag` (a mark a note
    explains, e.g. †), `bold` (best in its column), `spread` (CI or ±std, '' when compact).
    Gain cells: `text` (signed gain), `mark` (significance), `p` (formatted p-value, '' when
    none or compact), `positive`. `text` None: no value."""

    text: str | None = None
    flag: str = ""
    bold: bool = False
    spread: str = ""
    mark: str = ""
    p: str = ""
    positive: bool = False


@dataclass
class ValueRow:
    label: str
    source: str  # "run" or "paper"
    is_baseline: bool
    params: str  # trainable parameters, short ('' when unknown)
    cells: list[Cell]


@dataclass
class GainRow:
    label: str
    vs: str  # the baseline's label
    cells: list[Cell]
    avg: str  # signed AVG gain ('' when none)


@dataclass
class Table:
    """What md, LaTeX and rich draw: the value table, the gain table (None without gains) and
    the legend lines."""

    columns: list[Column]
    params: bool  # a Trainable column
    rows: list[ValueRow]
    gains: list[GainRow] | None
    gain_baseline: str  # what the gains are relative to (title of the gain table)
    legend: list[str]
    p_adjust_short: str = ""  # ", Holm-adjusted per row" (LaTeX's gain caption)
    compact: bool = False


def _value_cells(c: Comparison, r: ComparisonRow) -> list[Cell]:
    cells = []
    for m in c.metrics:
        v = r.values.get(m)
        if v is None:
            cells.append(Cell())
            continue
        cells.append(
            Cell(fmt_value(v), flag=r.flags.get(m, ""), bold=m in r.best, spread=_spread(c, r, m))
        )
    return cells


def _gain_cells(c: Comparison, r: ComparisonRow) -> list[Cell]:
    cells = []
    for m in c.metrics:
        g = r.gain.get(m)
        if g is None:
            cells.append(Cell())
            continue
        p = _shown_p(c, r, m)
        shown_p = fmt_p(p) if p is not None and not c.compact else ""
        cells.append(Cell(fmt_gain(g), mark=significance_mark(p), p=shown_p, positive=g > 0))
    return cells


def build_table(c: Comparison) -> Table:
    """The column model of a comparison (built once, drawn by every human-readable renderer)."""
    columns = [Column(m, _header(m), _hib_arrow(c, m)) for m in c.metrics]
    rows = [
        ValueRow(
            r.label, r.source, r.is_baseline, fmt_params(r.trainable_params), _value_cells(c, r)
        )
        for r in c.rows
    ]
    gains = None
    if _has_gains(c):
        gains = [
            GainRow(r.label, r.baseline, _gain_cells(c, r), fmt_gain(r.avg_gain))
            for r in c.rows
            if r.baseline is not None
        ]
    adjust = ""
    if c.p_adjust == "holm":
        adjust = ", Holm-adjusted " + ("per row" if c.p_adjust_scope == "row" else "per table")
    return Table(
        columns=columns,
        params=_has_params(c),
        rows=rows,
        gains=gains,
        gain_baseline=c.baseline or "paper PT",
        legend=_legend_lines(c),
        p_adjust_short=adjust,
        compact=c.compact,
    )
