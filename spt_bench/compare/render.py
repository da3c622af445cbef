"""Renderers of a comparison: markdown, LaTeX and rich draw the column model
(`spt_bench.compare.table`); CSV and JSON write every number at full precision."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from spt_bench.compare.build import Comparison, build_comparison
from spt_bench.compare.runs import load_runs
from spt_bench.compare.table import Cell, Table, build_table
from spt_bench.errors import SptBenchError

FORMATS = ("rich", "md", "csv", "json", "latex")


SUFFIX_FORMATS = {".md": "md", ".csv": "csv", ".json": "json", ".tex": "latex", ".txt": "rich"}


def render_markdown(c: Comparison) -> str:
    t = build_table(c)
    out = _md_values(t)
    if t.gains is not None:
        out += _md_gains(t)
    out.append("")
    out += [f"- {_md_escape(line)}" for line in t.legend]
    return "\n".join(out) + "\n"


def _md_values(t: Table) -> list[str]:
    head = "| Run | " + ("Trainable | " if t.params else "")
    out = [head + " | ".join(f"{col.header} {col.arrow}".strip() for col in t.columns) + " |"]
    out.append("|---|" + ("---:|" if t.params else "") + "---:|" * len(t.columns))
    for r in t.rows:
        cells = [_md_value(cell) for cell in r.cells]
        if t.params:
            cells.insert(0, r.params or "–")
        label = r.label + (" (baseline)" if r.is_baseline else "")
        out.append(f"| {_md_escape(label)} | " + " | ".join(cells) + " |")
    return out


def _md_value(cell: Cell) -> str:
    if cell.text is None:
        return "–"
    text = cell.text + cell.flag
    if cell.bold:
        text = f"**{text}**"
    return f"{text} {cell.spread}" if cell.spread else text


def _md_gains(t: Table) -> list[str]:
    out = ["", f"Relative gain (%) vs baseline: {_md_escape(t.gain_baseline)}", ""]
    out.append("| Run | vs | " + " | ".join(col.header for col in t.columns) + " | AVG |")
    out.append("|---|---|" + "---:|" * (len(t.columns) + 1))
    for r in t.gains or []:
        cells = [
            "–" if g.text is None else g.text + g.mark + (f" ({g.p})" if g.p else "")
            for g in r.cells
        ]
        cells.append(r.avg or "–")
        out.append(f"| {_md_escape(r.label)} | {_md_escape(r.vs)} | " + " | ".join(cells) + " |")
    return out


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


CSV_ID_FIELDS = (
    "label",
    "source",
    "path",
    "method",
    "model",
    "seed",
    "seeds",
    "n_seeds",
    "n",
    "trainable_params",
    "is_baseline",
)


def render_csv(c: Comparison) -> str:
    """Wide CSV at full precision: one row per table row; per metric value, CI, std and
    per-seed values (';'-separated, in the order of `seeds`), gain, raw and adjusted p; the
    row's flags last."""
    header = list(CSV_ID_FIELDS)
    for m in c.metrics:
        header += [m, f"{m}_ci_low", f"{m}_ci_high", f"{m}_std", f"{m}_per_seed"]
    header += ["baseline"]
    for m in c.metrics:
        header += [f"{m}_gain_pct", f"{m}_p", f"{m}_p_adj"]
    header += ["avg_gain_pct", "flags"]  # flags: metric=mark pairs, explained in the notes
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for r in c.rows:
        rec: list[Any] = [
            r.label,
            r.source,
            r.path or "",
            r.method or "",
            r.model or "",
            "" if r.seed is None else r.seed,
            ";".join(str(s) for s in r.seeds),
            r.n_seeds,
            "" if r.n is None else r.n,
            "" if r.trainable_params is None else r.trainable_params,
            int(r.is_baseline),
        ]
        for m in c.metrics:
            lo, hi = r.ci95.get(m, (None, None))
            rec += [_csv_num(r.values.get(m)), _csv_num(lo), _csv_num(hi)]
            rec += [_csv_num(r.std.get(m)), ";".join(_csv_num(v) for v in r.per_seed.get(m, []))]
        rec.append(r.baseline or "")
        for m in c.metrics:
            rec += [_csv_num(r.gain.get(m)), _csv_num(r.p_value.get(m))]
            rec.append(_csv_num(r.p_adjusted.get(m)))
        rec.append(_csv_num(r.avg_gain))
        rec.append(";".join(f"{m}={mark}" for m, mark in r.flags.items()))
        writer.writerow(rec)
    return buf.getvalue()


def _csv_num(x: float | None) -> str:
    return "" if x is None else repr(float(x))


