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


def test_publish_script_copies_only_text_free_files_and_refuses_unscored_runs(tmp_path):
    import subprocess

    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    for name in ("config.json", "metrics.json", "predictions.jsonl", "example_scores.jsonl"):
        (run / name).write_text("{}\n")
    script = ROOT / "scripts" / "publish_runs.sh"
    dest = tmp_path / "results"
    refused = subprocess.run(["bash", script, dest, run], capture_output=True, text=True)
    assert refused.returncode == 2 and "no example_stats.jsonl" in refused.stderr
    assert not dest.exists()
    (run / "example_stats.jsonl").write_text("{}\n")
    (run / "train_log.jsonl").write_text("{}\n")
    done = subprocess.run(["bash", script, dest, f"{run}/"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (dest / "r1").iterdir()) == [
        "config.json",
        "example_stats.jsonl",
        "metrics.json",
        "train_log.jsonl",
    ]
