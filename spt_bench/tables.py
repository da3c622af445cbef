"""Consoles and tables for command output that never cut a name or a value.

Rich lays tables out for the terminal's width and, when stdout is not a terminal (a pipe, a
log file, CI), for 80 columns: long cells were then wrapped and words cut with an ellipsis, so
`spt-bench methods | grep prefix-tuning` found nothing. `output_console` keeps the terminal's
width on a terminal and is wide (`PIPE_WIDTH`) elsewhere, so a table keeps its natural width;
`fold_table` columns fold a word too long for its column instead of cutting it."""

from __future__ import annotations

from typing import Any

PIPE_WIDTH = 1000  # columns when not on a terminal: tables keep their natural width


def output_console(*, stderr: bool = False) -> Any:
    from rich.console import Console

    console = Console(stderr=stderr)
    if not console.is_terminal:
        console = Console(stderr=stderr, width=PIPE_WIDTH)
    return console


def fold_table(columns: list[str], *, right: tuple[str, ...] = (), **kwargs: Any) -> Any:
    """A rich Table whose columns fold (wrap anywhere) rather than truncate."""
    from rich.table import Table

    table = Table(**kwargs)
    for col in columns:
        table.add_column(col, overflow="fold", justify="right" if col in right else "left")
    return table


def methods_table(console: Any) -> None:
    """`spt-bench methods`: every registered method, what trains, template, options and its
    trainable parameters on SmolLM2-135M (counted on the meta device: ~5-10 s, announced on
    stderr first so the command never sits silent)."""
    import dataclasses
    import sys

    from spt_bench.methods import list_methods
    from spt_bench.peft_method import EXAMPLE_OPTIONS_FOR_COUNTS, trainable_counts_on_meta

    print(
        "counting each method's trainable parameters on SmolLM2-135M (shapes only, no weights)...",
        file=sys.stderr,
        flush=True,
    )
    try:
        counts: dict[str, Any] = trainable_counts_on_meta("smollm2-135m")
        note = "trainable: parameters trained on SmolLM2-135M with the default options"
    except Exception as e:  # noqa: BLE001 - e.g. the SmolLM2 asset is not installed
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        counts, note = {}, f"trainable counts unavailable: {first}"
    columns = ["name", "trains", "trainable", "template", "description", "options"]
    table = fold_table(columns, right=("trainable",), title="methods", caption=note)
    for cls in list_methods():
        opts = ", ".join(f.name for f in dataclasses.fields(cls.Options)) or "-"
        n = counts.get(cls.name, "-")
        shown = f"{n:,}" if isinstance(n, int) else str(n)
        if cls.name in EXAMPLE_OPTIONS_FOR_COUNTS and isinstance(n, int):
            example = ", ".join(f"{k}={v}" for k, v in EXAMPLE_OPTIONS_FOR_COUNTS[cls.name].items())
            shown += f" ({example})"
        row = (cls.name, "yes" if cls.trains else "no", shown, cls.template, cls.description, opts)
        table.add_row(*row)
    console.print(table)
