"""Atomic file writes and crash-safe JSONL appends, so a killed run never leaves half a file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from spt_bench.errors import InputError


def output_file(out: str | Path, default_name: str) -> Path:
    """The one rule for a command's output file: a path that ends in a separator or names an
    existing folder means `default_name` inside that folder; any other path is the file itself.
    Missing parent folders are created when the file is written (every writer here does so)."""
    text = str(out)
    path = Path(text)
    if text.endswith(("/", os.sep)) or path.is_dir():
        return path / default_name
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file + rename (readers see the old or the new file).
    The file gets the mode a plain open() would give it (0666 less the umask), not mkstemp's
    0600: every output file of spt-bench goes through here."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
    path.parent.mkdir(parents=True, exist_ok=True)
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
