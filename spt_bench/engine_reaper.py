"""A watchdog for the vLLM engine's processes: they must not outlive the run that started them.

vLLM's engine runs in child processes (`VLLM::EngineCore`, and its `VLLM::Worker`s). Its
workers notice when the EngineCore dies, but the EngineCore does not notice when *our* process
dies: after `kill -9` of a run it idles forever, holding gigabytes. `start_reaper` (called by
`spt_bench.vllm_engine` before the engine starts) launches this module as a small separate
process (`python -m spt_bench.engine_reaper PID`). While the run process lives, it notes every
process descended from it, every half second. When the run process is gone (the pipe it holds
to us closes without a `stop` line, or the process is dead or a zombie), it sends SIGTERM to
the noted processes that still exist and to their descendants, then SIGKILL to any left after
a few seconds. `stop_reaper` (an orderly engine shutdown) ends it without killing anything;
`stop_reaper(kill=True)` (an engine start that failed) has it kill them at once.

Needs psutil (a vLLM dependency: the reaper only runs where vLLM does).
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from typing import Any

POLL_S = 0.5
TERM_GRACE_S = 5.0
STOP = b"stop\n"
KILL = b"kill\n"


def start_reaper(parent_pid: int | None = None) -> subprocess.Popen:
    """Launch the watchdog for `parent_pid` (default: this process). Its stdin is a pipe only
    this process holds (the write end is close-on-exec and not passed to vLLM's spawned
    processes), so it closes when this process dies, however it dies."""
    parent_pid = os.getpid() if parent_pid is None else parent_pid
    return subprocess.Popen(
        [sys.executable, "-m", "spt_bench.engine_reaper", str(parent_pid)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C to the terminal's process group does not reach it
    )


def stop_reaper(proc: subprocess.Popen | None, *, kill: bool = False) -> None:
    """End the watchdog: after an orderly shutdown it kills nothing; with `kill` (an engine
    start that failed or was interrupted) it first ends every process it noted and every
    current descendant of this process but itself."""
    if proc is None or proc.poll() is not None:
        return
    try:
        assert proc.stdin is not None
        proc.stdin.write(KILL if kill else STOP)
        proc.stdin.close()
        proc.wait(timeout=3 * TERM_GRACE_S if kill else 5.0)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait()


def _alive(p: Any) -> bool:
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_tree(procs: list[Any], grace: float = TERM_GRACE_S) -> None:
    """SIGTERM `procs` and all their descendants, SIGKILL whatever is left after `grace`."""
    import psutil

    me = os.getpid()
    everything: dict[int, Any] = {}
    for p in procs:
        if not _alive(p):
            continue
        everything[p.pid] = p
        try:
            for c in p.children(recursive=True):
                everything[c.pid] = c
        except psutil.Error:
            pass
    everything.pop(me, None)
    targets = list(everything.values())
    for p in targets:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, left = psutil.wait_procs(targets, timeout=grace)
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=grace)


def watch(parent_pid: int, stdin_fd: int = 0) -> int:
    import psutil

    try:
        parent = psutil.Process(parent_pid)
    except psutil.Error:
        return 0
    me = os.getpid()
    noted: dict[int, Any] = {}
    while True:
        ready, _, _ = select.select([stdin_fd], [], [], POLL_S)
        data = os.read(stdin_fd, 64) if ready else b""
        if ready and STOP.strip() in data:
            return 0  # orderly shutdown: the engine is already down
        try:
            for c in parent.children(recursive=True):
                if c.pid != me and c.pid not in noted:
                    noted[c.pid] = c
        except psutil.Error:
            break
        if ready and (KILL.strip() in data or not data):
            break  # asked to, or the run process closed its end: it is gone
        if not _alive(parent):
            break
    kill_tree(list(noted.values()))
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m spt_bench.engine_reaper PARENT_PID", file=sys.stderr)
        return 2
    return watch(int(argv[0]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
