"""The Typer app and what every command shares: one-line errors (exit 2), clean SIGINT/SIGTERM
handling, and the flags the config schema derives for a command. Commands live one concern per
module beside this one; none imports torch at module level, so `spt-bench --help` is instant."""

from __future__ import annotations

import functools
import inspect
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
    # plain click help: wraps long flag names instead of cutting them at 80 columns
    rich_markup_mode=None,
)
data_app = typer.Typer(
    help="Inspect, split and convert persona-dialogue data.", no_args_is_help=True
)
plot_app = typer.Typer(
    help="Plots from run folders (PNG by default; SVG/PDF by extension).", no_args_is_help=True
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"spt-bench {version('spt-bench')}")
        except PackageNotFoundError:
            typer.echo("spt-bench (not installed)")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Selective Prompt Tuning and its baselines for persona dialogue: train, decode, score, compare."""


def command(parent: typer.Typer, *args: Any, interrupt_hint: str = "", **kwargs: Any) -> Callable:
    """Register a command whose user errors print as one line (`error: ...`) and exit 2, and
    which SIGINT/SIGTERM end cleanly (one line, exit 128 + signal number; `interrupt_hint`
    is added to that line)."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*a: Any, **k: Any) -> Any:
            from spt_bench.interrupt import interruptible

            try:
                with interruptible():
                    return fn(*a, **k)
            except SptBenchError as e:
                from spt_bench.cli_flags import flag_message

                typer.echo(f"error: {flag_message(str(e))}", err=True)
                raise typer.Exit(e.exit_code) from None
            except KeyboardInterrupt as e:
                from spt_bench.interrupt import Interrupted

                code = e.exit_code if isinstance(e, Interrupted) else 130
                name = str(e) if isinstance(e, Interrupted) else "SIGINT"
                typer.echo(f"error: interrupted by {name}{interrupt_hint}", err=True)
                raise typer.Exit(code) from None

        return parent.command(*args, **kwargs)(wrapper)

    return deco


def _with_flags(fn: Callable, command_name: str = "run") -> Callable:
    """Give `fn` the flags the schema derives for `command_name` as keyword parameters (typer
    reads __signature__)."""
    from spt_bench.cli_flags import typer_parameters

    sig = inspect.signature(fn)
    fixed = [p for p in sig.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    params = fixed + typer_parameters(command_name)
    fn.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    return fn


app.add_typer(data_app, name="data")
app.add_typer(plot_app, name="plot")
