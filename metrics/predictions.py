"""Reading and validating predictions files (JSONL) for scoring.

Each line: {"id", "reference", "prediction"} plus optional "dialog_id", "turn", "persona",
"history", "selected_prompt", and model-metric fields "ref_nll_sum" + "ref_n_tokens", "hits@k".
An optional field must be on every row or on none, so every metric covers every example.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

from spt_bench.errors import InputError
from spt_bench.metrics.registry import HITS_KS

REQUIRED = ("id", "reference", "prediction")
# Optional fields that, when present, must be present on every row.
ALL_OR_NONE = ("turn", "persona", "ref_nll_sum") + tuple(f"hits@{k}" for k in HITS_KS)
_HITS_FIELD = re.compile(r"^hits@(\d+)$")


def read_prediction_rows(path: str | Path) -> list[dict]:
    """Parse and validate a predictions JSONL file; InputError names file, line and problem."""
    from spt_bench.io import read_jsonl_lines

    path = Path(path)
    rows: list[dict] = []
    line_numbers: list[int] = []
    for i, obj in read_jsonl_lines(path):
        rows.append(obj)
        line_numbers.append(i)
    if not rows:
        raise InputError(path, None, "empty file: no predictions to score")
    return validate_rows(rows, source=path, line_numbers=line_numbers)


def validate_rows(
    rows: Sequence[dict],
    *,
    source: str | Path = "<rows>",
    line_numbers: Sequence[int] | None = None,
) -> list[dict]:
    """Check types and cross-row consistency; returns copies with `id` as a string.

    Errors name `source` and the 1-based line (or row position when no line numbers).
    """
    if not rows:
        raise InputError(source, None, "no predictions to score")
    lines = list(line_numbers) if line_numbers is not None else list(range(1, len(rows) + 1))
    out: list[dict] = []
    seen_ids: dict[str, int] = {}
    first_with: dict[str, int | None] = {}
    for row, line in zip(rows, lines, strict=True):

        def fail(problem: str, line: int = line) -> InputError:
            return InputError(source, line, problem)

        if not isinstance(row, dict):
            raise fail("expected a JSON object")
        for key in REQUIRED:
            if key not in row:
                raise fail(f"missing field {key!r}")
        row = dict(row)
        rid = row["id"]
        if isinstance(rid, bool) or not isinstance(rid, (str, int)) or rid == "":
            raise fail("field 'id' must be a non-empty string or integer")
        rid = row["id"] = str(rid)
        if rid in seen_ids:
            raise fail(f"duplicate id {rid!r} (first on line {seen_ids[rid]})")
        seen_ids[rid] = line
        for key in ("reference", "prediction"):
            if not isinstance(row[key], str):
                raise fail(f"field {key!r} must be a string")
        _check_optional(row, fail)
        present = {k for k in ALL_OR_NONE if k in row}
        for key in ALL_OR_NONE:
            if key not in first_with:
                first_with[key] = line if key in present else None
                continue
            first = first_with[key]
            if (first is not None) != (key in present):
                mismatch = (
                    f"field {key!r} missing, but line {first} has it"
                    if first is not None
                    else f"field {key!r} present, but line {lines[0]} lacks it"
                )
                raise fail(f"{mismatch} (an optional field must be on every row or on none)")
        out.append(row)
    return out


def _check_optional(row: dict, fail) -> None:
    if "turn" in row:
        t = row["turn"]
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise fail("field 'turn' must be a non-negative integer")
    if "dialog_id" in row and not isinstance(row["dialog_id"], (str, int)):
        raise fail("field 'dialog_id' must be a string or integer")
    for key in ("persona", "history"):
        if key in row:
            v = row[key]
            if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
                raise fail(f"field {key!r} must be a list of strings")
    if ("ref_nll_sum" in row) != ("ref_n_tokens" in row):
        raise fail("fields 'ref_nll_sum' and 'ref_n_tokens' must come together")
    if "ref_nll_sum" in row:
        nll, n = row["ref_nll_sum"], row["ref_n_tokens"]
        if isinstance(nll, bool) or not isinstance(nll, (int, float)) or not math.isfinite(nll):
            raise fail("field 'ref_nll_sum' must be a finite number")
        if nll < 0:
            raise fail("field 'ref_nll_sum' must be >= 0 (a sum of negative log-likelihoods)")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise fail("field 'ref_n_tokens' must be a positive integer")
    for key in row:
        match = _HITS_FIELD.match(key)
        if not match:
            continue
        if int(match.group(1)) not in HITS_KS:
            raise fail(
                f"unsupported field {key!r}: hits@k is reported for k in "
                + ", ".join(str(k) for k in HITS_KS)
            )
        v = row[key]
        if isinstance(v, bool):
            row[key] = int(v)
        elif v not in (0, 1):
            raise fail(f"field {key!r} must be 0 or 1")
