"""Run folders never lose a result: one owner (RunFolder), a lock, location-independent resume,
`score` that never clobbers, no half-made folders, timings over every process, and `--resume`
accepting the run's own command line. Each test is named after the behaviour it guards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from spt_bench.run_folder import RunFolder

runner = CliRunner()
TINY = ["--model", "tiny-random", "--no-bertscore", "--no-model-metrics"]
FAST = [*TINY, "--method", "full-ft", "--max-steps", "2", "--eval-limit", "3", "--dev-limit", "2",
        "--max-new-tokens", "4"]  # fmt: skip


def _run(*args: str):
    return runner.invoke(app, ["run", *args])


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture()
def finished(finished_full_ft) -> Path:
    """The session's finished full-ft run (conftest), copied by the tests that change it."""
    return finished_full_ft


# ---------------------------------------------------------------- 1. one process per folder


def test_a_second_process_on_a_locked_run_folder_fails_at_once(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "race")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from spt_bench.run_folder import RunFolder; "
         "f = RunFolder(sys.argv[1]); f.acquire('holder'); print('locked', flush=True); time.sleep(60)",
         str(folder.path)],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.perf_counter()
        res = _run(*FAST, "--out", str(tmp_path), "--name", "race")
        assert res.exit_code == 2
        assert f"is in use by pid {holder.pid}" in res.output
        assert time.perf_counter() - t0 < 5  # before any model is loaded
        res = _run(*FAST, "--out", str(tmp_path), "--name", "race", "--resume")
        assert res.exit_code == 2 and "in use by pid" in res.output
        assert [p.name for p in folder.path.iterdir()] == [".lock"]  # nothing written
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_of_a_dead_process_is_reported_and_taken_over(finished, tmp_path) -> None:
    run = tmp_path / "copy"
    shutil.copytree(finished, run)
    (run / "metrics.json").unlink()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    import socket

    (run / ".lock").write_text(json.dumps(
        {"pid": int(dead), "host": socket.gethostname(), "started_iso": "2026-01-01T00:00:00"}
    ))  # fmt: skip
    res = _run("--resume", "--out", str(run))
    assert res.exit_code == 0, res.output
    assert f"stale lock in {run}: pid {dead}" in " ".join(res.output.split())
    assert (run / "metrics.json").is_file()


def test_a_lock_from_another_host_is_refused_with_how_to_clear_it(finished, tmp_path) -> None:
    run = tmp_path / "nfs"
    shutil.copytree(finished, run)
    (run / ".lock").write_text(json.dumps({"pid": 1, "host": "node-7"}))
    res = _run("--resume", "--out", str(run))
    assert res.exit_code == 2
    assert "node-7" in res.output and "delete" in res.output


# ---------------------------------------------------------------- 2. location-independent


def test_resuming_a_copied_folder_writes_only_into_the_copy(finished, tmp_path) -> None:
    before = {p: p.read_bytes() for p in finished.rglob("*") if p.is_file()}
    copy = tmp_path / "elsewhere" / "renamed"
    shutil.copytree(finished, copy)
    (copy / "metrics.json").unlink()
    lines = (copy / "predictions.jsonl").read_text().splitlines()
    (copy / "predictions.jsonl").write_text(lines[0] + "\n")
    res = _run("--resume", "--out", str(copy))
    assert res.exit_code == 0, res.output
    assert _json(copy / "metrics.json")["n"] == 3
    after = {p: p.read_bytes() for p in finished.rglob("*") if p.is_file()}
    assert after == before  # the original run folder is untouched
    assert "output" not in _json(copy / "config.json")


# ---------------------------------------------------------------- 3. score never clobbers


def test_scoring_a_runs_predictions_keeps_every_key_of_its_metrics(finished, tmp_path) -> None:
    run = tmp_path / "scored"
    shutil.copytree(finished, run)
    metrics_before = (run / "metrics.json").read_bytes()
    scores_before = (run / "example_scores.jsonl").read_bytes()
    res = runner.invoke(app, ["score", str(run / "predictions.jsonl"), "--no-bertscore"])
    assert res.exit_code == 0, res.output
    assert (run / "metrics.json").read_bytes() == metrics_before
    assert (run / "example_scores.jsonl").read_bytes() == scores_before
    (written,) = (run / "scores").glob("*/metrics.json")
    assert _json(written)["overall"] == _json(run / "metrics.json")["overall"]
    res = runner.invoke(app, ["score", str(run / "predictions.jsonl"), "--no-bertscore",
                              "--out", str(run / "metrics.json")])  # fmt: skip
    assert res.exit_code == 2 and "is inside run folder" in res.output
    assert (run / "metrics.json").read_bytes() == metrics_before


def test_evaluate_keeps_the_results_it_replaces_in_history(finished, tmp_path) -> None:
    run = tmp_path / "again"
    shutil.copytree(finished, run)
    old = (run / "metrics.json").read_bytes()
    res = runner.invoke(app, ["evaluate", str(run), "--no-bertscore", "--no-model-metrics"])
    assert res.exit_code == 0, res.output
    (kept,) = (run / "history").glob("*/metrics.json")
    assert kept.read_bytes() == old
    assert _json(run / "metrics.json")["previous_results"].startswith("history/")


