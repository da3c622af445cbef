"""Hugging Face `datasets`: a saved dataset folder, or a hub id when the machine is online.

Rows are mapped to Examples by column name (first match wins):

    persona          persona, personality, your_persona, self_persona
    partner_persona  partner_persona, partner_personality
    history          history, context, dialog_history
    response         response, label, labels, target, reply; else the last of `candidates`
                     (the PersonaChat convention: the true response is the last candidate)
    candidates       candidates, label_candidates
    dialog_id        dialog_id, conv_id, dialogue_id, conversation_id
    turn             turn, utterance_idx, turn_id

A dataset with one row per dialogue and an `utterances` column (a list of {history, candidates})
is expanded to one Example per utterance. Without a dialogue-id column, consecutive rows with the
same persona whose history grows belong to one dialogue; without a turn column, turns count from 0
within each dialogue. A leading `__SILENCE__` / `__ SILENCE __` in a history is dropped.
`datasets` is imported inside the functions (it is slow to import).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from spt_bench.data.example import Example
from spt_bench.data.synthetic_persona_chat import is_spc_columns, spc_rows_to_examples
from spt_bench.errors import InputError, MissingAssetError, SptBenchError

COLUMNS: dict[str, tuple[str, ...]] = {
    "persona": ("persona", "personality", "your_persona", "self_persona"),
    "partner_persona": ("partner_persona", "partner_personality"),
    "history": ("history", "context", "dialog_history"),
    "response": ("response", "label", "labels", "target", "reply"),
    "candidates": ("candidates", "label_candidates"),
    "dialog_id": ("dialog_id", "conv_id", "dialogue_id", "conversation_id"),
    "turn": ("turn", "utterance_idx", "turn_id"),
}
SILENCES = ("__SILENCE__", "__ SILENCE __")
SPLIT_ALIASES = {"valid": "validation", "validation": "valid", "dev": "validation"}


def is_saved_dataset_dir(path: Path) -> bool:
    """True for a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`."""
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file()
    )


def _pick(columns: list[str], role: str) -> str | None:
    return next((c for c in COLUMNS[role] if c in columns), None)


def _texts(value: Any, role: str, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(s.strip() for s in value.split("\n") if s.strip())
    if isinstance(value, (list, tuple)) and all(isinstance(s, str) for s in value):
        return tuple(s.strip() for s in value)
    raise SptBenchError(f"{where}: column for {role} must hold a list of strings or a string")


def _role_columns(
    columns: dict[str, list], name: str
) -> tuple[dict[str, list], dict[str, str | None]]:
    """(the column table, expanded when it holds one row per dialogue, and the column of each
    role or None); rejects a table without persona, history or response/candidates columns."""
    names = list(columns)
    if "utterances" in columns and _pick(names, "history") is None:
        columns = _expand_utterances(columns, name)
        names = list(columns)
    role_col = {role: _pick(names, role) for role in COLUMNS}
    if role_col["persona"] is None:
        raise SptBenchError(
            f"{name}: cannot map columns {names} to persona examples: no persona column "
            f"(one of {', '.join(COLUMNS['persona'])})"
        )
    if role_col["history"] is None:
        raise SptBenchError(
            f"{name}: cannot map columns {names}: no history column "
            f"(one of {', '.join(COLUMNS['history'])})"
        )
    if role_col["response"] is None and role_col["candidates"] is None:
        raise SptBenchError(
            f"{name}: cannot map columns {names}: no response column "
            f"(one of {', '.join(COLUMNS['response'])}) and no candidates column"
        )
    return columns, role_col


def _row_response(value: Any, candidates: tuple[str, ...], where: str) -> str:
    """A row's response (a 1-item list unwrapped; missing: the last candidate), unstripped."""
    response = value
    if isinstance(response, (list, tuple)) and len(response) == 1:
        response = response[0]
    if response is None:
        if not candidates:
            raise SptBenchError(f"{where}: no response and no candidates")
        response = candidates[-1]
    if not isinstance(response, str) or not response.strip():
        raise SptBenchError(f"{where}: response must be a non-empty string")
    return response


def _row_turn(value: Any, next_turn: int, where: str) -> int:
    """A row's turn column value (an int >= 0), or `next_turn` when it has none."""
    if value is None:
        return next_turn
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SptBenchError(f"{where}: turn must be an integer >= 0, got {value!r}")
    return value


def _check_unique_ids(examples: list[Example], name: str) -> None:
    seen: set[str] = set()
    for ex in examples:
        if ex.id in seen:
            raise SptBenchError(f"{name}: duplicate example id {ex.id!r} (dialogue id + turn)")
        seen.add(ex.id)


def rows_to_examples(columns: dict[str, list], *, name: str) -> list[Example]:
    """Map a column table (column -> values, as `Dataset.to_dict()` gives) to Examples
    (Synthetic-Persona-Chat's columns by its own reader)."""
    if is_spc_columns(list(columns)):
        return spc_rows_to_examples(columns, name=name)
    columns, role_col = _role_columns(columns, name)
    names = list(columns)
    n = len(columns[names[0]]) if names else 0

    def col(role: str) -> list:
        c = role_col[role]
        return columns[c] if c is not None else [None] * n

    personas, partners, histories = col("persona"), col("partner_persona"), col("history")
    responses, cands, dids, turns = (
        col("response"),
        col("candidates"),
        col("dialog_id"),
        col("turn"),
    )
    examples: list[Example] = []
    dialog_counter = -1
    prev_persona: tuple[str, ...] | None = None
    prev_len = -1
    turn_in_dialog: dict[str, int] = {}
    for i in range(n):
        where = f"{name} row {i}"
        persona = _texts(personas[i], "persona", where)
        history = list(_texts(histories[i], "history", where))
        if history and history[0] in SILENCES:
            history = history[1:]
        candidates = _texts(cands[i], "candidates", where)
        response = _row_response(responses[i], candidates, where)
        if dids[i] is not None:
            dialog_id = f"{name}:{dids[i]}"
        else:
            # No id column: a new dialogue starts when the persona changes or the history restarts.
            if persona != prev_persona or len(history) <= prev_len:
                dialog_counter += 1
            dialog_id = f"{name}:{dialog_counter}"
        prev_persona, prev_len = persona, len(history)
        turn = _row_turn(turns[i], turn_in_dialog.get(dialog_id, 0), where)
        turn_in_dialog[dialog_id] = turn + 1
        examples.append(
            Example(
                dialog_id=dialog_id,
                turn=turn,
                persona=persona,
                history=tuple(history),
                response=response.strip(),
                partner_persona=_texts(partners[i], "partner_persona", where),
                candidates=candidates,
            )
        )
    _check_unique_ids(examples, name)
    return examples


def _expand_utterances(columns: dict[str, list], name: str) -> dict[str, list]:
    """One row per dialogue with `utterances: [{history, candidates}, ...]` -> one row per turn."""
    persona_col = _pick(list(columns), "persona")
    id_col = _pick(list(columns), "dialog_id")
    out: dict[str, list] = {
        "persona": [],
        "history": [],
        "candidates": [],
        "dialog_id": [],
        "turn": [],
    }
    for i, utterances in enumerate(columns["utterances"]):
        if not isinstance(utterances, list):
            raise SptBenchError(f"{name} row {i}: 'utterances' must be a list")
        for turn, utt in enumerate(utterances):
            if not isinstance(utt, dict) or "history" not in utt or "candidates" not in utt:
                raise SptBenchError(
                    f"{name} row {i}: each utterance needs 'history' and 'candidates'"
                )
            out["persona"].append(columns[persona_col][i] if persona_col else None)
            out["history"].append(utt["history"])
            out["candidates"].append(utt["candidates"])
            out["dialog_id"].append(columns[id_col][i] if id_col else i)
            out["turn"].append(turn)
    return out


def _choose_split(splits: list[str], split: str | None, name: str) -> str:
    if split is None:
        if len(splits) == 1:
            return splits[0]
        raise SptBenchError(f"{name} holds splits {splits}; choose one with --split")
    if split in splits:
        return split
    alias = SPLIT_ALIASES.get(split)
    if alias in splits:
        return alias
    raise SptBenchError(f"{name} has no split {split!r} (it holds {splits})")


def dataset_splits(source: str | Path, *, local: bool) -> dict[str, Any]:
    """Load a saved dataset folder or a hub id as {split name: Dataset}."""
    import datasets  # slow import: only when a datasets source is used

    name = str(source)
    if local:
        try:
            loaded = datasets.load_from_disk(name)
        except Exception as e:  # noqa: BLE001 - any loader failure is a bad input folder
            raise InputError(
                name, None, f"cannot load saved dataset ({type(e).__name__}: {e})"
            ) from None
    else:
        _require_hub(name)
        try:
            loaded = datasets.load_dataset(name)
        except Exception as e:  # noqa: BLE001 - network, missing repo, bad config
            first = str(e).splitlines()[0] if str(e) else ""
            raise MissingAssetError(
                f"cannot load datasets hub id {name!r} ({type(e).__name__}: {first})"
            ) from None
    if isinstance(loaded, datasets.DatasetDict):
        return dict(loaded.items())
    return {Path(name).name or name: loaded}


def _require_hub(name: str) -> None:
    """Fail fast (instead of minutes of retries) when the hub cannot be resolved."""
    if os.environ.get("HF_HUB_OFFLINE") or os.environ.get("HF_DATASETS_OFFLINE"):
        return  # the user asked for the local cache; let `datasets` look there
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        socket.getaddrinfo(host.split(":")[0], 443)
    except OSError:
        raise MissingAssetError(
            f"{name!r} is not a file, folder or 'sample', and the datasets hub ({host}) is "
            "unreachable (offline?); pass a local path"
        ) from None


def load_hf_examples(source: str | Path, *, split: str | None = None, local: bool) -> list[Example]:
    """Examples from one split of a saved dataset folder (`local`) or a hub id."""
    splits = dataset_splits(source, local=local)
    chosen = _choose_split(list(splits), split, str(source))
    ds = splits[chosen]
    examples = rows_to_examples(ds.to_dict(), name=chosen)
    if not examples:
        raise InputError(source, None, f"split {chosen!r} holds no examples")
    return examples