def render_json(c: Comparison) -> str:
    return json.dumps(c.to_json(), indent=2, ensure_ascii=False) + "\n"


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "†": r"$^\dagger$",
}


def _tex(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def render_latex(c: Comparison) -> str:
    """booktabs tables: values (best bold, CI or ±std as a small subscript unless compact) and
    gains with marks. Pick columns with `metrics` (--metric) to fit a paper column."""
    t = build_table(c)
    lines = _latex_values(t)
    if t.gains is not None:
        lines += _latex_gains(t)
    lines += ["", *[f"% {line}" for line in t.legend]]
    return "\n".join(lines) + "\n"


_LATEX_ARROWS = {"↑": r"$\uparrow$", "↓": r"$\downarrow$", "": ""}


def _latex_values(t: Table) -> list[str]:
    lines = [
        "% spt-bench compare; needs \\usepackage{booktabs}",
        r"\begin{tabular}{l" + "r" * (len(t.columns) + t.params) + "}",
        r"\toprule",
        "Run & "
        + ("Trainable & " if t.params else "")
        + " & ".join(f"{_tex(col.header)}{_LATEX_ARROWS[col.arrow]}" for col in t.columns)
        + r" \\",
        r"\midrule",
    ]
    paper_started = False
    for r in t.rows:
        if r.source == "paper" and not paper_started:
            lines.append(r"\midrule")
            paper_started = True
        cells = [_latex_value(cell) for cell in r.cells]
        if t.params:
            cells.insert(0, r.params or "--")
        label = r.label + (" (baseline)" if r.is_baseline else "")
        lines.append(_tex(label) + " & " + " & ".join(cells) + r" \\")
    return lines + [r"\bottomrule", r"\end{tabular}"]


def _latex_value(cell: Cell) -> str:
    if cell.text is None:
        return "--"
    text = cell.text + _tex(cell.flag)
    if cell.bold:
        text = rf"\textbf{{{text}}}"
    if cell.spread:
        spread = cell.spread.replace("±", r"\pm ").replace(" ", "")
        text += rf"$_{{{spread}}}$"
    return text


def _latex_gains(t: Table) -> list[str]:
    lines = [
        "",
        f"% relative gain (%) vs baseline; * p<0.05, ** p<0.01 (see the legend{t.p_adjust_short})",
        r"\begin{tabular}{l" + "r" * (len(t.columns) + 1) + "}",
        r"\toprule",
        "Run & " + " & ".join(_tex(col.header) for col in t.columns) + r" & AVG \\",
        r"\midrule",
    ]
    for r in t.gains or []:
        cells = [
            "--" if g.text is None else g.text + (f"$^{{{g.mark}}}$" if g.mark else "")
            for g in r.cells
        ]
        cells.append(r.avg or "--")
        lines.append(_tex(f"{r.label} vs {r.vs}") + " & " + " & ".join(cells) + r" \\")
    return lines + [r"\bottomrule", r"\end{tabular}"]


def render_rich(c: Comparison, console: Any) -> None:
    """Print the comparison as rich tables (values with CIs, then gains with p-values)."""
    from rich.text import Text

    t = build_table(c)
    _print_whole(console, _rich_values(t))
    if t.gains is not None:
        _print_whole(console, _rich_gains(t))
    for line in t.legend:
        console.print(Text(line, style="dim"), soft_wrap=not console.is_terminal)


def _rich_values(t: Table) -> Any:
    from rich.table import Table as RichTable
    from rich.text import Text

    table = RichTable(title="Comparison", title_style="bold", show_lines=False)
    table.add_column("Run", overflow="fold", min_width=14)
    if t.params:
        table.add_column("Trainable", justify="right")
    for col in t.columns:
        table.add_column(f"{col.header}{col.arrow}", justify="right")
    last_run = max((i for i, r in enumerate(t.rows) if r.source == "run"), default=-1)
    for i, r in enumerate(t.rows):
        cells = []
        for cell in r.cells:
            if cell.text is None:
                cells.append(Text("–", style="dim"))
                continue
            text = Text(cell.text + cell.flag, style="bold green" if cell.bold else "")
            if cell.spread:
                text.append(f"\n{cell.spread}", style="dim")
            cells.append(text)
        label = Text(r.label, style="italic" if r.source == "paper" else "")
        if r.is_baseline:
            label.append(" (baseline)", style="cyan")
        if t.params:
            cells.insert(0, Text(r.params or "–", style="dim"))
        table.add_row(label, *cells, end_section=i == last_run)
    return table


def _rich_gains(t: Table) -> Any:
    from rich.table import Table as RichTable
    from rich.text import Text

    gains = RichTable(title="Relative gain (%) vs baseline", title_style="bold")
    gains.add_column("Run", overflow="fold", min_width=14)
    gains.add_column("vs", overflow="fold")
    for col in t.columns:
        gains.add_column(col.header, justify="right")
    gains.add_column("AVG", justify="right", style="bold")
    for r in t.gains or []:
        cells = []
        for g in r.cells:
            if g.text is None:
                cells.append(Text("–", style="dim"))
                continue
            text = Text(g.text + g.mark, style="green" if g.positive else "red")
            if g.p:
                text.append(f"\n{g.p}", style="dim")
            cells.append(text)
        cells.append(Text(r.avg or "–"))
        gains.add_row(r.label, r.vs, *cells)
    return gains


def _print_whole(console: Any, table: Any) -> None:
    """Print a table; off a terminal (a log, a pipe, a file) at its natural width, so rich never
    shortens a label or a number to fit 80 columns ("…")."""
    if console.is_terminal:
        console.print(table)
        return
    from rich.measure import Measurement

    natural = Measurement.get(console, console.options.update_width(100_000), table).maximum
    width = console.width
    console.width = max(width, natural)  # print() caps its width at the console's
    try:
        console.print(table)
    finally:
        console.width = width


RENDERERS: dict[str, Callable[[Comparison], str]] = {
    "md": render_markdown,
    "csv": render_csv,
    "json": render_json,
    "latex": render_latex,
}


def render(c: Comparison, fmt: str) -> str:
    """Render to text in one of md/csv/json/latex (rich goes through render_rich)."""
    if fmt == "rich":
        from rich.console import Console

        buf = io.StringIO()
        render_rich(c, Console(file=buf, width=200, force_terminal=False, color_system=None))
        return buf.getvalue()
    try:
        return RENDERERS[fmt](c)
    except KeyError:
        raise SptBenchError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}") from None


