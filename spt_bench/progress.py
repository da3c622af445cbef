"""One progress display for the shared loops (training, decoding, model metrics).

On a terminal: a rich progress bar. Anywhere else (a log file, CI, nohup, a pipe) a bar is not
drawn until it ends, so `ProgressBar` prints plain lines instead, at a steady rate: one when
the stage starts, then one every `every_s` seconds (`SPT_BENCH_PROGRESS_SECONDS`, default 30)
while it runs - from a timer, so a slow step still shows the run is alive - and one at the
end: `decode 120/783 (15%) 2.3 ex/s elapsed 52s ETA 4m48s loss 2.310`."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

PROGRESS_SECONDS_ENV = "SPT_BENCH_PROGRESS_SECONDS"
DEFAULT_EVERY_S = 30.0


def format_rate(n: float, seconds: float, unit: str = "ex") -> str:
    """Throughput for a progress bar: `12.3 ex/s`, or seconds per item when under one per
    second (`40.2 s/ex`), so a slow run never reads `0.0 ex/s`."""
    if seconds <= 0 or n <= 0:
        return "-"
    rate = n / seconds
    if rate >= 1:
        return f"{rate:.1f} {unit}/s"
    return f"{seconds / n:.1f} s/{unit}"


def format_duration(seconds: float) -> str:
    """`48s`, `4m48s`, `2h05m`."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def every_seconds() -> float:
    value = os.environ.get(PROGRESS_SECONDS_ENV)
    try:
        return max(float(value), 0.05) if value else DEFAULT_EVERY_S
    except ValueError:
        return DEFAULT_EVERY_S


class ProgressBar:
    """`label` bar with counts, elapsed and remaining time; `fields` adds live text columns
    (e.g. {"loss": "loss {}", "speed": "{}"}) updated through `update`. Plain lines instead of
    a bar when the console is not a terminal (see the module doc)."""

    def __init__(
        self,
        console: Any,
        label: str,
        total: int,
        done: int = 0,
        fields: dict[str, str] | None = None,
        *,
        every_s: float | None = None,
        unit: str = "ex",
    ) -> None:
        if console is None:
            from rich.console import Console

            console = Console()
        self.console = console
        self.unit = unit  # what `total` counts, for the plain lines' rate (ex/s, step/s)
        self.label = label
        self.total = total
        self.done = done
        self.start_done = done
        self.fields_fmt = fields or {}
        self.values: dict[str, str] = dict.fromkeys(self.fields_fmt, "-")
        self.t0 = time.monotonic()
        self.plain = not getattr(console, "is_terminal", False)
        if self.plain:
            self._stop = threading.Event()
            self._lock = threading.Lock()
            self._line()
            every = every_seconds() if every_s is None else every_s
            self._timer = threading.Thread(target=self._tick, args=(every,), daemon=True)
            self._timer.start()
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        extra = [
            TextColumn(fmt.format(f"{{task.fields[{k}]}}")) for k, fmt in self.fields_fmt.items()
        ]
        self.progress = Progress(
            TextColumn(f"[bold]{label}[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            *extra,
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.progress.add_task(
            label, total=total, completed=done, **dict.fromkeys(self.fields_fmt, "-")
        )
        self.progress.start()

    # ------------------------------------------------------------------ plain lines

    def line(self) -> str:
        """The current state as one line (plain mode)."""
        elapsed = time.monotonic() - self.t0
        new = self.done - self.start_done
        parts = [f"{self.label} {self.done}/{self.total}"]
        if self.total:
            parts.append(f"({100 * self.done / self.total:.0f}%)")
        parts.append(format_rate(new, elapsed, self.unit))
        parts.append(f"elapsed {format_duration(elapsed)}")
        if new > 0 and self.total > self.done:
            parts.append(f"ETA {format_duration(elapsed / new * (self.total - self.done))}")
        for k, fmt in self.fields_fmt.items():
            if self.values.get(k, "-") != "-":
                parts.append(fmt.format(self.values[k]))
        return " ".join(parts)

    def _line(self) -> None:
        with self._lock:
            self.console.print(self.line(), highlight=False, markup=False, soft_wrap=True)

    def _tick(self, every: float) -> None:
        while not self._stop.wait(every):
            self._line()

    # ------------------------------------------------------------------ both modes

    def advance(self, n: int) -> None:
        self.done += n
        if not self.plain:
            self.progress.advance(self.task, n)

    def update(self, completed: int, **fields: str) -> None:
        self.done = completed
        self.values.update(fields)
        if not self.plain:
            self.progress.update(self.task, completed=completed, **fields)

    def close(self) -> None:
        if not self.plain:
            self.progress.stop()
            return
        if not self._stop.is_set():
            self._stop.set()
            self._timer.join(timeout=5)
            self._line()
