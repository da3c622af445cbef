"""SIGINT/SIGTERM end a command cleanly (issue 23 item 6, the part without vLLM): the run
folder's lock is released, one line is printed, the exit code is 128 + the signal number; a
signal whose exception a library swallowed is raised again at the next safe point."""

from __future__ import annotations

import os
import signal
import time

import pytest
from typer.testing import CliRunner

from cli import app
from spt_bench import interrupt
from spt_bench.run_folder import RunFolder


def test_sigterm_during_a_run_unlocks_the_folder_and_exits_143(tmp_path, monkeypatch) -> None:
    import spt_bench.sharded_decode as sd

    seen = {}

    def decode_all(*args, **kwargs):
        seen["locked"] = RunFolder(out).is_locked()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # the signal interrupts this
        raise AssertionError("SIGTERM did not interrupt the run")

    monkeypatch.setattr(sd, "decode_all", decode_all)
    out = tmp_path / "run"
    args = ["run", "--model", "tiny-random", "--method", "text-prompt", "--eval-limit", "2",
            "--no-bertscore", "--no-model-metrics", "--out", str(out)]  # fmt: skip
    t0 = time.monotonic()
    res = CliRunner().invoke(app, args)
    assert time.monotonic() - t0 < 60
    assert res.exit_code == 143, res.output
    assert res.stderr.strip().splitlines() == [
        "error: interrupted by SIGTERM; the run folder is unlocked: continue it with the same "
        "command and --resume"
    ]
    assert seen["locked"]
    folder = RunFolder(out)
    assert not folder.is_locked() and folder.holder() is None  # no lock record left
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_a_signal_whose_exception_was_swallowed_is_raised_at_the_next_check() -> None:
    with pytest.raises(interrupt.Interrupted) as caught, interrupt.interruptible():
        try:  # what pyzmq does: run the handler, then drop its exception and retry
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except interrupt.Interrupted:
            pass
        os.kill(os.getpid(), signal.SIGINT)  # a second signal is ignored while stopping
        interrupt.check()
        raise AssertionError("check() did not raise")
    assert caught.value.exit_code == 130
    interrupt.check()  # outside the block: nothing pending
