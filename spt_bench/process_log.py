"""processes.jsonl: one record per process that worked on a run folder (a `start` row, heartbeats
with its cumulative stage times, an `end` row), so timings survive kills. Kept apart from
spt_bench.run_folder, which owns the folder and its lock."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from spt_bench.run_folder import RunFolder


def command_line() -> str:
    """This process's command line, for lock and process records."""
    argv = [os.path.basename(sys.argv[0])] + sys.argv[1:] if sys.argv else []
    return " ".join(argv)[:500]


class ProcessLog:
    """One process's record in processes.jsonl: a `start` row when it begins, a `beat` row
    with its cumulative stage times at every stage end and every HEARTBEAT_S seconds (a
    daemon thread), and an `end` row when it finishes. A process killed with -9 loses at most
    the last HEARTBEAT_S seconds of its record, never the record itself."""

    HEARTBEAT_S = float(os.environ.get("SPT_BENCH_HEARTBEAT_S", "10"))

    def __init__(
        self, folder: RunFolder, kind: str, started: float, timings: dict[str, float] | None
    ) -> None:
        self.folder = folder
        self.kind = kind
        self.id = uuid.uuid4().hex[:12]
        self.started = started  # time.time() when the process began its work
        self.timings: dict[str, float] = dict(timings or {})
        self._stage: tuple[str, float] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _row(self, event: str) -> dict:
        with self._lock:
            t = dict(self.timings)
            if self._stage is not None:  # the stage in progress counts up to now
                name, t0 = self._stage
                t[name] = t.get(name, 0.0) + (time.perf_counter() - t0)
        return {
            "event": event,
            "process": self.id,
            "kind": self.kind,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command_line(),
            "started": round(self.started, 3),
            "elapsed": round(time.time() - self.started, 3),
            "timings": {k: round(v, 3) for k, v in t.items()},
        }

    def _write(self, event: str) -> None:
        self.folder.append(self.folder.PROCESSES, [self._row(event)])

    def start(self) -> None:
        self._write("start")
        self._thread = threading.Thread(target=self._beat_loop, daemon=True, name="spt-heartbeat")
        self._thread.start()

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.HEARTBEAT_S):
            try:
                self._write("beat")
            except Exception:  # noqa: BLE001 - the main thread reports folder problems
                return

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage (`train_s`, `decode_s`, ...): added to this process's timings."""
        with self._lock:
            self._stage = (name, time.perf_counter())
        try:
            yield
        finally:
            with self._lock:
                stage_name, t0 = self._stage or (name, time.perf_counter())
                self.timings[stage_name] = self.timings.get(stage_name, 0.0) + (
                    time.perf_counter() - t0
                )
                self._stage = None
            try:
                self._write("beat")
            except Exception:  # noqa: BLE001 - a failing stage's own error is the one to show
                pass

    def stop(self, finished: bool) -> None:
        """Stop the heartbeat; `finished`: write the `end` row (once)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if finished:
            self._write("end")

    def own_timings(self) -> dict[str, Any]:
        """This process's stage times and wall time so far (rounded)."""
        row = self._row("beat")
        return {**row["timings"], "total_s": row["elapsed"]}
