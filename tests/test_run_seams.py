"""The seams between commands (issue 23): a result is bound to its inputs by content, no
command writes into another's run folder, a moved folder stops its writer, and timings count
every process. Each test is named after the behaviour it guards."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from spt_bench.data.resolve import sample_path

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
TINY = ["--model", "tiny-random", "--no-bertscore", "--no-model-metrics"]
# no training: text prompting decodes the test split of the given data
DECODE_ONLY = [*TINY, "--method", "text-prompt", "--eval-limit", "3", "--max-new-tokens", "4"]


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _references(run: Path) -> list[str]:
    return [json.loads(x)["reference"] for x in (run / "predictions.jsonl").read_text().split("\n")
            if x.strip()]  # fmt: skip


def _altered_copy(src: Path, dest: Path) -> None:
    """The same dialogues with every response changed (same ids, other references)."""
    lines = []
    for line in src.read_text().splitlines():
        if "\t" in line:
            left, right = line.split("\t", 1)
            right = "i changed this reply completely ." + right[len(right.split("\t")[0]) :]
            line = left + "\t" + right
        lines.append(line)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("\n".join(lines) + "\n")


@pytest.fixture()
def two_dirs(tmp_path, monkeypatch):
    """Directory a holds data/d.txt (the sample); directory b holds data/d.txt with other
    references. The run is made from a with the relative path data/d.txt."""
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "data").mkdir(parents=True)
    shutil.copy(sample_path(), a / "data" / "d.txt")
    _altered_copy(sample_path(), b / "data" / "d.txt")
    monkeypatch.chdir(a)
    res = runner.invoke(app, ["run", *DECODE_ONLY, "--data", "data/d.txt",
                              "--out", str(tmp_path / "runs"), "--name", "r"])  # fmt: skip
    assert res.exit_code == 0, res.output
    return a, b, tmp_path / "runs" / "r"


# ---------------------------------------------------------------- 1. inputs bound by content


def test_config_records_the_absolute_data_path_and_inputs_its_sha256(two_dirs) -> None:
    a, _, run = two_dirs
    assert _json(run / "config.json")["data"]["source"] == str(a / "data" / "d.txt")
    rec = _json(run / "inputs.json")["data"]["source"]
    assert rec["path"] == str(a / "data" / "d.txt") and rec["given"] == str(a / "data/d.txt")
    import hashlib

    assert rec["sha256"] == hashlib.sha256((a / "data" / "d.txt").read_bytes()).hexdigest()


def test_evaluate_from_another_directory_reads_the_recorded_file(two_dirs, monkeypatch) -> None:
    _, b, run = two_dirs
    before = _references(run)
    monkeypatch.chdir(b)  # here data/d.txt names a file with other references
    res = runner.invoke(app, ["evaluate", str(run), "--no-bertscore", "--no-model-metrics"])
    assert res.exit_code == 0, res.output
    assert _references(run) == before


def test_evaluate_refuses_a_data_file_whose_content_changed(two_dirs) -> None:
    a, b, run = two_dirs
    shutil.copy(b / "data" / "d.txt", a / "data" / "d.txt")
    metrics = (run / "metrics.json").read_bytes()
    res = runner.invoke(app, ["evaluate", str(run), "--no-bertscore", "--no-model-metrics"])
    assert res.exit_code == 2
    assert "is not the data this run used" in res.output and len(res.output.splitlines()) == 1
    assert (run / "metrics.json").read_bytes() == metrics  # nothing archived or replaced


def test_a_moved_data_file_is_accepted_through_data_only_with_the_same_content(two_dirs) -> None:
    a, b, run = two_dirs
    renamed = a / "renamed.txt"
    shutil.copy(a / "data" / "d.txt", renamed)
    res = runner.invoke(app, ["evaluate", str(run), "--no-bertscore", "--no-model-metrics",
                              "--data", str(renamed)])  # fmt: skip
    assert res.exit_code == 2 and "must keep the name d.txt" in res.output
    moved = a / "elsewhere" / "d.txt"
    moved.parent.mkdir()
    (a / "data" / "d.txt").rename(moved)
    res = runner.invoke(app, ["evaluate", str(run), "--no-bertscore", "--no-model-metrics"])
    assert res.exit_code == 2 and "pass --data with a copy of it" in res.output
    res = runner.invoke(app, ["evaluate", str(run), "--no-bertscore", "--no-model-metrics",
                              "--data", str(b / "data" / "d.txt")])  # fmt: skip
    assert res.exit_code == 2 and "is not the data this run used" in res.output
    res = runner.invoke(app, ["evaluate", str(run), "--no-bertscore", "--no-model-metrics",
                              "--data", str(moved)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert any("moved from" in n for n in _json(run / "metrics.json")["evaluation_inputs"])


def test_resume_takes_the_same_file_spelled_relative_or_absolute(two_dirs, tmp_path) -> None:
    a, _, run = two_dirs
    (run / "metrics.json").unlink()
    res = runner.invoke(app, ["run", *DECODE_ONLY, "--data", str(a / "data" / "d.txt"),
                              "--out", str(run), "--resume"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert not (run / "resume_log.jsonl").exists()  # not a changed setting


def test_resume_accepts_a_moved_data_file_with_the_recorded_content_only(two_dirs) -> None:
    a, b, run = two_dirs
    (run / "metrics.json").unlink()
    res = runner.invoke(app, ["run", *DECODE_ONLY, "--data", str(b / "data" / "d.txt"),
                              "--out", str(run), "--resume"])  # fmt: skip
    assert res.exit_code == 2 and "data.source" in res.output
    moved = a / "moved" / "d.txt"
    moved.parent.mkdir()
    (a / "data" / "d.txt").rename(moved)
    res = runner.invoke(app, ["run", *DECODE_ONLY, "--data", str(moved),
                              "--out", str(run), "--resume"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert _json(run / "config.json")["data"]["source"] == str(moved)


# ---------------------------------------------------------------- 3. score never writes a run


@pytest.fixture()
def finished(finished_full_ft) -> Path:
    """The session's finished full-ft run (conftest), copied by the tests that change it."""
    return finished_full_ft


