"""What a run read, bound by content: the run folder's inputs.json.

A run records, for each data input (`data.source`, or `data.train_data` + `data.test_data`,
and `data.eval_data` when it evaluates on another source), the absolute path it resolved to and
the sha256 of its bytes (a folder: of every file in it, by relative name; a named dataset: of
the files it uses, and it is read again by its name), and for the model its path and a
fingerprint. `evaluate` and `--resume`
read the recorded file and check its hash, so a run is never re-scored against another file
that happens to have the same (relative) name; a file that moved is accepted through `--data
NEW` only when its content is the same.

The model fingerprint hashes every small file (config, tokenizer) in full and, for weight
files over SMALL_FILE bytes, their size and first and last MiB: enough to tell two models
apart without reading 14 GB on every `evaluate`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from spt_bench.errors import ConfigError, InputError

DATA_ROLES = ("source", "train_data", "test_data", "eval_data")
SMALL_FILE = 16 * 2**20
_CHUNK = 2**20


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def tree_sha256(folder: Path, *, quick_large: bool = False) -> str:
    """sha256 over (relative name, content digest) of every non-hidden file under `folder`.
    quick_large: files over SMALL_FILE contribute their size and first/last MiB only."""
    h = hashlib.sha256()
    for p in _files(folder):
        h.update(p.relative_to(folder).as_posix().encode() + b"\0")
        size = p.stat().st_size
        if quick_large and size > SMALL_FILE:
            with open(p, "rb") as f:
                head = f.read(_CHUNK)
                f.seek(size - _CHUNK)
                tail = f.read(_CHUNK)
            digest = hashlib.sha256(str(size).encode() + head + tail).hexdigest()
        else:
            digest = file_sha256(p)
        h.update(digest.encode() + b"\0")
    return h.hexdigest()


def local_data_path(value: str | None) -> Path | None:
    """The absolute local path a data value names (None: a hub id, or unset)."""
    from spt_bench.data.resolve import resolve_source

    if value is None:
        return None
    src = resolve_source(value)
    return None if src.path is None else Path(os.path.abspath(src.path))


def normalize_data_value(value: str | None) -> str | None:
    """A data value as recorded: a local file or folder as its absolute path (so a run does
    not depend on the directory it was started from); `sample` and hub ids unchanged."""
    from spt_bench.data.resolve import SAMPLE, resolve_source

    if value is None or value == SAMPLE or resolve_source(value).kind == "named":
        return value
    path = local_data_path(value)
    return value if path is None else str(path)


def describe_data(value: str | None) -> dict[str, Any]:
    """{given, path, sha256, bytes} of a data value (None = the bundled sample)."""
    from spt_bench.data.resolve import SAMPLE, resolve_source

    src = resolve_source(SAMPLE if value is None else value)
    if src.kind == "named":
        return describe_named(str(value))
    if src.path is None:
        return {"given": value, "kind": src.kind, "hub_id": src.name, "sha256": None}
    path = Path(os.path.abspath(src.path))
    if path.is_dir():
        files = _files(path)
        return {
            "given": value,
            "kind": src.kind,
            "path": str(path),
            "sha256": tree_sha256(path),
            "files": len(files),
            "bytes": sum(p.stat().st_size for p in files),
        }
    return {
        "given": value,
        "kind": src.kind,
        "path": str(path),
        "sha256": file_sha256(path),
        "bytes": path.stat().st_size,
    }


def describe_named(name: str) -> dict[str, Any]:
    """A named dataset (spt_bench/data/named.py) as recorded: the folder it was found in and
    one sha256 over the files it uses (name + content digest each), not the whole folder."""
    from spt_bench.data.named import locate

    located = locate(name)
    paths = sorted({p for ps in located.files.values() for p in ps})
    h = hashlib.sha256()
    for p in paths:
        h.update(p.relative_to(located.folder).as_posix().encode() + b"\0")
        h.update(file_sha256(p).encode() + b"\0")
    return {
        "given": name,
        "kind": "named",
        "dataset": located.dataset.name,
        "path": str(located.folder),
        "sha256": h.hexdigest(),
        "files": [p.relative_to(located.folder).as_posix() for p in paths],
        "bytes": sum(p.stat().st_size for p in paths),
    }


def describe_model(name: str) -> dict[str, Any]:
    """{name, path, fingerprint} of the backbone (built-in tiny models: no files)."""
    from spt_bench.models import IN_MEMORY_MODELS, SMOLLM2

    if name in IN_MEMORY_MODELS:  # built in memory from a config: nothing to hash
        return {"name": name, "builtin": True, "fingerprint": None}
    if name == SMOLLM2:
        from spt_bench.models import smollm2_model_dir

        try:
            path = smollm2_model_dir()
        except Exception:  # noqa: BLE001 - the load reports a missing asset properly
            return {"name": name, "fingerprint": None}
    else:
        path = Path(name).expanduser()
        if not path.is_dir():
            return {"name": name, "hub_id": name, "fingerprint": None}
    path = Path(os.path.abspath(path))
    return {"name": name, "path": str(path), "fingerprint": tree_sha256(path, quick_large=True)}


def describe_inputs(data: Any, model_name: str) -> dict[str, Any]:
    """inputs.json for a run's DataConfig and model name."""
    roles = {r: getattr(data, r) for r in DATA_ROLES if getattr(data, r) is not None}
    if not set(roles) - {"eval_data"}:
        roles = {"source": None, **roles}  # trained on the bundled sample
    return {
        "data": {role: describe_data(value) for role, value in roles.items()},
        "model": describe_model(model_name),
    }


