"""Atomic file writes and crash-safe JSONL appends, so a killed run never leaves half a file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from spt_bench.errors import InputError, SptBenchError

# Run folders held by this process (RunFolder.acquire): absolute path -> (st_dev, st_ino) of the
# folder when it was locked. Every writer here checks them first, so a process whose folder was
# moved or removed stops instead of recreating an empty folder under the old name.
_HELD_FOLDERS: dict[str, tuple[int, int]] = {}


class FolderMovedError(SptBenchError):
    """The run folder this process writes was moved or removed while it ran."""


def hold_folder(path: str | Path) -> None:
    st = os.stat(path)
    _HELD_FOLDERS[os.path.abspath(path)] = (st.st_dev, st.st_ino)


def release_folder(path: str | Path) -> None:
    _HELD_FOLDERS.pop(os.path.abspath(path), None)


def check_held_folder(target: str | Path) -> None:
    """Raise FolderMovedError when `target` lies in a held run folder that is no longer where
    (and what) it was when this process locked it."""
    if not _HELD_FOLDERS:
        return
    target_abs = os.path.abspath(target)
    for folder, identity in list(_HELD_FOLDERS.items()):
        if target_abs != folder and not target_abs.startswith(folder.rstrip(os.sep) + os.sep):
            continue
        try:
            st = os.stat(folder)
            here = (st.st_dev, st.st_ino) == identity
        except FileNotFoundError:
            here = False
        if not here:
            raise FolderMovedError(
                f"run folder {folder} was moved or removed while this process was writing it; "
                "stopped without writing (continue the moved folder with --resume)"
            )


def make_dirs(path: str | Path) -> Path:
    """mkdir -p, refusing to recreate a held run folder that was moved away (see above)."""
    path = Path(path)
    check_held_folder(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_output_place(path: str | Path, *, folder: bool = False) -> None:
    """Fail now, in one line, when `path` (a file, or with `folder` a folder) cannot be
    written: something on its way is a file, or nothing can be created where it would go
    (checked by making and removing a probe folder in the nearest existing parent:
    permissions, read-only file systems; an existing target folder is checked with access())."""
    from spt_bench.errors import ConfigError

    p = Path(os.path.abspath(path))
    if folder and p.exists() and not p.is_dir():
        raise ConfigError(f"--out {path} exists and is not a folder")
    if not folder and p.is_dir():
        raise ConfigError(f"--out {path} is a folder, expected a file name")
    nearest = p if folder else p.parent
    while not nearest.exists():
        nearest = nearest.parent
    if not nearest.is_dir():
        raise ConfigError(f"--out {path}: {nearest} is a file, not a folder")
    if nearest == p:  # an existing folder (e.g. a run to resume): never write a probe into it
        if not os.access(p, os.W_OK | os.X_OK):  # EROFS and EACCES, also for root on EROFS
            raise ConfigError(f"--out {path}: cannot write in {p}")
        return
    try:
        os.rmdir(tempfile.mkdtemp(dir=nearest, prefix=".spt-bench-probe-"))
    except OSError as e:
        raise ConfigError(f"--out {path}: cannot write in {nearest} ({e.strerror})") from None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file + rename (readers see the old or the new file).
    The file gets the mode a plain open() would give it (0666 less the umask), not mkstemp's
    0600: every output file of spt-bench goes through here."""
    path = Path(path)
    make_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) atomically (see `atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def append_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Append rows and fsync: a kill loses at most the batch being written, never earlier rows."""
    path = Path(path)
    make_dirs(path.parent)
    with open(path, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl_lines(
    path: str | Path, *, tolerate_truncated_tail: bool = False
) -> Iterator[tuple[int, dict]]:
    """Yield (1-based line number, JSON object); malformed lines raise InputError naming file
    and line.

    With `tolerate_truncated_tail`, a last line without a newline that does not parse (a write
    cut by a kill) is dropped instead of raising - used when resuming our own output files.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, None, "file not found") from None
    except IsADirectoryError:
        raise InputError(path, None, "is a directory, expected a .jsonl file") from None
    lines = data.split(b"\n")
    last = len(lines)
    for i, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(path, i, "invalid UTF-8") from None
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            if tolerate_truncated_tail and i == last:
                return
            raise InputError(path, i, f"invalid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise InputError(path, i, "expected a JSON object")
        yield i, obj


def read_jsonl(path: str | Path, *, tolerate_truncated_tail: bool = False) -> Iterator[dict]:
    """Yield the JSON objects of a JSONL file (see `read_jsonl_lines`)."""
    for _, obj in read_jsonl_lines(path, tolerate_truncated_tail=tolerate_truncated_tail):
        yield obj
