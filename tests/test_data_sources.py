"""JSONL, Hugging Face datasets and `--data` resolution all produce the canonical Example."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from spt_bench.data import (
    Example,
    load_examples,
    read_examples_jsonl,
    resolve_source,
    write_examples_jsonl,
)
from spt_bench.errors import InputError, MissingAssetError, SptBenchError

SELF = """\
1 your persona: i knit scarves for my cats.
2 hello !\thi , i just knitted a scarf .
3 for whom ?\tfor my cat .
"""


# --------------------------------------------------------------------------- JSONL


def test_jsonl_round_trip_keeps_every_field(tmp_path):
    examples = [
        Example("d7", 0, ("p1.",), ("hi",), "hello", ("q1.",), ("x", "hello"), {"source": "me"}),
        Example("d7", 1, ("p1.",), ("hi", "hello", "how ?"), "fine", ("q1.",)),
    ]
    path = tmp_path / "mine.jsonl"
    write_examples_jsonl(examples, path)
    first = json.loads(path.read_text().splitlines()[0])
    assert first["id"] == "d7:0" and first["meta"] == {"source": "me"}
    assert read_examples_jsonl(path) == examples
    assert load_examples(path)[1].history == ("hi", "hello", "how ?")


def test_jsonl_minimal_rows_and_integer_dialog_ids(tmp_path):
    path = tmp_path / "min.jsonl"
    row = {"dialog_id": 3, "turn": 0, "persona": ["i sing."], "history": ["hey"], "response": "yo"}
    path.write_text(json.dumps(row) + "\n\n")
    (ex,) = load_examples(path)
    assert ex.id == "3:0" and ex.candidates == () and ex.partner_persona == ()


def test_jsonl_duplicate_ids_are_rejected(tmp_path):
    path = tmp_path / "dup.jsonl"
    row = {"dialog_id": "a", "turn": 0, "persona": [], "history": [], "response": "x"}
    path.write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(
        InputError, match=r"dup.jsonl:2: duplicate example id 'a:0' \(first on line 1\)"
    ):
        load_examples(path)


# --------------------------------------------------------------------------- Hugging Face


def _personachat_rows() -> dict[str, list]:
    # The bavard/personachat_truecased schema: true response = last candidate.
    p = ["i like green tea.", "i have a sailboat."]
    return {
        "personality": [p, p, ["i am a baker."]],
        "candidates": [
            ["no .", "hi ! i love tea ."],
            ["maybe .", "on my sailboat ."],
            ["ok .", "bread !"],
        ],
        "history": [
            ["__ SILENCE __", "hello !"],
            ["hello !", "hi ! i love tea .", "where do you drink it ?"],
            ["what do you make ?"],
        ],
        "conv_id": [5, 5, 6],
        "utterance_idx": [0, 1, 0],
    }


def test_saved_personachat_schema_dataset_maps_to_examples(tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "pc"
    datasets.Dataset.from_dict(_personachat_rows()).save_to_disk(str(folder))
    assert resolve_source(str(folder)).kind == "hf-disk"
    exs = load_examples(folder)
    assert [ex.id for ex in exs] == ["pc:5:0", "pc:5:1", "pc:6:0"]
    assert exs[0].history == ("hello !",)  # the silence placeholder is dropped
    assert exs[0].response == "hi ! i love tea ."
    assert exs[0].candidates == ("no .", "hi ! i love tea .")
    assert exs[1].persona == ("i like green tea.", "i have a sailboat.")
    assert exs[1].history[-1] == "where do you drink it ?"


def test_saved_dataset_dict_picks_split_and_gives_official_splits(tmp_path):
    datasets = pytest.importorskip("datasets")
    from spt_bench.data import load_splits

    canonical = {
        "dialog_id": [f"t{i}" for i in range(12)],
        "turn": [0] * 12,
        "persona": [["i run."]] * 12,
        "history": [["hi"]] * 12,
        "response": [f"answer {i}" for i in range(12)],
    }
    valid = {k: v[:3] for k, v in _personachat_rows().items()}
    folder = tmp_path / "dd"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(canonical),
            "validation": datasets.Dataset.from_dict(valid),
        }
    ).save_to_disk(str(folder))
    assert [ex.id for ex in load_examples(folder, split="valid")] == [
        "validation:5:0",
        "validation:5:1",
        "validation:6:0",
    ]
    assert load_examples(folder, split="train")[4].response == "answer 4"
    with pytest.raises(SptBenchError, match="choose one with --split"):
        load_examples(folder)
    splits = load_splits(folder)
    assert splits.description["mode"] == "official"
    assert len(splits.test) == 3 and len(splits.dev) == 1 and len(splits.train) == 11


def test_dataset_with_one_row_per_dialogue_and_no_ids_is_expanded(tmp_path):
    from spt_bench.data.hf import rows_to_examples

    rows = {
        "personality": [["i fish."]],
        "utterances": [
            [
                {"history": ["hi"], "candidates": ["x", "hello"]},
                {"history": ["hi", "hello", "fish ?"], "candidates": ["y", "yes"]},
            ]
        ],
    }
    exs = rows_to_examples(rows, name="ds")
    assert [(ex.id, ex.response) for ex in exs] == [("ds:0:0", "hello"), ("ds:0:1", "yes")]
    no_ids = {
        "persona": [["a."], ["a."], ["b."]],
        "history": [["x"], ["x", "y", "z"], ["q"]],
        "response": ["y", "w", "r"],
    }
    assert [ex.id for ex in rows_to_examples(no_ids, name="n")] == ["n:0:0", "n:0:1", "n:1:0"]
    with pytest.raises(SptBenchError, match="no persona column"):
        rows_to_examples({"text": ["hi"]}, name="bad")


def test_hub_id_fails_fast_with_one_line_when_offline(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)

    def no_dns(*args, **kwargs):
        raise socket.gaierror("no network")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    src = resolve_source("someone/persona_data")
    assert src.kind == "hf-hub"
    with pytest.raises(MissingAssetError, match="unreachable"):
        load_examples("someone/persona_data")


# --------------------------------------------------------------------------- resolution


def test_bare_file_name_is_found_under_spt_bench_data_dir(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "mine.txt").write_text(SELF)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("SPT_BENCH_DATA_DIR", str(data_dir))
    assert resolve_source("mine.txt").path == data_dir / "mine.txt"
    assert len(load_examples("mine.txt")) == 2
    (elsewhere / "mine.txt").write_text(SELF.replace("for my cat .", "for my dog ."))
    assert load_examples("mine.txt")[1].response == "for my dog ."  # the working directory wins
    with pytest.raises(InputError, match="nor under SPT_BENCH_DATA_DIR"):
        load_examples("other.txt")


def test_folder_picks_file_by_split_and_variant(tmp_path):
    (tmp_path / "valid_self_original_no_cands.txt").write_text(SELF)
    (tmp_path / "valid_self_revised.txt").write_text(SELF.replace("cats", "dogs"))
    (tmp_path / "train_self_original_no_cands.txt").write_text(SELF + SELF)
    (tmp_path / "notes.md").write_text("not data")
    assert load_examples(tmp_path, split="valid")[0].persona == ("i knit scarves for my cats.",)
    revised = load_examples(tmp_path, split="valid", variant="self_revised")
    assert revised[0].persona == ("i knit scarves for my dogs.",)
    assert revised[0].dialog_id == "valid_self_revised:0"
    assert len(load_examples(tmp_path, split="train")) == 4
    with pytest.raises(SptBenchError, match="several data files"):
        load_examples(tmp_path)
    with pytest.raises(InputError, match="no valid_both_original.txt"):
        load_examples(tmp_path, split="valid", variant="both_original")


def test_real_folder_resolves_to_the_shared_file(convai2_valid: Path):
    exs = load_examples(convai2_valid.parent)
    assert len(exs) == 7801
