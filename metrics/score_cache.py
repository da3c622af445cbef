"""Per-example cache of model-based scores (NLI C-score, LLM judge).

One JSONL file of {"key", "value"} rows. A key is the sha256 of the instrument's fingerprint, its
rubric hash and the example's content (response, persona, context), so the same model and rubric
reuse a score, a changed rubric or model recomputes it. Rows are appended (and fsynced) once per
batch, so a killed scoring resumes where it stopped; a line cut by a kill is dropped on load.
The file holds hashes and numbers only, never text.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def content_key(*parts: Any) -> str:
    """sha256 of the JSON of `parts` (instrument, rubric hash, example content)."""
    text = json.dumps(parts, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ScoreCache:
    """key -> value rows of one JSONL file; `path=None` keeps them in memory only."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.values: dict[str, Any] = {}
        if self.path is not None and self.path.is_file():
            self._load()

    def _load(self) -> None:
        from spt_bench.io import atomic_write_bytes, read_jsonl

        assert self.path is not None
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):  # a batch cut by a kill: keep the whole lines
            atomic_write_bytes(self.path, data[: data.rfind(b"\n") + 1])
        for row in read_jsonl(self.path):
            if "key" in row and "value" in row:
                self.values[str(row["key"])] = row["value"]

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def __len__(self) -> int:
        return len(self.values)

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def add(self, entries: dict[str, Any]) -> None:
        """Record one batch of scores (one append + fsync)."""
        if not entries:
            return
        self.values.update(entries)
        if self.path is not None:
            from spt_bench.io import append_jsonl

            append_jsonl(self.path, ({"key": k, "value": v} for k, v in entries.items()))
