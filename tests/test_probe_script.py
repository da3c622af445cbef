"""scripts/collapse_probe.sh: seeds x variants, publish, and resume of an unfinished run;
scripts/probe_table.py reads what it publishes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


# slow (the bash script runs three tiny runs and a table in subprocesses): the fast suite keeps
# what it drives - runs, resume of an unfinished run (test_run_e2e, test_run_folder) and the
# text-free publishing (test_results_doc)
@pytest.mark.slow
def test_probe_script_runs_seeds_publishes_and_resumes(tmp_path: Path) -> None:
    wrapper = tmp_path / "spt-bench"
    wrapper.write_text(
        "#!/usr/bin/env bash\n"
        f'exec {sys.executable} -m cli "$@" --model tiny-random --max-steps 2 '
        "--eval-limit 2 --no-model-metrics\n"
    )
    wrapper.chmod(0o755)
    out, publish = tmp_path / "runs", tmp_path / "published"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPT_BENCH": str(wrapper),
           "PROBE_PRESET": "smoke", "PROBE_SEEDS": "0 1", "PROBE_VARIANTS": "authors",
           "PROBE_PUBLISH": str(publish), "PROBE_THREADS": "1"}  # fmt: skip
    cmd = ["bash", str(ROOT / "scripts/collapse_probe.sh"), str(out)]
    first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    for name in ("authors-s0", "authors-s1"):
        assert json.loads((out / name / "config.json").read_text())["seed"] == int(name[-1])
        assert {p.name for p in (publish / name).iterdir()} == {
            "config.json",
            "metrics.json",
            "example_stats.jsonl",  # text-free per-example scores, so compare can re-derive tables
            "train_log.jsonl",
        }
        stats = (publish / name / "example_stats.jsonl").read_text()
        reference = json.loads((out / name / "predictions.jsonl").read_text().splitlines()[0])
        assert reference["reference"] not in stats
    table = subprocess.run(
        [sys.executable, str(ROOT / "scripts/probe_table.py"), *sorted(publish.iterdir())],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr[-2000:]
    rows = [line for line in table.stdout.splitlines() if line.startswith("| authors'")]
    assert [row.split(" | ")[:2] for row in rows] == [
        ["| authors', 0", "done"],
        ["| authors', 1", "done"],
    ]
    # an unfinished run (no metrics.json) resumes from its saved config; a finished one is skipped
    (out / "authors-s1" / "metrics.json").unlink()
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "== authors-s0: done" in again.stdout
    assert (out / "authors-s1" / "metrics.json").is_file()
