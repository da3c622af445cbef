"""Synthetic-Persona-Chat (Jandaghi et al. 2023; google/Synthetic-Persona-Chat, CC-BY-4.0).

Files: `Synthetic-Persona-Chat_{train,valid,test}.csv` (the hub repository's `data/` folder;
the `datasets` form has the same columns in splits train/validation/test). One row per
conversation; the columns used (matched case-insensitively, others ignored):

    user 1 personas               User 1's persona sentences, one per line
    user 2 personas               User 2's persona sentences, one per line
    Best Generated Conversation   the conversation, one utterance per line, each starting
                                  `User 1:` or `User 2:`

Each row gives two responder views (spt_bench/data/views.py): `<prefix>:<row>:user1` (User 1's
persona, an example per User 1 utterance) and `<prefix>:<row>:user2`; `<prefix>` is the file's
stem (a `datasets` split: its name), `<row>` the 0-based data row.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

from spt_bench.data.example import Example
from spt_bench.data.parlai import read_text_lines
from spt_bench.data.views import Conversation, conversation_examples
from spt_bench.errors import InputError, SptBenchError

PERSONA_COLUMNS = ("user 1 personas", "user 2 personas")
CONVERSATION_COLUMN = "best generated conversation"
COLUMNS = (*PERSONA_COLUMNS, CONVERSATION_COLUMN)
VIEW_LABEL = "user"
_LABELLED = re.compile(r"^\s*([^:]{1,40}):(.*)$")


class RowError(ValueError):
    """A problem with one conversation row (the caller adds the file and line)."""


def is_spc_columns(columns: list[str]) -> bool:
    """True when a table has Synthetic-Persona-Chat's conversation column."""
    return CONVERSATION_COLUMN in {c.strip().lower() for c in columns}


def _sentences(value: Any, column: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        value = "\n".join(str(v) for v in value)
    if not isinstance(value, str):
        raise RowError(f"column {column!r} must hold text")
    return tuple(s.strip() for s in value.splitlines() if s.strip())


def _speaker(label: str) -> int | None:
    norm = " ".join(label.lower().split())
    return {"user 1": 1, "user 2": 2}.get(norm)


def parse_conversation(text: Any) -> tuple[tuple[int, str], ...]:
    """`User 1: ...` / `User 2: ...` lines as (speaker, utterance); blank lines skipped."""
    if text is None or (isinstance(text, str) and not text.strip()):
        raise RowError("empty conversation")
    if not isinstance(text, str):
        raise RowError(f"column {CONVERSATION_COLUMN!r} must hold text")
    turns = []
    for k, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        m = _LABELLED.match(line)
        if m is None:
            raise RowError(f"conversation line {k} has no speaker label ('User 1:' or 'User 2:')")
        speaker = _speaker(m.group(1))
        if speaker is None:
            raise RowError(
                f"conversation line {k} starts with {m.group(1).strip()!r}: expected "
                "'User 1' or 'User 2'"
            )
        utterance = m.group(2).strip()
        if not utterance:
            raise RowError(f"conversation line {k} ({m.group(1).strip()}) is empty")
        turns.append((speaker, utterance))
    return tuple(turns)


def row_examples(row: dict[str, Any], dialog_id: str) -> list[Example]:
    """Both responder views of one row (keys: the lower-cased column names)."""
    personas = tuple(_sentences(row.get(c), c) for c in PERSONA_COLUMNS)
    for k, persona in enumerate(personas, start=1):
        if not persona:
            raise RowError(f"no persona for User {k} (column {PERSONA_COLUMNS[k - 1]!r})")
    turns = parse_conversation(row.get(CONVERSATION_COLUMN))
    conv = Conversation(dialog_id=dialog_id, personas=(personas[0], personas[1]), turns=turns)
    return conversation_examples(conv, VIEW_LABEL)


def _header(names: list[str], path: Path) -> list[str]:
    lower = [n.strip().lower() for n in names]
    missing = [c for c in COLUMNS if c not in lower]
    if missing:
        raise InputError(
            path, 1, f"missing column {missing[0]!r} (Synthetic-Persona-Chat needs: "
            f"{', '.join(repr(c) for c in COLUMNS)})"
        )  # fmt: skip
    return lower


def parse_spc_csv(path: str | Path, *, dialog_prefix: str | None = None) -> list[Example]:
    """Examples of a Synthetic-Persona-Chat CSV file; errors name the file and the CSV line
    where the offending row starts."""
    path = Path(path)
    text = "\n".join(read_text_lines(path)) + "\n"
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        names = _header(next(reader), path)
        prefix = dialog_prefix or path.stem
        examples: list[Example] = []
        row_index = 0
        start = reader.line_num + 1
        for values in reader:
            if any(v.strip() for v in values):
                row = dict(zip(names, values, strict=False))
                try:
                    examples += row_examples(row, f"{prefix}:{row_index}")
                except RowError as e:
                    raise InputError(path, start, str(e)) from None
                row_index += 1
            start = reader.line_num + 1
    except csv.Error as e:
        raise InputError(path, reader.line_num, f"invalid CSV ({e})") from None
    if not examples:
        raise InputError(path, None, "no conversations")
    return examples


def spc_rows_to_examples(columns: dict[str, list], *, name: str) -> list[Example]:
    """The `datasets` form (column -> values, as `Dataset.to_dict()` gives) as Examples."""
    lower = {c.strip().lower(): values for c, values in columns.items()}
    missing = [c for c in COLUMNS if c not in lower]
    if missing:
        raise SptBenchError(f"{name}: missing column {missing[0]!r} (Synthetic-Persona-Chat)")
    n = len(lower[CONVERSATION_COLUMN])
    examples: list[Example] = []
    for i in range(n):
        row = {c: lower[c][i] for c in COLUMNS}
        try:
            examples += row_examples(row, f"{name}:{i}")
        except RowError as e:
            raise SptBenchError(f"{name} row {i}: {e}") from None
    return examples
