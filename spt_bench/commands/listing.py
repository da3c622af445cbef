"""`spt-bench methods` and `spt-bench presets`: what can be run."""

from __future__ import annotations

import typer

from spt_bench.commands.base import app, command


@command(app, "methods")
def methods_cmd() -> None:
    """List the registered methods: what trains, which prompt template, their options."""
    from spt_bench.tables import methods_table, output_console

    methods_table(output_console())


@command(app, "presets")
def presets_cmd(
    name: str | None = typer.Argument(None, help="One preset: its details and settings."),
    full: bool = typer.Option(
        False, "--full", "--verbose", "-v", help="Every preset's details, not one line each."
    ),
) -> None:
    """List the run presets (--preset NAME), one line each: method, model, purpose."""
    from spt_bench.presets import presets_text

    typer.echo(presets_text(name, full=full), nl=False)
