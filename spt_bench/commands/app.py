"""The Typer app with every command registered (importing a command module registers it; the
order of the imports is the order of `spt-bench --help`)."""

from __future__ import annotations

# isort: off
from spt_bench.commands import data, score, listing, run, compare, chat, bench, plan  # noqa: F401 - registers
from spt_bench.commands.base import app

# isort: on

__all__ = ["app"]
