"""One rich progress bar for the shared loops (training, decoding, model metrics)."""

from __future__ import annotations

from typing import Any


def format_rate(n: float, seconds: float, unit: str = "ex") -> str:
    """Throughput for a progress bar: `12.3 ex/s`, or seconds per item when under one per
    second (`40.2 s/ex`), so a slow run never reads `0.0 ex/s`."""
    if seconds <= 0 or n <= 0:
        return "-"
    rate = n / seconds
    if rate >= 1:
        return f"{rate:.1f} {unit}/s"
    return f"{seconds / n:.1f} s/{unit}"


class ProgressBar:
    """`label` bar with counts, elapsed and remaining time; `fields` adds live text columns
    (e.g. {"loss": "loss {}", "speed": "{}"}) updated through `update`."""

    def __init__(
        self,
        console: Any,
        label: str,
        total: int,
        done: int = 0,
        fields: dict[str, str] | None = None,
    ) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        fields = fields or {}
        extra = [TextColumn(fmt.format(f"{{task.fields[{k}]}}")) for k, fmt in fields.items()]
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
            label, total=total, completed=done, **dict.fromkeys(fields, "-")
        )
        self.progress.start()

    def advance(self, n: int) -> None:
        self.progress.advance(self.task, n)

    def update(self, completed: int, **fields: str) -> None:
        self.progress.update(self.task, completed=completed, **fields)

    def close(self) -> None:
        self.progress.stop()
