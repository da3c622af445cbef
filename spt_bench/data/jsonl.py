"""Canonical JSONL: one Example per line, the schema `Example.to_dict()` writes.

    {"id": "d1:0", "dialog_id": "d1", "turn": 0, "persona": ["..."], "history": ["..."],
     "response": "...", "partner_persona": [], "candidates": [], "meta": {...}}

`id`, `partner_persona`, `candidates` and `meta` are optional when reading; `id`, when present,
must equal `<dialog_id>:<turn>`. Extra per-example fields belong under `meta`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from spt_bench.data.example import Example
from spt_bench.data.parlai import read_text_lines
from spt_bench.errors import InputError
from spt_bench.io import atomic_write_text

REQUIRED = ("dialog_id", "turn", "persona", "history", "response")
OPTIONAL = ("id", "partner_persona", "candidates", "meta")


def _str_list(obj: dict, key: str, path: Path, line: int) -> tuple[str, ...]:
    value = obj.get(key, [])
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise InputError(path, line, f"field '{key}' must be a list of strings")
    return tuple(value)


def example_from_dict(obj: dict[str, Any], *, path: str | Path, line: int) -> Example:
    """Validate one canonical-schema object; errors name the file and line."""
    path = Path(path)
    missing = [k for k in REQUIRED if k not in obj]
    if missing:
        raise InputError(path, line, f"missing field(s) {', '.join(missing)}")
    unknown = sorted(set(obj) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise InputError(
            path, line, f"unknown field(s) {', '.join(unknown)} (put extra fields under 'meta')"
        )
    dialog_id = obj["dialog_id"]
    if isinstance(dialog_id, bool) or not isinstance(dialog_id, (str, int)) or dialog_id == "":
        raise InputError(path, line, "field 'dialog_id' must be a non-empty string or an integer")
    turn = obj["turn"]
    if isinstance(turn, bool) or not isinstance(turn, int) or turn < 0:
        raise InputError(path, line, "field 'turn' must be an integer >= 0")
    response = obj["response"]
    if not isinstance(response, str) or not response.strip():
        raise InputError(path, line, "field 'response' must be a non-empty string")
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise InputError(path, line, "field 'meta' must be an object")
    ex = Example(
        dialog_id=str(dialog_id),
        turn=turn,
        persona=_str_list(obj, "persona", path, line),
        history=_str_list(obj, "history", path, line),
        response=response,
        partner_persona=_str_list(obj, "partner_persona", path, line),
        candidates=_str_list(obj, "candidates", path, line),
        meta=meta,
    )
    if "id" in obj and obj["id"] != ex.id:
        raise InputError(path, line, f"field 'id' is {obj['id']!r} but dialog_id:turn is {ex.id!r}")
    return ex


def read_examples_jsonl(path: str | Path) -> list[Example]:
    """Read a canonical JSONL file (blank lines are skipped); duplicate ids are an error."""
    path = Path(path)
    examples: list[Example] = []
    seen: dict[str, int] = {}
    for lineno, text in enumerate(read_text_lines(path), start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(path, lineno, f"invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise InputError(path, lineno, "expected a JSON object")
        ex = example_from_dict(obj, path=path, line=lineno)
        if ex.id in seen:
            raise InputError(
                path, lineno, f"duplicate example id {ex.id!r} (first on line {seen[ex.id]})"
            )
        seen[ex.id] = lineno
        examples.append(ex)
    return examples


def format_examples_jsonl(examples: Iterable[Example]) -> str:
    return "".join(json.dumps(ex.to_dict(), ensure_ascii=False) + "\n" for ex in examples)


def write_examples_jsonl(examples: Iterable[Example], path: str | Path) -> None:
    """Write Examples in the canonical schema, atomically."""
    atomic_write_text(path, format_examples_jsonl(examples))
