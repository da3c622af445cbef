"""Every compare table in docs/results.md is what the compare command printed above it gives
on the run folders committed under docs/results/ (so published tables regenerate)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results.md"
COMMAND = re.compile(r"^`(spt-bench compare [^`]+)`")


def compare_blocks(lines: list[str]) -> list[tuple[int, str, int]]:
    """(line of the command, command, first table line after it) for each compare command
    followed by a table before the next heading."""
    out = []
    for i, line in enumerate(lines):
        match = COMMAND.match(line)
        if not match:
            continue
        for j in range(i + 1, len(lines)):
            if lines[j].startswith("#"):
                break
            if lines[j].startswith("|"):
                out.append((i, match.group(1), j))
                break
    return out


def test_every_compare_table_in_results_md_is_reproduced_by_its_command(monkeypatch):
    from cli import app

    monkeypatch.chdir(ROOT)
    lines = RESULTS.read_text(encoding="utf-8").splitlines()
    blocks = compare_blocks(lines)
    assert blocks, "docs/results.md has no compare command followed by a table"
    covered: set[int] = set()
    for _, command, start in blocks:
        args = shlex.split(command)[1:]
        assert "--format" in args and "md" in args, f"{command}: print md to be comparable"
        assert all(a.startswith("docs/results") for a in args[1:2]), command
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (command, result.output)
        produced = result.stdout.rstrip("\n").splitlines()
        published = lines[start : start + len(produced)]
        assert published == produced, f"table below `{command}` differs from its output"
        covered.update(range(start, start + len(produced)))
    tables = [i for i, ln in enumerate(lines) if ln.startswith("| Run |")]
    assert tables and all(i in covered for i in tables), "a compare table has no command above"
