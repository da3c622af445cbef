"""spt-bench command line: thin wrappers that build validated configs and call library code.

Heavy libraries (torch, transformers, datasets, metrics backends) are imported inside the
commands, never at module level, so `spt-bench --help` answers instantly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer

from spt_bench.errors import SptBenchError

app = typer.Typer(
    name="spt-bench",
    help="Selective Prompt Tuning and its baselines for persona dialogue: train, decode, score, compare.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect, split and convert persona-dialogue data.", no_args_is_help=True)
plot_app = typer.Typer(help="Plots from run folders (PNG by default; SVG/PDF by extension).", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(plot_app, name="plot")


def command(parent: typer.Typer, *args: Any, **kwargs: Any) -> Callable:
    """Register a command whose user errors print as one line (`error: ...`) and exit 2."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*a: Any, **k: Any) -> Any:
            try:
                return fn(*a, **k)
            except SptBenchError as e:
                typer.echo(f"error: {e}", err=True)
                raise typer.Exit(e.exit_code) from None

        return parent.command(*args, **kwargs)(wrapper)

    return deco


# ---------------------------------------------------------------- data commands (issue 2)

# ---------------------------------------------------------------- score command (issue 3)

# ---------------------------------------------------------------- methods/run/evaluate (issue 4)

# ---------------------------------------------------------------- compare/plot/chat (issue 6)

# ---------------------------------------------------------------- bench (issue 8)


if __name__ == "__main__":
    app()
