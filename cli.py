"""spt-bench command line: the Typer app (entry point `spt-bench`). Each command is a thin
wrapper in spt_bench/commands/ that builds a validated config and calls library code."""

from __future__ import annotations

from spt_bench.commands.app import app

__all__ = ["app"]

if __name__ == "__main__":
    app()
