"""Measuring: timed repetitions, peak memory (CUDA allocator or the process's resident set),
torch.profiler operator tables, and freeing memory between measurements."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing elsewhere."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _read_status_kb(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _release_free_heap() -> None:
    """Hand memory freed by earlier measurements back to the OS (glibc keeps freed chunks of
    the heap otherwise, and a later measurement would reuse them without growing the RSS)."""
    import ctypes

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process; False where unsupported."""
    _release_free_heap()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass
class PeakMemory:
    """Peak memory while the body runs. CUDA: max allocated bytes (absolute, weights included);
    CPU: growth of the peak resident set over the RSS at entry, after freed heap memory went
    back to the OS (None where not measurable; a rough figure - the allocator may still reuse
    memory it kept)."""

    device: Any
    peak_bytes: int | None = None
    kind: str = "n/a"
    _rss0: int | None = None

    def __enter__(self) -> PeakMemory:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.kind = "cuda_max_allocated"
        elif _reset_peak_rss():
            self._rss0 = _read_status_kb("VmRSS")
            self.kind = "cpu_peak_rss_growth"
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
        elif self._rss0 is not None:
            hwm = _read_status_kb("VmHWM")
            self.peak_bytes = None if hwm is None else max(0, hwm - self._rss0) * 1024
            if self.peak_bytes is None:
                self.kind = "n/a"


def peak_memory_gb(peak_bytes: int | None) -> float | None:
    """Bytes as GiB with three decimals, as the JSON figures carry them."""
    return None if peak_bytes is None else round(peak_bytes / 2**30, 3)


def time_steps(
    step: Callable[[], Any], reps: int, warmup: int, device: torch.device
) -> tuple[list[float], list[Any]]:
    """Run `step` warmup + reps times; (timed seconds of the last `reps`, every return value)."""
    times: list[float] = []
    results: list[Any] = []
    for i in range(warmup + reps):
        sync(device)
        t0 = time.perf_counter()
        results.append(step())
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times, results


def profile_once(fn: Callable[[], Any], device: torch.device, path: Path) -> None:
    """Run `fn` once under torch.profiler; write the operator table (top 40 by device time on
    CUDA, CPU time elsewhere) to `path` - where a later optimisation should look first."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        fn()
        sync(device)
    table = None
    for key in ("device_time_total", "cuda_time_total") if cuda else ("cpu_time_total",):
        try:
            table = prof.key_averages().table(sort_by=key, row_limit=40)
            break
        except (AttributeError, KeyError, ValueError):
            continue
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(table or prof.key_averages().table(row_limit=40))


def free(device: torch.device) -> None:
    """Collect garbage and return cached CUDA blocks before the next measurement."""
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def is_oom(e: BaseException) -> bool:
    """True for an out-of-memory error (an OOM is a figure too; anything else is a bug)."""
    import torch

    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()
