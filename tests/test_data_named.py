"""Named datasets (`--data NAME`, `spt-bench data list`): resolved from the folder their
environment variable names, one line saying where to put files that are absent, ConvAI2's
with-candidates variants giving the file's own Hits@1 candidates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from spt_bench.candidates import dataset_candidates, resolve_candidate_mode
from spt_bench.data import load_examples
from spt_bench.data.named import NAMED, PERSONA_VIEWS
from spt_bench.data.splits import load_splits
from spt_bench.errors import MissingAssetError
from tests.test_data_persona_datasets import msc_session, spc_row, write_spc

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_machine_data(monkeypatch, tmp_path: Path) -> None:
    """Named datasets are looked up only where each test puts them."""
    for ds in NAMED.values():
        monkeypatch.delenv(ds.env, raising=False)
    monkeypatch.delenv("SPT_BENCH_DATA_DIR", raising=False)
    monkeypatch.setenv("SPT_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))


def _convai2_dialogue(i: int, cands: bool) -> str:
    lines = [f"1 your persona: i am person {i}.", f"2 your persona: i like {i} cats."]
    for t in range(3):
        partner, reply = f"hello {i} {t}", f"reply {i} {t}"
        line = f"{3 + t} {partner}\t{reply}"
        if cands:
            line += "\t\t" + "|".join([f"other {i} {t} {k}" for k in range(3)] + [reply])
        lines.append(line)
    return "\n".join(lines) + "\n"


def test_every_convai2_variant_spc_and_msc_are_listed() -> None:
    names = set(NAMED)
    for view in PERSONA_VIEWS:
        for kind in ("original", "revised"):
            assert {f"convai2-{view}-{kind}", f"convai2-{view}-{kind}-cands"} <= names
    assert {"synthetic-persona-chat", "msc", "msc-session2"} <= names
    res = runner.invoke(app, ["data", "list", "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    spc = rows["synthetic-persona-chat"]
    assert spc["licence"] == "CC-BY-4.0" and not spc["present"]
    assert spc["files"] == [f"Synthetic-Persona-Chat_{s}.csv" for s in ("train", "valid", "test")]
    table = runner.invoke(app, ["data", "list"])
    assert table.exit_code == 0 and "synthetic-persona-chat" in table.output


def test_absent_named_dataset_says_in_one_line_where_to_put_which_files() -> None:
    with pytest.raises(MissingAssetError) as err:
        load_splits("synthetic-persona-chat")
    msg = str(err.value)
    assert "\n" not in msg and "$SPT_BENCH_SPC_DIR" in msg and "CC-BY-4.0" in msg
    assert "Synthetic-Persona-Chat_train.csv" in msg
    res = runner.invoke(app, ["data", "stats", "msc"])
    assert res.exit_code != 0 and "$SPT_BENCH_MSC_DIR" in res.output
    res = runner.invoke(app, ["run", "--data", "msc", "--model", "tiny-random", "--dry-run"])
    assert res.exit_code != 0 and "$SPT_BENCH_MSC_DIR" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1


def test_named_spc_uses_its_predefined_train_valid_test_files(monkeypatch, tmp_path) -> None:
    folder = tmp_path / "spc"
    folder.mkdir()
    for k, split in enumerate(("train", "valid", "test")):
        rows = [spc_row(p1=(f"I am {split} {i}.",), conv=[f"User 1: hi {k} {i}",
                f"User 2: hello {k} {i}"]) for i in range(2)]  # fmt: skip
        write_spc(folder / f"Synthetic-Persona-Chat_{split}.csv", rows)
    monkeypatch.setenv("SPT_BENCH_SPC_DIR", str(folder))
    splits = load_splits("synthetic-persona-chat")
    assert splits.description["mode"] == "predefined"
    assert splits.description["dataset"] == "synthetic-persona-chat"
    assert {len(part) for _, part in splits.items()} == {4}  # 2 rows x 2 views
    assert splits.test[0].dialog_id == "Synthetic-Persona-Chat_test:0:user1"
    assert load_examples("synthetic-persona-chat", split="valid") == splits.dev


def test_named_msc_reads_each_session_folder(monkeypatch, tmp_path: Path) -> None:
    for s in (2, 3, 4):
        d = tmp_path / "msc" / f"session_{s}"
        d.mkdir(parents=True)
        for split in ("train", "valid", "test"):
            dialog = [{"id": f"Speaker {1 + k % 2}", "text": f"{split} {s} turn {k}"}
                      for k in range(3)]  # fmt: skip
            session = json.dumps(msc_session(dialog=dialog))
            (d / f"{split}.txt").write_text(session + "\n", encoding="utf-8")
    monkeypatch.setenv("SPT_BENCH_DATA_DIR", str(tmp_path))  # $SPT_BENCH_DATA_DIR/msc
    splits = load_splits("msc", msc_history="last")
    assert len(splits.train) == 3 * 3  # 3 sessions x (2 + 1) examples
    assert {ex.dialog_id.split(":")[0] for ex in splits.test} == {
        "session_2_test", "session_3_test", "session_4_test"
    }  # fmt: skip
    assert splits.train[1].history[0] == "last a"  # msc_history reaches the reader


def test_convai2_with_candidates_variant_gives_the_files_hits_candidates(
    monkeypatch, tmp_path: Path
) -> None:
    for split, ids in (("train", range(10)), ("valid", range(10, 13))):
        text = "".join(_convai2_dialogue(i, True) for i in ids)
        (tmp_path / f"{split}_self_original.txt").write_text(text, encoding="utf-8")
    monkeypatch.setenv("SPT_BENCH_CONVAI2_DIR", str(tmp_path))
    splits = load_splits("convai2-self-original-cands")
    assert splits.description["mode"] == "official" and len(splits.test) == 9
    assert resolve_candidate_mode(splits.test) == "dataset"
    cset = dataset_candidates(splits.test[0])
    assert len(cset.texts) == 4 and cset.texts[cset.gold] == "reply 10 0"
    with pytest.raises(MissingAssetError, match="valid_self_original_no_cands.txt"):
        load_splits("convai2-self-original")  # the no-candidates files are not there


def test_convai2_named_with_only_valid_splits_it_by_the_protocol(convai2_valid, monkeypatch):
    monkeypatch.setenv("SPT_BENCH_CONVAI2_DIR", str(convai2_valid.parent))
    splits = load_splits("convai2")
    assert splits.description["mode"] == "protocol"
    assert [len(p) for _, p in splits.items()] == [6239, 779, 783]


def test_spc_is_found_in_the_hugging_face_hub_cache(monkeypatch, tmp_path: Path) -> None:
    """Where `datasets.load_dataset("google/Synthetic-Persona-Chat")` leaves the CSV files."""
    snap = tmp_path / "hub/datasets--google--Synthetic-Persona-Chat/snapshots/abc123/data"
    snap.mkdir(parents=True)
    for k, split in enumerate(("train", "valid", "test")):
        rows = [spc_row(conv=[f"User 1: hi {k} {i}", f"User 2: yo {k} {i}"]) for i in range(2)]
        write_spc(snap / f"Synthetic-Persona-Chat_{split}.csv", rows)
    splits = load_splits("synthetic-persona-chat")
    assert splits.description["sources"]["test"] == str(
        (snap / "Synthetic-Persona-Chat_test.csv").resolve()
    )
