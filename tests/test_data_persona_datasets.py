"""Synthetic-Persona-Chat and MSC readers: fixtures in each dataset's documented format (written
here, never the real data), the exact examples, canonical JSONL round trips, and one-line
errors naming file and line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from spt_bench.data import load_examples, read_examples_jsonl, write_examples_jsonl
from spt_bench.data.example import Example
from spt_bench.data.hf import rows_to_examples
from spt_bench.data.msc import parse_msc
from spt_bench.data.synthetic_persona_chat import parse_spc_csv
from spt_bench.errors import InputError, SptBenchError

SPC_HEADER = ["user 1 personas", "user 2 personas", "Best Generated Conversation"]
P1 = ("I like cats.", "I am a nurse.")
P2 = ("I play chess.", "I live in Oslo.")
CONV = [
    "User 1: Hi there.",
    "User 2: Hello! Do you play chess?",
    "User 1: No, I care for cats.",
    "User 2: Nice. I live in Oslo.",
]


def write_spc(path: Path, rows: list[list[str]], header: list[str] = SPC_HEADER) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def spc_row(p1=P1, p2=P2, conv=CONV) -> list[str]:
    return ["\n".join(p1), "\n".join(p2), "\n".join(conv)]


def expected_spc(prefix: str) -> list[Example]:
    u = [c.split(": ", 1)[1] for c in CONV]
    return [
        Example(f"{prefix}:0:user1", 0, P1, (), u[0], P2),
        Example(f"{prefix}:0:user1", 1, P1, (u[0], u[1]), u[2], P2),
        Example(f"{prefix}:0:user2", 0, P2, (u[0],), u[1], P1),
        Example(f"{prefix}:0:user2", 1, P2, (u[0], u[1], u[2]), u[3], P1),
    ]


def test_spc_csv_gives_both_responder_views_with_history_turns_and_ids(tmp_path: Path) -> None:
    path = write_spc(tmp_path / "spc_valid.csv", [spc_row()])
    assert parse_spc_csv(path) == expected_spc("spc_valid")
    assert load_examples(path) == expected_spc("spc_valid")  # `--data FILE.csv`


def test_spc_consecutive_lines_of_one_user_are_one_turn(tmp_path: Path) -> None:
    conv = ["User 1: Hi.", "User 1: Anyone there?", "User 2: Yes, hello."]
    path = write_spc(tmp_path / "s.csv", [spc_row(conv=conv)])
    user2 = [ex for ex in parse_spc_csv(path) if ex.dialog_id.endswith("user2")]
    assert user2 == [Example("s:0:user2", 0, P2, ("Hi. Anyone there?",), "Yes, hello.", P1)]


def test_spc_datasets_form_maps_like_the_csv(tmp_path: Path) -> None:
    row = spc_row()
    columns = {name: [value] for name, value in zip(SPC_HEADER, row, strict=True)}
    columns["Unnamed: 0"] = [0]  # extra columns are ignored
    assert rows_to_examples(columns, name="validation") == expected_spc("validation")


@pytest.mark.parametrize(
    ("rows", "header", "line", "problem"),
    [
        ([spc_row()], SPC_HEADER[::2], 1, "missing column 'user 2 personas'"),
        # row 1 spans lines 2-7 (multi-line cells): row 2 starts on line 8
        ([spc_row(), spc_row(conv=[])], SPC_HEADER, 8, "empty conversation"),
        ([spc_row(conv=["User 1: hi", "User 3: hey"])], SPC_HEADER, 2,
         "conversation line 2 starts with 'User 3': expected 'User 1' or 'User 2'"),
        ([spc_row(p1=())], SPC_HEADER, 2, "no persona for User 1"),
    ],
)  # fmt: skip
def test_spc_bad_rows_fail_in_one_line_naming_file_and_line(
    tmp_path: Path, rows, header, line: int, problem: str
) -> None:
    if header is not SPC_HEADER:
        rows = [r[::2] for r in rows]
    path = write_spc(tmp_path / "bad.csv", rows, header)
    with pytest.raises(InputError) as err:
        parse_spc_csv(path)
    assert str(err.value).startswith(f"{path}:{line}: {problem}"), str(err.value)
    assert "\n" not in str(err.value)


def msc_session(dialog=None, personas=None, previous=None) -> dict:
    return {
        "personas": personas if personas is not None else [list(P1), list(P2)],
        "dialog": dialog if dialog is not None else [
            {"id": "Speaker 1", "text": "How were the cats?"},
            {"id": "Speaker 2", "text": "Fine. I won at chess."},
            {"id": "Speaker 1", "text": "Well done!"},
        ],
        "previous_dialogs": previous if previous is not None else [
            {"dialog": [{"text": "old a"}, {"text": "old b"}], "time_num": 3, "time_unit": "days"},
            {"dialog": [{"text": "last a"}, {"text": "last b"}, {"text": "last c"}],
             "time_num": 2, "time_unit": "hours"},
        ],
        "metadata": {"initial_data_id": "x1"},
        "init_personas": [["i like cats."], ["i play chess."]],
    }  # fmt: skip


def write_msc(folder: Path, sessions: list) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "valid.txt"
    path.write_text("".join(json.dumps(s) + "\n" for s in sessions), encoding="utf-8")
    return path


def test_msc_gives_both_speakers_views_with_the_accumulated_personas(tmp_path: Path) -> None:
    path = write_msc(tmp_path / "session_3", [msc_session()])
    meta = {"session": 3}
    a, b, c = "How were the cats?", "Fine. I won at chess.", "Well done!"
    assert parse_msc(path) == [
        Example("session_3_valid:0:speaker1", 0, P1, (), a, P2, meta=meta),
        Example("session_3_valid:0:speaker1", 1, P1, (a, b), c, P2, meta=meta),
        Example("session_3_valid:0:speaker2", 0, P2, (a,), b, P1, meta=meta),
    ]
    assert [ex.meta for ex in parse_msc(path)] == [meta] * 3
    assert load_examples(path) == parse_msc(path)  # `--data FILE` sniffs MSC lines


def test_msc_history_setting_adds_the_last_or_all_earlier_sessions(tmp_path: Path) -> None:
    path = write_msc(tmp_path, [msc_session()])
    a, b = "How were the cats?", "Fine. I won at chess."
    last = {ex.id: ex.history for ex in parse_msc(path, history="last")}
    # the previous session ended with Speaker 1 ("last c"), who opens this one: Speaker 1's
    # opening example stops at the partner's last utterance; Speaker 2's history merges them
    assert last["valid:0:speaker1:0"] == ("last a", "last b")
    assert last["valid:0:speaker2:0"] == ("last a", "last b", f"last c {a}")
    every = {ex.id: ex.history for ex in parse_msc(path, history="all")}
    assert every["valid:0:speaker1:1"] == ("old a", "old b", "last a", "last b", f"last c {a}", b)


@pytest.mark.parametrize(
    ("session", "problem"),
    [
        ({"personas": [["a."], ["b."]]}, "missing field 'dialog'"),
        (msc_session(dialog=[]), "empty conversation"),
        (msc_session(dialog=[{"id": "Speaker 3", "text": "hi"}]),
         "dialog turn 0 has id 'Speaker 3': expected 'Speaker 1' or 'Speaker 2'"),
        (msc_session(personas=[["a."], []]), "no persona for Speaker 2"),
    ],
)  # fmt: skip
def test_msc_bad_sessions_fail_in_one_line_naming_file_and_line(
    tmp_path: Path, session: dict, problem: str
) -> None:
    path = write_msc(tmp_path, [msc_session(), session])
    with pytest.raises(InputError) as err:
        parse_msc(path)
    assert str(err.value).startswith(f"{path}:2: {problem}") and "\n" not in str(err.value)


@pytest.mark.parametrize("reader", ["spc", "msc"])
def test_new_readers_round_trip_through_canonical_jsonl(tmp_path: Path, reader: str) -> None:
    if reader == "spc":
        examples = parse_spc_csv(write_spc(tmp_path / "s.csv", [spc_row(), spc_row()]))
    else:
        examples = parse_msc(write_msc(tmp_path, [msc_session()] * 2), history="all")
    write_examples_jsonl(examples, tmp_path / "out.jsonl")
    back = read_examples_jsonl(tmp_path / "out.jsonl")
    assert [e.to_dict() for e in back] == [e.to_dict() for e in examples]


def test_spc_datasets_form_errors_name_the_split_and_row() -> None:
    row = spc_row(p2=())
    columns = {name: [value] for name, value in zip(SPC_HEADER, row, strict=True)}
    with pytest.raises(SptBenchError, match=r"^train row 0: no persona for User 2"):
        rows_to_examples(columns, name="train")


def test_spc_saved_datasets_folder_uses_its_train_validation_test_splits(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    from spt_bench.data.splits import load_splits

    def split(tag: str) -> datasets.Dataset:
        rows = [spc_row(conv=[f"User 1: hi {tag} {i}", f"User 2: hello {tag} {i}"])
                for i in range(2)]  # fmt: skip
        return datasets.Dataset.from_dict({n: [r[k] for r in rows]
                                           for k, n in enumerate(SPC_HEADER)})  # fmt: skip

    folder = tmp_path / "spc"
    names = ("train", "validation", "test")
    datasets.DatasetDict({n: split(n) for n in names}).save_to_disk(str(folder))
    splits = load_splits(folder)
    assert splits.description["mode"] == "predefined"
    assert [ex.id for ex in splits.test[:2]] == ["test:0:user1:0", "test:0:user2:0"]
    assert {ex.dialog_id.split(":")[0] for ex in splits.dev} == {"validation"}