# ---------------------------------------------------------------- 4. no half-made folders


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "nope"], "unknown method 'nope'"),
        (["--method", "spt", "--k", "0"], "k must be an integer >= 1"),
        (["--dtype", "fp8"], "--dtype (model.dtype) must be one of"),
        (["--method", "lora", "--k", "4"], "method 'lora' has no option 'k'"),
        (["--device", "cuda"], "cuda"),
        (["--model", "no-such-model-folder"], "no-such-model-folder"),
        (["--decoding", "nucleus"], "--decoding (decode.mode) must be one of"),
        (["--max-new-tokens", "100000"], "over the model's context of 2048"),
    ],
)
def test_a_run_that_fails_validation_leaves_no_folder(tmp_path, args, message) -> None:
    if args == ["--device", "cuda"]:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    res = _run(*FAST, *args, "--out", str(tmp_path), "--name", "x")
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split())
    assert not (tmp_path / "x").exists()


def test_a_data_error_leaves_no_folder_and_the_fixed_command_runs(tmp_path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("1 your persona: i like tea.\n2 hello\n")  # no tab: not a dialogue line
    res = _run(*FAST, "--data", str(bad), "--out", str(tmp_path), "--name", "x")
    assert res.exit_code == 2 and str(bad) in res.output
    assert not (tmp_path / "x").exists()
    res = _run(*FAST, "--out", str(tmp_path), "--name", "x")
    assert res.exit_code == 0, res.output


def test_unknown_method_and_bad_options_fail_before_torch_is_imported(tmp_path) -> None:
    code = (
        "import sys, time; t=time.perf_counter(); from typer.testing import CliRunner; "
        "from cli import app; r=CliRunner().invoke(app, sys.argv[1:]); "
        "print(r.exit_code, round(time.perf_counter()-t, 2), 'torch' in sys.modules)"
    )
    cases = (["--method", "nope"], ["--dtype", "fp8"], ["--eval-every", "0"], ["--k", "0"],
             ["--method", "lora", "--k", "2"], ["--method", "lora", "--lora-r", "0"])  # fmt: skip
    for extra in cases:
        out = subprocess.run(
            [sys.executable, "-c", code, "run", *extra, "--out", str(tmp_path / "y")],
            capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
        ).stdout.split()  # fmt: skip
        assert out[0] == "2" and out[2] == "False", (extra, out)
    assert not (tmp_path / "y").exists()


# ---------------------------------------------------------------- 5. timings over processes


def test_a_resumed_run_reports_the_time_of_every_process(tmp_path) -> None:
    from spt_bench.config import config_from_dict
    from spt_bench.runner import run

    class Killed(Exception):
        pass

    def kill_after_first_step(step: int) -> None:
        if step == 1:
            raise Killed

    config = config_from_dict(dict(
        method="full-ft", model="tiny-random", max_steps=2, save_every=1, eval_limit=3,
        dev_limit=2, max_new_tokens=4, bertscore=False, model_metrics=False, out=str(tmp_path),
        name="r",
    ))  # fmt: skip
    with pytest.raises(Killed):
        run(config, progress=False, on_train_step=kill_after_first_step)
    first = _json(tmp_path / "r/checkpoint/state.json")["train_seconds"]
    assert first > 0
    res = _run("--resume", "--out", str(tmp_path / "r"))
    assert res.exit_code == 0, res.output
    m = _json(tmp_path / "r/metrics.json")
    assert m["train"]["seconds"] > first and m["train"]["seconds_this_process"] > 0
    t = m["timings"]
    # every process's training stage (the killed one's included) is in train_s
    assert t["train_s"] >= m["train"]["seconds"] - 1e-3
    assert t["processes"] == 2 and t["total_s"] >= sum(
        v for k, v in t.items() if k.endswith("_s") and k != "total_s"
    )
    assert t["by_process"][-1]["pid"] == os.getpid()


# ---------------------------------------------------------------- 6. every key a flag


def test_checkpoint_and_eval_frequency_are_flags_and_resume_accepts_the_same_command(
    tmp_path,
) -> None:
    args = [*FAST, "--eval-every", "1", "--save-every", "1", "--set", "train.log_every=2",
            "--out", str(tmp_path), "--name", "r"]  # fmt: skip
    assert _run(*args).exit_code == 0
    config = _json(tmp_path / "r/config.json")
    assert (config["train"]["eval_every"], config["train"]["save_every"]) == (1, 1)
    assert config["train"]["log_every"] == 2
    (tmp_path / "r/metrics.json").unlink()
    res = _run(*args, "--resume")  # a script re-running its own command line
    assert res.exit_code == 0, res.output
    res = _run(*args, "--resume", "--max-steps", "5", "--set", "train.warmup_ratio=0.5")
    assert res.exit_code == 2
    assert "--max-steps (train.max_steps) (2 -> 5)" in res.output
    assert "--warmup-ratio (train.warmup_ratio) (0.1 -> 0.5)" in res.output


def test_print_config_shows_the_resolved_config_and_loads_no_model(tmp_path) -> None:
    res = runner.invoke(app, ["run", "--preset", "smoke", "--lora-r", "4", "--method", "lora",
                              "--print-config", "--out", str(tmp_path / "p")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert f"# run folder: {tmp_path / 'p'}" in res.output
    assert "lora_r: 4" in res.output and "lr: 0.0002" in res.output
    assert not (tmp_path / "p").exists()
