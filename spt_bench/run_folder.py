"""RunFolder: the one owner of a run folder's files.

A run folder holds:

- config.json - the resolved RunConfig (nested; no output location: a folder may be moved or
  copied and stays valid), enough to repeat the run;
- env.json - package versions, git commit, device;
- train_log.jsonl, checkpoint/ - training rows and checkpoints (spt_bench.train);
- predictions.jsonl - one row per test example;
- example_scores.jsonl, metrics.json - the scorer's output (+ method summary, timings);
- example_stats.jsonl - the per-example scores without any text (safe to commit);
- report.md - a human-readable summary;
- processes.jsonl - one row per process that worked on the run (command, pid, host, start,
  end, its timings): `metrics.json` timings are sums over them;
- resume_log.jsonl - settings changed on `--resume` (memory/speed settings only);
- history/<time>/ - results a later `evaluate` replaced (nothing is dropped);
- vllm-model/ - the weights the vllm engine exported for decoding (full-ft, merged LoRA);
- scores/<time>/ - what `spt-bench score` of the run's predictions wrote (the run's own
  metrics.json is never touched by it);
- .lock - held (fcntl) by the one process writing the folder, with its pid/host/start.

No other module spells these names: they ask a RunFolder for the path. Every JSON file is
written atomically, JSONL rows are appended with fsync, so a kill never leaves half a file.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from spt_bench.errors import ConfigError, InputError
from spt_bench.io import append_jsonl, atomic_write_json, read_jsonl

if TYPE_CHECKING:  # pragma: no cover
    from spt_bench.config import RunConfig


class RunFolderBusy(ConfigError):
    """Another live process holds the run folder's lock."""