def bind_recorded_inputs(
    recorded: dict[str, Any], overrides: dict[str, str | None]
) -> tuple[dict[str, str], list[str]]:
    """Check a run's recorded data inputs before they are read again.

    For each recorded role: the file is the one given in `overrides` (a moved copy) or the
    recorded path; it must exist and have the recorded sha256. Returns ({role: absolute path
    to use}, notes on moved files). Raises ConfigError/InputError, one line, on a missing or
    changed file."""
    use: dict[str, str] = {}
    notes: list[str] = []
    for role, rec in (recorded.get("data") or {}).items():
        want = rec.get("sha256")
        if not want or not rec.get("path"):
            continue  # a hub dataset: no bytes to check
        given = overrides.get(role)
        if rec.get("kind") == "named":  # read again by its name, wherever it is found now
            name = given or rec["given"]
            now = describe_named(name)["sha256"]
            if now != want:
                raise ConfigError(
                    f"dataset {name!r} ({describe_named(name)['path']}) is not the data this "
                    f"run used: sha256 {now[:16]} != recorded {want[:16]}"
                )
            use[role] = name
            continue
        candidate = Path(given).expanduser() if given else Path(rec["path"])
        flag = "--data" if role == "source" else f"--{role.replace('_', '-')}"
        if not candidate.exists():
            raise InputError(
                candidate,
                None,
                f"the run's {role} data is not there (recorded sha256 {want[:16]}); "
                f"pass {flag} with a copy of it",
            )
        now = describe_data(str(candidate))["sha256"]
        if now != want:
            raise ConfigError(
                f"{candidate} is not the data this run used: sha256 {now[:16]} != recorded "
                f"{want[:16]} ({rec['path']}); evaluate a run on other data with a new run"
            )
        absolute = str(Path(os.path.abspath(candidate)))
        if candidate.name != Path(rec["path"]).name and rec.get("kind") in ("parlai", "sample"):
            raise ConfigError(
                f"{candidate}: a moved copy must keep the name {Path(rec['path']).name} "
                "(ParlAI text files name their dialogue ids after the file)"
            )
        if absolute != rec["path"]:
            notes.append(f"{role} data found at {absolute} (moved from {rec['path']}, same sha256)")
        use[role] = absolute
    return use, notes


def model_drift(recorded: dict[str, Any], model_name: str) -> str | None:
    """A one-line warning when the model's fingerprint differs from the recorded one."""
    rec = recorded.get("model") or {}
    if not rec.get("fingerprint"):
        return None
    now = describe_model(model_name).get("fingerprint")
    if now == rec["fingerprint"]:
        return None
    return (
        f"model {model_name!r} differs from the one this run recorded "
        f"(fingerprint {str(now)[:16]} != {rec['fingerprint'][:16]}, {rec.get('path')})"
    )
