"""Multi-Session Chat (MSC; Xu et al. 2022, "Beyond Goldfish Memory"; ParlAI task `msc`).

Files: ParlAI's `msc/msc_dialogue/session_{2,3,4,5}/{train,valid,test}.txt` (session 5 has no
train); despite the suffix each line is one JSON object, one conversation session:

    {"personas": [[speaker 1's summary sentences], [speaker 2's]],
     "dialog": [{"id": "Speaker 1", "text": "..."}, {"id": "Speaker 2", "text": "..."}, ...],
     "previous_dialogs": [{"dialog": [{"text": "..."}, ...], "time_num": 4, "time_unit": "days"},
                          ...],
     "init_personas": [...], "metadata": {"initial_data_id": "...", ...}}

`personas` are the crowdworkers' summaries of what each speaker said in the earlier sessions,
accumulated over them (ParlAI's "goldsum"): they are the examples' personas. Each session gives
two responder views (spt_bench/data/views.py), `<prefix>:<line index>:speaker1` and
`...:speaker2`, `<prefix>` being `session_<N>_<file stem>` inside a `session_<N>` folder, else the
file stem. `meta.session` is the session number (previous sessions + 1).

How much of the earlier sessions goes into the history (`data.msc_history`):
`none` (default: the persona summaries carry them, and inputs stay ConvAI2-sized), `last` (the
previous session's utterances) or `all` (every earlier session's, oldest first). Turns without
an `id` are taken to alternate from Speaker 1 (ParlAI's reader ignores the ids and assumes that).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spt_bench.data.example import Example
from spt_bench.data.parlai import read_text_lines
from spt_bench.data.views import Conversation, conversation_examples
from spt_bench.errors import ConfigError, InputError

HISTORY_CHOICES = ("none", "last", "all")
REQUIRED = ("personas", "dialog")
VIEW_LABEL = "speaker"


class _Bad(ValueError):
    """A problem with one session line (the caller adds the file and line)."""


def looks_like_msc(path: Path) -> bool:
    """True when the file's first non-blank line is a JSON object with `dialog` and `personas`
    (MSC), not a canonical-JSONL Example or ParlAI text."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    obj = json.loads(line.lstrip("\ufeff"))
                    return isinstance(obj, dict) and "dialog" in obj and "personas" in obj
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return False


def _speaker(label: Any, k: int) -> int:
    norm = " ".join(str(label).lower().split())
    speaker = {"speaker 1": 1, "speaker 2": 2}.get(norm)
    if speaker is None:
        raise _Bad(f"dialog turn {k} has id {label!r}: expected 'Speaker 1' or 'Speaker 2'")
    return speaker


def _turns(dialog: Any, where: str) -> tuple[tuple[int, str], ...]:
    """(speaker, text) of each turn: the `id` when there is one (it must name Speaker 1 or 2),
    else alternating from Speaker 1 (ParlAI's own reading, which ignores ids)."""
    if not isinstance(dialog, list):
        raise _Bad(f"{where} must be a list of turns")
    turns = []
    for k, turn in enumerate(dialog):
        if not isinstance(turn, dict) or not isinstance(turn.get("text"), str):
            raise _Bad(f"{where} turn {k} needs a 'text' string")
        speaker = _speaker(turn["id"], k) if "id" in turn else 1 + k % 2
        if turn["text"].strip():
            turns.append((speaker, turn["text"].strip()))
    return tuple(turns)


def _personas(value: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if not isinstance(value, list) or len(value) != 2:
        raise _Bad("'personas' must be a list of two lists (Speaker 1's, Speaker 2's)")
    out = []
    for k, sentences in enumerate(value, start=1):
        if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
            raise _Bad(f"'personas' of Speaker {k} must be a list of strings")
        kept = tuple(s.strip() for s in sentences if s.strip())
        if not kept:
            raise _Bad(f"no persona for Speaker {k}")
        out.append(kept)
    return out[0], out[1]


def _earlier(previous: Any, history: str) -> tuple[tuple[int, str], ...]:
    if previous is None:
        return ()
    if not isinstance(previous, list):
        raise _Bad("'previous_dialogs' must be a list")
    chosen = {"none": [], "last": previous[-1:], "all": previous}[history]
    out: list[tuple[int, str]] = []
    for j, session in enumerate(chosen):
        if not isinstance(session, dict):
            raise _Bad(f"previous_dialogs[{j}] must be an object with 'dialog'")
        out += _turns(session.get("dialog"), f"previous_dialogs[{j}].dialog")
    return tuple(out)


def session_examples(obj: Any, dialog_id: str, history: str = "none") -> list[Example]:
    """Both responder views of one MSC session object."""
    if not isinstance(obj, dict):
        raise _Bad("expected a JSON object")
    missing = [k for k in REQUIRED if k not in obj]
    if missing:
        raise _Bad(f"missing field {missing[0]!r} (MSC needs {', '.join(REQUIRED)})")
    personas = _personas(obj["personas"])
    turns = _turns(obj["dialog"], "'dialog'")
    if not turns:
        raise _Bad("empty conversation ('dialog' has no utterance)")
    previous = obj.get("previous_dialogs")
    session = 1 + (len(previous) if isinstance(previous, list) else 0)
    conv = Conversation(
        dialog_id=dialog_id,
        personas=personas,
        turns=turns,
        earlier=_earlier(previous, history),
        meta={"session": session},
    )
    return conversation_examples(conv, VIEW_LABEL)


def default_prefix(path: Path) -> str:
    parent = path.parent.name
    return f"{parent}_{path.stem}" if parent.startswith("session_") else path.stem


def parse_msc(
    path: str | Path, *, history: str = "none", dialog_prefix: str | None = None
) -> list[Example]:
    """Examples of an MSC session file; errors name the file and line."""
    if history not in HISTORY_CHOICES:
        raise ConfigError(f"msc_history must be one of {', '.join(HISTORY_CHOICES)}")
    path = Path(path)
    prefix = dialog_prefix or default_prefix(path)
    examples: list[Example] = []
    index = 0
    for lineno, text in enumerate(read_text_lines(path), start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(path, lineno, f"invalid JSON ({e.msg} at column {e.colno})") from None
        try:
            examples += session_examples(obj, f"{prefix}:{index}", history)
        except _Bad as e:
            raise InputError(path, lineno, str(e)) from None
        index += 1
    return examples
