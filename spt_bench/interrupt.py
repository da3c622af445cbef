"""SIGINT and SIGTERM end a command cleanly: the signal raises `Interrupted` in the main thread,
so `finally` blocks run (the run folder's lock is released, temp files are removed), the vLLM
engine's processes are shut down, and the CLI exits non-zero with one line. Without this,
SIGTERM killed the process at once: the lock record stayed and vLLM's processes lived on.

One catch: an exception raised by a signal handler is lost when the handler runs inside
pyzmq's C code (its calls run pending handlers, then retry on EINTR and drop the error) -
which is where the main process waits while vLLM's engine starts. So the signal is also
recorded, and `check()` raises it again at safe points (after the engine has started, after
each vLLM generate call); a signal whose exception did propagate never reaches them."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_state: dict[str, Any] = {"pending": None, "rechecked": False}


class Interrupted(KeyboardInterrupt):
    """Raised by the first SIGINT/SIGTERM (a KeyboardInterrupt: `except Exception` does not
    swallow it)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


def check() -> None:
    """Raise `Interrupted` (once) if a signal arrived whose exception got lost on the way."""
    pending = _state["pending"]
    if pending is not None and not _state["rechecked"]:
        _state["rechecked"] = True
        raise Interrupted(pending)


def shutdown_engines() -> None:
    """Stop the vLLM engine if this process started one (never imports vLLM)."""
    engine = sys.modules.get("spt_bench.vllm_engine")
    if engine is not None:
        engine.shutdown_engine()


def _handler(signum: int, frame: Any) -> None:
    if _state["pending"] is not None:
        return  # already stopping: let the clean-up finish
    _state["pending"] = signum
    raise Interrupted(signum)


@contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, SIGINT/SIGTERM raise `Interrupted` once (later ones are ignored while
    cleaning up); on the way out of a block that failed or was interrupted the vLLM engine is
    shut down. Only in the main thread (elsewhere signal handlers cannot be set; the block runs
    unchanged)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state.update(pending=None, rechecked=False)
    previous = {s: signal.signal(s, _handler) for s in SIGNALS}
    try:
        yield
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt) and _state["pending"] is None:
            _state["pending"] = signal.SIGINT  # e.g. raised by a library's own handler
        shutdown_engines()  # on any failure: the engine's processes go with the command
        pending = _state["pending"]
        if pending is not None and not isinstance(e, KeyboardInterrupt):
            # e.g. Ctrl-C reached vLLM's processes too, and the engine died first: report the
            # interruption, not the engine's error
            raise Interrupted(pending) from e
        raise
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _state.update(pending=None, rechecked=False)