def format_from_path(path: str | os.PathLike) -> str | None:
    return SUFFIX_FORMATS.get(Path(path).suffix.lower())


def output_format(fmt: str | None, out: str | os.PathLike | None) -> str:
    """The format to write: --format, else --out's suffix, else rich. An unknown --out suffix
    without --format, or a --format that contradicts a known suffix, is refused."""
    if fmt is not None and fmt not in FORMATS:
        raise SptBenchError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if out is None:
        return fmt or "rich"
    inferred = format_from_path(out)
    if fmt is None:
        if inferred is None:
            suffix = Path(out).suffix or "(none)"
            raise SptBenchError(
                f"--out {out}: unknown file type {suffix}; use "
                f"{' '.join(SUFFIX_FORMATS)} or give --format"
            )
        return inferred
    if inferred is not None and inferred != fmt:
        raise SptBenchError(f"--out {out} is a {inferred} file but --format is {fmt}")
    return fmt


def compare_command(
    specs: Sequence[str | os.PathLike],
    *,
    baseline: str | None = None,
    fmt: str | None = None,
    out: str | os.PathLike | None = None,
    paper: bool = False,
    force: bool = False,
    metrics: Sequence[str] | None = None,
    p_adjust: str = "holm",
    per_seed: bool = False,
    compact: bool = False,
    console: Any = None,
    p_adjust_scope: str = "row",
    err: Callable[[str], None] | None = None,
) -> Comparison:
    """What `spt-bench compare` does: load, check, compare, then print or write one format.

    The format is --format, else the --out suffix (.md .csv .json .tex .txt), else rich on the
    terminal. Warnings (incomplete runs, forced comparisons) go to `err` (stderr in the CLI) so
    machine formats on stdout stay parseable.
    """

    def warn(message: str) -> None:
        (err or (lambda m: print(m, file=sys.stderr)))(f"warning: {message}")

    fmt = output_format(fmt, out)
    runs = load_runs(specs, warn=warn)
    comparison = build_comparison(
        runs,
        baseline=baseline,
        force=force,
        paper=paper,
        metrics=metrics,
        p_adjust=p_adjust,
        group_seeds=not per_seed,
        compact=compact,
        p_adjust_scope=p_adjust_scope,
    )
    for note in comparison.notes:
        if note.startswith("forced:"):
            warn(note)
    if out is not None:
        from spt_bench.io import atomic_write_text

        atomic_write_text(out, render(comparison, fmt))
        (err or (lambda m: print(m, file=sys.stderr)))(f"wrote {out} ({fmt})")
    elif fmt == "rich":
        if console is None:
            from rich.console import Console

            console = Console()
        render_rich(comparison, console)
    else:
        sys.stdout.write(render(comparison, fmt))
    return comparison