@pytest.mark.parametrize("target", ["checkpoint/state.json", "train_log.jsonl", "env.json",
                                    "checkpoint/", "newdir/x.json"])  # fmt: skip
def test_score_out_never_lands_inside_a_run_folder(finished, tmp_path, target) -> None:
    run = tmp_path / "r"
    shutil.copytree(finished, run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    res = runner.invoke(app, ["score", str(run / "predictions.jsonl"), "--no-bertscore",
                              "--out", str(run / target)])  # fmt: skip
    assert res.exit_code == 2 and "is inside run folder" in res.output
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert runner.invoke(app, ["plot", "training", str(run), "--out", str(tmp_path)]).exit_code == 0


def test_two_scorings_in_the_same_second_get_two_folders(finished, tmp_path, monkeypatch) -> None:
    """A second scoring starts while the first is writing, within the same second."""
    import spt_bench.metrics.files as files
    import spt_bench.run_folder as rf

    class Frozen(rf.datetime):
        @classmethod
        def now(cls, tz=None):
            return rf.datetime(2026, 12, 4, 12, 0, 0)

    monkeypatch.setattr(rf, "datetime", Frozen)
    run = tmp_path / "r"
    shutil.copytree(finished, run)
    original, calls = files.write_example_scores, []

    def write_and_race(report, path):
        calls.append(path)
        if len(calls) == 1:  # the other scoring runs now, start to end
            files.score_file(run / "predictions.jsonl", bertscore=None, n_resamples=0)
        original(report, path)

    monkeypatch.setattr(files, "write_example_scores", write_and_race)
    files.score_file(run / "predictions.jsonl", bertscore=None, n_resamples=0)
    folders = sorted(p for p in (run / "scores").iterdir())
    assert [p.name for p in folders] == ["20261204-120000", "20261204-120000-2"]
    for folder in folders:  # each holds one complete scoring
        assert {p.name for p in folder.iterdir()} >= {"metrics.json", "example_scores.jsonl"}


def test_scoring_two_standalone_files_in_one_folder_keeps_both_results(finished, tmp_path) -> None:
    rows = (finished / "predictions.jsonl").read_text().splitlines()
    (tmp_path / "a.jsonl").write_text("\n".join(rows[:2]) + "\n")
    (tmp_path / "b.jsonl").write_text("\n".join(rows[1:]) + "\n")
    for name in ("a", "b"):
        res = runner.invoke(app, ["score", str(tmp_path / f"{name}.jsonl"), "--no-bertscore"])
        assert res.exit_code == 0, res.output
    assert _json(tmp_path / "a.metrics.json")["n"] == 2
    assert _json(tmp_path / "b.metrics.json")["n"] == len(rows) - 1
    out = tmp_path / "shared.json"
    assert runner.invoke(app, ["score", str(tmp_path / "a.jsonl"), "--no-bertscore",
                               "--out", str(out)]).exit_code == 0  # fmt: skip
    res = runner.invoke(app, ["score", str(tmp_path / "b.jsonl"), "--no-bertscore",
                              "--out", str(out)])  # fmt: skip
    assert res.exit_code == 2 and "holds the scores of another predictions file" in res.output
    assert _json(out)["n"] == 2


# ---------------------------------------------------------------- 4. a moved folder stops its writer


def test_a_run_whose_folder_is_moved_stops_and_the_moved_folder_resumes(tmp_path) -> None:
    from spt_bench.config import config_from_dict
    from spt_bench.io import FolderMovedError
    from spt_bench.runner import run

    old, new = tmp_path / "r", tmp_path / "moved"

    def move_at_step_2(step: int) -> None:
        if step == 2:
            old.rename(new)

    config = config_from_dict(dict(
        method="full-ft", model="tiny-random", max_steps=6, save_every=1, eval_limit=3,
        dev_limit=2, max_new_tokens=4, bertscore=False, model_metrics=False, out=str(tmp_path),
        name="r", log_every=1,
    ))  # fmt: skip
    with pytest.raises(FolderMovedError, match="was moved or removed"):
        run(config, progress=False, on_train_step=move_at_step_2)
    assert not old.exists()  # not recreated under the old name
    res = runner.invoke(app, ["run", "--resume", "--out", str(new)])
    assert res.exit_code == 0, res.output
    assert _json(new / "checkpoint" / "state.json")["steps"] == 6


# ---------------------------------------------------------------- 5. timings over killed processes


# slow (a subprocess decoding ConvAI2, killed with SIGKILL): the fast suite keeps the same
# accounting in-process - test_run_folder's resumed run reports the time of every process, the
# killed one's included, and test_run_e2e's resume counts resumed and newly decoded rows
@pytest.mark.slow
def test_a_run_killed_while_decoding_counts_every_process_and_row(tmp_path, convai2_valid):
    run = tmp_path / "k"
    args = [sys.executable, "-m", "cli", "run", *TINY, "--method", "text-prompt",
            "--data", str(convai2_valid), "--eval-limit", "300", "--eval-batch-size", "1",
            "--max-new-tokens", "24", "--out", str(run)]  # fmt: skip
    env = {**os.environ, "SPT_BENCH_HEARTBEAT_S": "0.2"}
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.time() + 120
        preds = run / "predictions.jsonl"
        while time.time() < deadline and proc.poll() is None:
            if preds.is_file() and preds.read_text().count("\n") >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        time.sleep(0.5)  # a heartbeat inside the decoding stage
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    decoded_before = preds.read_text().count("\n")
    assert 0 < decoded_before
    rows = [json.loads(x) for x in (run / "processes.jsonl").read_text().splitlines()]
    assert rows[0]["event"] == "start" and rows[0]["pid"] == proc.pid  # recorded at its start
    res = runner.invoke(app, ["run", "--resume", "--out", str(run)])
    assert res.exit_code == 0, res.output
    m = _json(run / "metrics.json")
    t = m["timings"]
    assert t["processes"] == 2
    assert [p["finished"] for p in t["by_process"]] == [False, True]
    assert t["by_process"][0]["decode_s"] > 0  # the killed process's decoding counts
    assert m["decode"]["n_decoded"] == m["n"] and m["decode"]["n_decoded_this_process"] < m["n"]
    assert m["decode"]["seconds"] == pytest.approx(t["decode_s"])
    stages = sum(v for k, v in t.items() if k.endswith("_s") and k != "total_s")
    assert t["total_s"] >= stages


# ---------------------------------------------------------------- 9. resume may skip a stage


def test_resume_may_skip_model_metrics_and_bertscore(tmp_path) -> None:
    base = ["run", "--model", "tiny-random", "--method", "text-prompt", "--eval-limit", "3",
            "--max-new-tokens", "4", "--out", str(tmp_path / "r")]  # fmt: skip
    res = runner.invoke(app, [*base, "--no-bertscore"])  # perplexity and hits@1 on
    assert res.exit_code == 0, res.output
    assert _json(tmp_path / "r" / "config.json")["score"]["model_metrics"] is True
    (tmp_path / "r" / "metrics.json").unlink()
    res = runner.invoke(app, [*base, "--no-bertscore", "--resume", "--no-model-metrics"])
    assert res.exit_code == 0, res.output
    assert _json(tmp_path / "r" / "metrics.json")["model_metrics"] is None
    res = runner.invoke(app, [*base, "--resume", "--max-new-tokens", "5"])
    assert res.exit_code == 2 and "changed settings" in res.output


# ---------------------------------------------------------------- 14. small things


def test_a_resume_decoded_by_hf_drops_the_vllm_export(finished, tmp_path) -> None:
    run = tmp_path / "r"
    shutil.copytree(finished, run)
    (run / "vllm-model").mkdir()
    (run / "vllm-model" / "model.safetensors").write_bytes(b"0" * 1024)
    (run / "metrics.json").unlink()
    res = runner.invoke(app, ["run", "--resume", "--out", str(run)])
    assert res.exit_code == 0, res.output
    assert not (run / "vllm-model").exists()


def test_the_lock_of_a_live_process_in_a_copied_folder_is_not_called_gone(finished, tmp_path):
    import socket

    run = tmp_path / "copy"
    shutil.copytree(finished, run)
    (run / "metrics.json").unlink()
    live = subprocess.Popen(["sleep", "60"])  # holds the original folder, say
    try:
        (run / ".lock").write_text(json.dumps({"pid": live.pid, "host": socket.gethostname(),
                                               "started_iso": "2026-01-01T00:00:00"}))  # fmt: skip
        res = runner.invoke(app, ["run", "--resume", "--out", str(run)])
    finally:
        live.kill()
        live.wait()
    assert res.exit_code == 0, res.output
    assert "is gone" not in res.output and "copy of a live run folder" in res.output


# ---------------------------------------------------------------- 8. fail before work starts


def _few_dialogues(tmp_path: Path) -> Path:
    """The first three dialogues of the bundled sample: too few for 20 hits@k candidates."""
    out, starts = [], 0
    for line in sample_path().read_text().splitlines():
        if line.startswith("1 "):
            starts += 1
            if starts > 3:
                break
        out.append(line)
    path = tmp_path / "few.txt"
    path.write_text("\n".join(out) + "\n")
    return path


def _bad_start_cases(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "not-a-model" / "notes.txt").write_text("hello\n")
    (tmp_path / "a-file").write_text("x\n")
    few = _few_dialogues(tmp_path)
    return {
        "lr-nan": (["--lr", "nan"], "must be > 0 and finite"),
        "lr-inf": (["--lr", "inf"], "must be > 0 and finite"),
        "seed": (["--seed", "-1"], "seed must be in [0,"),
        "vllm-head-size": (["--decode-engine", "vllm"], "head size 16"),
        "hits-pool": (["--data", str(few), "--model-metrics"], "distractors"),
        "model-folder": (["--model", str(tmp_path / "not-a-model")], "is not a model"),
        "peft-field": (["--method", "peft", "--peft-type", "PROMPT_TUNING"], "num_virtual_tokens"),
        "out-is-a-file": (["--out", str(tmp_path / "a-file" / "r")], "is a file, not a folder"),
        "out-unwritable": (["--out", "/proc/spt-bench-run"], "cannot write in /proc"),
    }


@pytest.mark.parametrize("case", ["lr-nan", "lr-inf", "seed", "vllm-head-size", "hits-pool",
                                  "model-folder", "peft-field", "out-is-a-file",
                                  "out-unwritable"])  # fmt: skip
def test_a_bad_start_fails_in_one_line_before_any_work_and_leaves_no_folder(tmp_path, case):
    args, message = _bad_start_cases(tmp_path)[case]
    base = ["run", "--model", "tiny-random", "--method", "full-ft", "--max-steps", "2",
            "--eval-limit", "3", "--dev-limit", "2", "--max-new-tokens", "4", "--no-bertscore",
            "--no-model-metrics", "--out", str(tmp_path / "runs"), "--name", "r"]  # fmt: skip
    res = runner.invoke(app, [*base, *args])
    assert res.exit_code == 2, res.output
    errors = [x for x in res.output.strip().splitlines() if not x.startswith("run folder:")]
    assert message in res.output and len(errors) == 1, res.output  # one line (after the folder)
    assert not (tmp_path / "runs").exists()
    if case in ("lr-nan", "hits-pool"):  # the corrected command with the same name runs
        fixed = [a for a in args if a not in ("nan", "--lr", "--model-metrics")]
        res = runner.invoke(app, [*base, *fixed])
        assert res.exit_code == 0, res.output


@pytest.mark.parametrize("command", [
    ["compare", "{run}", "--out", "{file}/c.md"],
    ["plot", "training", "{run}", "--out", "/proc/t.png"],
    ["score", "{run}/predictions.jsonl", "--no-bertscore", "--out", "{file}/m.json"],
    ["data", "convert", "sample", "{file}/x.jsonl"],
    ["data", "split", "sample", "--out", "/proc/split"],
    ["bench", "--model", "tiny-random", "--no-train", "--out", "/proc/b.json"],
])  # fmt: skip
def test_every_command_refuses_an_output_place_it_cannot_write(finished, tmp_path, command):
    (tmp_path / "a-file").write_text("x\n")
    args = [a.format(run=finished, file=tmp_path / "a-file") for a in command]
    t0 = time.perf_counter()
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "is a file, not a folder" in res.output or "cannot write in" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
    assert time.perf_counter() - t0 < 10  # bench refuses before benchmarking