class RunFolder:
    CONFIG = "config.json"
    ENV = "env.json"
    TRAIN_LOG = "train_log.jsonl"
    CHECKPOINT_DIR = "checkpoint"
    PREDICTIONS = "predictions.jsonl"
    EXAMPLE_SCORES = "example_scores.jsonl"
    EXAMPLE_STATS = "example_stats.jsonl"  # the per-example scores without any text
    METRICS = "metrics.json"
    REPORT = "report.md"
    PROCESSES = "processes.jsonl"
    RESUME_LOG = "resume_log.jsonl"
    HISTORY = "history"
    SCORES = "scores"  # `spt-bench score` of the run's predictions, one folder per call
    VLLM_MODEL = "vllm-model"  # weights the vllm engine exports (full-ft, merged LoRA)
    LOCK = ".lock"
    # what `evaluate` replaces (the previous ones move to history/<time>/)
    RESULT_FILES = (PREDICTIONS, EXAMPLE_SCORES, EXAMPLE_STATS, METRICS, REPORT)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock_file: IO[str] | None = None

    @classmethod
    def of(cls, path: str | Path | RunFolder) -> RunFolder:
        return path if isinstance(path, RunFolder) else cls(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------ paths

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def train_log(self) -> Path:
        return self.path / self.TRAIN_LOG

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / self.CHECKPOINT_DIR

    @property
    def predictions(self) -> Path:
        return self.path / self.PREDICTIONS

    @property
    def example_scores(self) -> Path:
        return self.path / self.EXAMPLE_SCORES

    @property
    def example_stats(self) -> Path:
        return self.path / self.EXAMPLE_STATS

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def report_path(self) -> Path:
        return self.path / self.REPORT

    @property
    def lock_path(self) -> Path:
        return self.path / self.LOCK

    # ------------------------------------------------------------------ state

    def is_run(self) -> bool:
        return self.config_path.is_file()

    def is_finished(self) -> bool:
        return self.metrics_path.is_file()

    def is_empty(self) -> bool:
        """No folder, or a folder holding nothing but (possibly) our lock file."""
        if not self.path.is_dir():
            return True
        return all(p.name == self.LOCK for p in self.path.iterdir())

    # ------------------------------------------------------------------ reading

    def read_json(self, name: str) -> dict:
        """A JSON object of the folder; a missing or malformed file is one InputError naming it."""
        path = self.path / name
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(path, None, "file not found") from None
        except UnicodeDecodeError:
            raise InputError(path, None, "not UTF-8 text") from None
        except json.JSONDecodeError as e:
            raise InputError(path, e.lineno, f"invalid JSON ({e.msg})") from None
        if not isinstance(data, dict):
            raise InputError(path, 1, "expected a JSON object")
        return data

    def read_config_dict(self) -> dict:
        """config.json as a nested dict (an old flat one upgraded); no validation."""
        from spt_bench.config import upgrade_flat

        if not self.is_run():
            raise InputError(self.path, None, "not a run folder (no config.json)")
        return upgrade_flat(self.read_json(self.CONFIG))

    def read_config(self, notes: list[str] | None = None) -> RunConfig:
        """The run's RunConfig (old flat configs upgraded); errors name the file."""
        from spt_bench.config import config_from_dict

        data = self.read_config_dict()
        data.pop("output", None)
        try:
            return config_from_dict(data)
        except ConfigError as e:
            raise InputError(self.config_path, None, str(e)) from None

    def read_metrics(self) -> dict:
        return self.read_json(self.METRICS)

    def read_jsonl(self, name: str, *, tolerate_truncated_tail: bool = False) -> Iterator[dict]:
        return read_jsonl(self.path / name, tolerate_truncated_tail=tolerate_truncated_tail)

    # ------------------------------------------------------------------ writing

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.path / name, obj)

    def append(self, name: str, rows: Iterable[dict]) -> None:
        append_jsonl(self.path / name, rows)

    def write_config(self, config: RunConfig) -> None:
        self.write_json(self.CONFIG, config.to_dict(with_output=False))

    def archive_results(self) -> Path | None:
        """Move the current results (predictions, scores, metrics, report) into
        history/<time>/ before they are replaced; returns that folder (None: nothing to move)."""
        present = [n for n in self.RESULT_FILES if (self.path / n).exists()]
        if not present:
            return None
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        dest = self.path / self.HISTORY / stamp
        n = 1
        while dest.exists():
            n += 1
            dest = self.path / self.HISTORY / f"{stamp}-{n}"
        dest.mkdir(parents=True)
        for name in present:
            os.replace(self.path / name, dest / name)
        return dest

    def new_scores_dir(self) -> Path:
        """A new scores/<time>/ path for `spt-bench score` of this run's files (made when the
        scores are written, so a failed scoring leaves nothing behind)."""
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        dest = self.path / self.SCORES / stamp
        n = 1
        while dest.exists():
            n += 1
            dest = self.path / self.SCORES / f"{stamp}-{n}"
        return dest

    def clear_for_overwrite(self) -> None:
        """Remove everything but the lock (held by us) - `run --overwrite`."""
        for p in self.path.iterdir():
            if p.name == self.LOCK:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()

    # ------------------------------------------------------------------ processes / timings

    def record_process(self, command: str, started: float, timings: dict[str, float]) -> None:
        """One row per process that worked on the run (appended when it finishes)."""
        self.append(
            self.PROCESSES,
            [
                {
                    "command": command,
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started": round(started, 3),
                    "ended": round(time.time(), 3),
                    "timings": {k: round(v, 3) for k, v in timings.items()},
                }
            ],
        )

    def processes(self) -> list[dict]:
        if not (self.path / self.PROCESSES).is_file():
            return []
        return list(self.read_jsonl(self.PROCESSES, tolerate_truncated_tail=True))

    # ------------------------------------------------------------------ lock

    def holder(self) -> dict | None:
        """The lock file's record (pid, host, started, command), or None."""
        try:
            text = self.lock_path.read_text(encoding="utf-8")
            data = json.loads(text) if text.strip() else None
        except (OSError, json.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def is_locked(self) -> bool:
        """True when a live process holds the lock (probed without taking it for long)."""
        if not self.lock_path.is_file():
            return False
        import fcntl

        with open(self.lock_path, "a+", encoding="utf-8") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            return False

    def busy_error(self) -> RunFolderBusy:
        h = self.holder() or {}
        who = f"pid {h.get('pid', '?')} on {h.get('host', '?')}"
        since = h.get("started_iso", "?")
        return RunFolderBusy(
            f"run folder {self.path} is in use by {who} since {since} "
            f"({h.get('command', 'spt-bench')}); wait for it to finish or stop it"
        )

    def acquire(self, command: str, *, warn: Any = None) -> None:
        """Take the folder's exclusive lock for the life of this process (or until `release`).

        The lock is an fcntl lock on `.lock`, so the kernel frees it when its holder dies: a
        lock file left by a dead process is detected (its record names a pid that is gone) and
        reported through `warn`, then taken over. A record from another host whose lock we can
        take cannot be proven dead (network file systems may not share fcntl locks): refused,
        with how to clear it.
        """
        import fcntl

        self.path.mkdir(parents=True, exist_ok=True)
        f = open(self.lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - held open on purpose
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise self.busy_error() from None
        old = self.holder()
        host = socket.gethostname()
        if old and old.get("pid") != os.getpid():
            if old.get("host") not in (None, host):
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
                f.close()
                raise RunFolderBusy(
                    f"run folder {self.path} has a lock from pid {old.get('pid')} on "
                    f"{old.get('host')} (since {old.get('started_iso', '?')}) that this host "
                    f"cannot check; if no process there runs it, delete {self.lock_path}"
                )
            if warn is not None:
                warn(
                    f"stale lock in {self.path}: pid {old.get('pid')} "
                    f"(started {old.get('started_iso', '?')}) is gone; taking it over"
                )
        now = time.time()
        record = {
            "pid": os.getpid(),
            "host": host,
            "started": round(now, 3),
            "started_iso": datetime.fromtimestamp(now).isoformat(timespec="seconds"),
            "command": command,
        }
        f.seek(0)
        f.truncate()
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())
        self._lock_file = f

    def release(self) -> None:
        """Drop the lock; the lock file is emptied (a clean exit leaves no stale record) but
        kept: unlinking it would let a waiting process lock a file no newcomer sees."""
        import fcntl

        f = self._lock_file
        if f is None:
            return
        self._lock_file = None
        try:
            f.seek(0)
            f.truncate()
            f.flush()
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            f.close()

    @contextmanager
    def locked(self, command: str, *, warn: Any = None) -> Iterator[RunFolder]:
        self.acquire(command, warn=warn)
        try:
            yield self
        finally:
            self.release()


def command_line() -> str:
    """This process's command line, for lock and process records."""
    argv = [os.path.basename(sys.argv[0])] + sys.argv[1:] if sys.argv else []
    return " ".join(argv)[:500]
