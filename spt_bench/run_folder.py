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
- processes.jsonl - every process that worked on the run: a start row when it begins, then
  heartbeats with its stage times, an end row when it finishes (`ProcessLog`); `metrics.json`
  timings are sums over them, killed processes included;
- inputs.json - what the run read, bound by content: each data file's absolute path and
  sha256, the model's path and fingerprint (`spt_bench.inputs`);
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
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from spt_bench.errors import ConfigError, InputError
from spt_bench.io import (
    append_jsonl,
    atomic_write_json,
    check_output_place,
    hold_folder,
    read_jsonl,
    release_folder,
)

if TYPE_CHECKING:  # pragma: no cover
    from spt_bench.config import RunConfig
    from spt_bench.process_log import ProcessLog


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
    INPUTS = "inputs.json"
    HISTORY = "history"
    SCORES = "scores"  # `spt-bench score` of the run's predictions, one folder per call
    VLLM_MODEL = "vllm-model"  # weights the vllm engine exports (full-ft, merged LoRA)
    LOCK = ".lock"
    # per-example cache of model-based scores (NLI, judge): keyed by model, rubric and example
    # content, so it stays valid across scorings and is never archived
    MODEL_SCORES = "model_scores.jsonl"
    # what `evaluate` replaces (the previous ones move to history/<time>/)
    RESULT_FILES = (PREDICTIONS, EXAMPLE_SCORES, EXAMPLE_STATS, METRICS, REPORT)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock_file: IO[str] | None = None
        self._process_log: ProcessLog | None = None

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

    def write_env(self, device: Any, dtype: Any, **extra: Any) -> None:
        """env.json: package versions, git commit, device (+ `extra`, e.g. the launch)."""
        from spt_bench.env import collect_env

        self.write_json(self.ENV, {**collect_env(device, dtype), **extra})

    def archive_results(self) -> Path | None:
        """Move the current results (predictions, scores, metrics, report) into
        history/<time>/ before they are replaced; returns that folder (None: nothing to move)."""
        present = [n for n in self.RESULT_FILES if (self.path / n).exists()]
        if not present:
            return None
        dest = self._history_folder()
        for name in present:
            os.replace(self.path / name, dest / name)
        return dest

    def archive_scores(self) -> Path | None:
        """Copy the current scores (not the predictions, which stay in use) into
        history/<time>/ before a re-scoring replaces them; returns that folder."""
        import shutil

        names = [n for n in self.RESULT_FILES if n != self.PREDICTIONS]
        present = [n for n in names if (self.path / n).exists()]
        if not present:
            return None
        dest = self._history_folder()
        for name in present:
            shutil.copy2(self.path / name, dest / name)
        return dest

    def _history_folder(self) -> Path:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        dest = self.path / self.HISTORY / stamp
        n = 1
        while dest.exists():
            n += 1
            dest = self.path / self.HISTORY / f"{stamp}-{n}"
        dest.mkdir(parents=True)
        return dest

    def publish_scores(self, write: Any) -> Path:
        """Write a `spt-bench score` result into a new scores/<time>/ folder: `write(tmp)`
        fills a hidden temp folder, which is then renamed to the first free
        `<time>[-n]` name (a rename onto a folder that exists fails, so two scorings in the
        same second get two folders; a failed scoring leaves nothing)."""
        import errno
        import tempfile

        from spt_bench.io import make_dirs

        root = make_dirs(self.path / self.SCORES)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
        try:
            write(tmp)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            for n in range(1, 10_000):
                dest = root / (stamp if n == 1 else f"{stamp}-{n}")
                try:
                    os.rename(tmp, dest)
                    return dest
                except OSError as e:
                    if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
            raise OSError(f"no free folder name under {root}")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

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

    def start_process_log(
        self, kind: str, started: float, timings: dict[str, float] | None = None
    ) -> ProcessLog:
        """Record this process in processes.jsonl now (so a killed process is never missing)
        and keep its stage times there while it works; see ProcessLog."""
        from spt_bench.process_log import ProcessLog  # it imports this module

        log = ProcessLog(self, kind, started, timings)
        log.start()
        self._process_log = log  # stopped by release(), whatever way the process leaves
        return log

    def has(self, name: str) -> bool:
        return (self.path / name).exists()

    def drop_vllm_export(self) -> None:
        """Remove vllm-model/ (weights exported for the vllm engine; rebuilt from the
        checkpoint when that engine is used again): a run decoded by hf does not keep them."""
        export = self.path / self.VLLM_MODEL
        if export.is_dir() and not export.is_symlink():
            shutil.rmtree(export)

    def processes(self) -> list[dict]:
        if not (self.path / self.PROCESSES).is_file():
            return []
        return list(self.read_jsonl(self.PROCESSES, tolerate_truncated_tail=True))

    def process_timings(self, kind: str = "run") -> dict[str, Any]:
        """Stage seconds summed over every process of `kind` that worked on the folder, from
        each process's last record in processes.jsonl (killed ones included: they left a start
        row and heartbeats). `total_s` sums each process's wall time, so it is never below the
        sum of the stages; `processes` counts them; `by_process` lists each."""
        last: dict[str, dict] = {}
        for n, row in enumerate(self.processes()):
            if row.get("event") is None:  # a row of the older format: one per finished process
                row = {**row, "process": f"old-{n}", "kind": kind,
                       "elapsed": (row.get("ended") or 0) - (row.get("started") or 0)}  # fmt: skip
            if row.get("kind", "run") != kind:
                continue
            last[str(row.get("process"))] = {**last.get(str(row.get("process")), {}), **row}
        total: dict[str, float] = {}
        by_process = []
        for row in last.values():
            t = {k: float(v) for k, v in (row.get("timings") or {}).items()
                 if k != "total_s" and isinstance(v, int | float)}  # fmt: skip
            elapsed = max(float(row.get("elapsed") or 0.0), sum(t.values()))
            for k, v in t.items():
                total[k] = total.get(k, 0.0) + v
            total["total_s"] = total.get("total_s", 0.0) + elapsed
            by_process.append(
                {
                    "command": row.get("command"),
                    "pid": row.get("pid"),
                    "finished": row.get("event") == "end" or "ended" in row,
                    **{k: round(v, 3) for k, v in t.items()},
                    "total_s": round(elapsed, 3),
                }
            )
        out: dict[str, Any] = {k: round(v, 3) for k, v in total.items()}
        out["processes"] = len(by_process)
        return out | {"by_process": by_process}

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
                pid = old.get("pid")
                if _alive(pid):  # e.g. the folder is a copy of a run folder still being written
                    warn(
                        f"lock record in {self.path} names pid {pid} (started "
                        f"{old.get('started_iso', '?')}), which is alive but does not hold this "
                        "folder (a copy of a live run folder?); taking the lock"
                    )
                else:
                    warn(
                        f"stale lock in {self.path}: pid {pid} "
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
        hold_folder(self.path)  # from now on every write checks the folder is still here

    def release(self) -> None:
        """Drop the lock; the lock file is emptied (a clean exit leaves no stale record) but
        kept: unlinking it would let a waiting process lock a file no newcomer sees."""
        import fcntl

        if self._process_log is not None:
            self._process_log.stop(finished=False)
            self._process_log = None
        f = self._lock_file
        if f is None:
            return
        self._lock_file = None
        release_folder(self.path)
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


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def enclosing_run_folder(path: str | Path) -> RunFolder | None:
    """The run folder `path` is (or lies in), if any. A run folder holds config.json and at
    least one other file only runs write (a model folder's config.json alone is not one)."""
    start = Path(os.path.abspath(path))
    for parent in [start, *start.parents]:
        folder = RunFolder(parent)
        if folder.is_run() and any(
            (parent / name).exists()
            for name in (folder.ENV, folder.TRAIN_LOG, folder.PREDICTIONS, folder.PROCESSES)
        ):
            return folder
    return None


def output_file(out: str | Path, default_name: str) -> Path:
    """The one rule for a command's output file: a path that ends in a separator or names an
    existing folder means `default_name` inside that folder; any other path is the file itself.
    Missing parent folders are created when the file is written (every writer here does so)."""
    text = str(out)
    path = Path(text)
    if text.endswith(("/", os.sep)) or path.is_dir():
        path = path / default_name
    refuse_inside_run_folder(path)
    check_output_place(path)
    return path


def refuse_inside_run_folder(path: str | Path) -> None:
    """A command's output may not land inside a run folder (or any folder below one): only
    the run itself writes there (`spt-bench score` of a run's predictions uses its own fresh
    scores/<time>/ folder)."""
    run = enclosing_run_folder(Path(os.path.abspath(path)).parent)
    if run is not None:
        raise ConfigError(
            f"--out {path} is inside run folder {run.path}, whose files only its run writes; "
            "write elsewhere"
        )
