"""vLLM's processes never outlive a run (issue 23 item 6): SIGTERM during vLLM decoding shuts
the engine down, releases the run folder's lock and exits with one line (the run then resumes);
after kill -9 of the run process the engine_reaper watchdog kills the engine's processes.

Slow (a real `spt-bench run` with the vllm engine on a tiny head-size-32 Llama, ~30-60 s each).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from vllm_helpers import tiny_llama_folder

from spt_bench.run_folder import RunFolder
from spt_bench.vllm_engine import vllm_available

if not vllm_available():
    if os.environ.get("SPT_BENCH_REQUIRE_VLLM") == "1":
        raise RuntimeError("SPT_BENCH_REQUIRE_VLLM=1 but vLLM is not installed (make setup)")
    pytest.skip("vLLM is not installed", allow_module_level=True)

psutil = pytest.importorskip("psutil")

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_llama_folder(tmp_path_factory.mktemp("tiny") / "model")


def _run_args(model: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "cli", "run", "--model", str(model), "--method", "text-prompt",
        "--decode-engine", "vllm", "--eval-limit", "64", "--max-new-tokens", "32",
        "--no-bertscore", "--no-model-metrics", "--device", "cpu", "--dtype", "float32",
        "--vllm-kv-cache-gb", "0.25", "--out", str(out), *extra,
    ]  # fmt: skip


def _start(model: Path, out: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        _run_args(model, out), cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def _wait_for_decoding(proc: subprocess.Popen, log: Path, timeout: float = 300) -> list:
    """The run's process tree once vLLM's worker is up (the engine has started decoding)."""
    main = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            tree = main.children(recursive=True)
            if any("VLLM::Worker" in p.name() or "VLLM::Worker" in " ".join(p.cmdline())
                   for p in tree):  # fmt: skip
                return tree
        except psutil.Error:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"vLLM never started decoding:\n{log.read_text()}")


def _gone(procs: list, timeout: float) -> list:
    """The processes of `procs` still alive (not zombies) after waiting up to `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.Error:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)


def _cleanup(procs: list) -> None:
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_shuts_the_engine_down_and_releases_the_lock(model, tmp_path, sig) -> None:
    """The signal lands while vLLM's engine starts (its worker is up): the hardest moment,
    pyzmq drops exceptions raised by signal handlers there (spt_bench.interrupt)."""
    out, log = tmp_path / "run", tmp_path / "log.txt"
    proc = _start(model, out, log)
    tree = _wait_for_decoding(proc, log)
    assert RunFolder(out).is_locked()
    proc.send_signal(sig)
    try:
        rc = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    left = _gone(tree, 30)
    _cleanup(left)
    text = log.read_text()
    assert rc == 128 + sig, text
    assert not left, [p.info if hasattr(p, "info") else p for p in left]
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"interrupted by {sig.name}" in errors[0], text
    assert "--resume" in errors[0] and "Traceback" not in text, text
    folder = RunFolder(out)
    assert not folder.is_locked() and not folder.holder()  # no stale lock record
    if sig == signal.SIGINT:
        return  # resuming is the same as after SIGTERM
    # the run continues from where it stopped
    done = subprocess.run(
        _run_args(model, out, "--resume"), cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(folder.predictions.read_text().splitlines()) > 0
    assert (out / "metrics.json").is_file()


def test_engine_processes_exit_after_kill_9_of_the_run(model, tmp_path) -> None:
    out, log = tmp_path / "run", tmp_path / "log.txt"
    proc = _start(model, out, log)
    tree = _wait_for_decoding(proc, log)
    engine = [p for p in tree if "VLLM" in p.name()]
    assert engine, [p.name() for p in tree]
    proc.kill()
    proc.wait()
    left = _gone(tree, 30)  # the engine, its worker and the watchdog itself
    _cleanup(left)
    assert not left, [(p.pid, p.name()) for p in left]
    assert not RunFolder(out).is_locked()
