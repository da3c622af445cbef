"""Splits by dialogue: the convai2-valid-split protocol, official splits, written split folders."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from spt_bench.data import (
    dialogue_ids_digest,
    hold_out_dev,
    load_examples,
    load_splits,
    parse_parlai,
    split_by_dialogue,
    write_splits,
)
from spt_bench.errors import ConfigError, SptBenchError

PREFIX = "valid_self_original_no_cands:"


def dialogue_numbers(examples) -> list[int]:
    return sorted({int(ex.dialog_id.removeprefix(PREFIX)) for ex in examples})


@pytest.fixture(scope="module")
def valid_split(convai2_valid: Path) -> dict:
    return split_by_dialogue(parse_parlai(convai2_valid), "convai2-valid-split", seed=0)


def test_protocol_gives_800_100_100_dialogues_disjoint(valid_split):
    ids = {name: {ex.dialog_id for ex in part} for name, part in valid_split.items()}
    assert {name: len(v) for name, v in ids.items()} == {"train": 800, "dev": 100, "test": 100}
    assert not ids["train"] & ids["dev"] and not ids["train"] & ids["test"]
    assert not ids["dev"] & ids["test"]
    assert {name: len(part) for name, part in valid_split.items()} == {
        "train": 6239,
        "dev": 779,
        "test": 783,
    }


def test_protocol_is_stable_exact_dialogues(valid_split):
    # Changing the algorithm (sorting, RNG, rounding, order of parts) must fail here.
    assert dialogue_numbers(valid_split["test"])[:8] == [1, 3, 6, 19, 39, 57, 59, 93]
    assert dialogue_numbers(valid_split["dev"])[:5] == [9, 14, 30, 55, 58]
    assert dialogue_numbers(valid_split["train"])[:5] == [0, 2, 4, 5, 7]
    assert dialogue_ids_digest(valid_split["train"]) == "48818dc20c327ae3"
    assert dialogue_ids_digest(valid_split["dev"]) == "a31f78f8d7647d4a"
    assert dialogue_ids_digest(valid_split["test"]) == "174c0e261dde2485"


def test_protocol_keeps_file_order_and_whole_dialogues(valid_split, convai2_valid):
    every = parse_parlai(convai2_valid)
    position = {ex.id: i for i, ex in enumerate(every)}
    for part in valid_split.values():
        order = [position[ex.id] for ex in part]
        assert order == sorted(order)
    assert sum(len(p) for p in valid_split.values()) == len(every)


def test_another_seed_gives_another_split_of_the_same_sizes(convai2_valid):
    other = split_by_dialogue(parse_parlai(convai2_valid), seed=1)
    assert len({ex.dialog_id for ex in other["test"]}) == 100
    assert dialogue_ids_digest(other["test"]) != "174c0e261dde2485"


def test_small_sources_get_at_least_one_dialogue_per_part():
    sample = load_examples("sample")
    parts = split_by_dialogue(sample)
    counts = {k: len({ex.dialog_id for ex in v}) for k, v in parts.items()}
    assert counts == {"train": 33, "dev": 4, "test": 4}
    with pytest.raises(SptBenchError, match="at least 3 dialogues"):
        split_by_dialogue([ex for ex in sample if ex.dialog_id in {"sample_dialogues:0"}])
    with pytest.raises(ConfigError, match="unknown split protocol"):
        split_by_dialogue(sample, protocol="by-example")


def test_load_splits_default_is_the_sample_split_by_protocol():
    splits = load_splits()
    assert splits.description["mode"] == "protocol"
    assert splits.description["protocol"] == "convai2-valid-split"
    assert splits.description["sources"]["all"].endswith("sample_dialogues.txt")
    counts = splits.description["counts"]
    assert [counts[k]["dialogues"] for k in ("train", "dev", "test")] == [33, 4, 4]
    assert len(splits.train) + len(splits.dev) + len(splits.test) == 219


def test_load_splits_on_the_real_file_matches_the_protocol(convai2_valid, valid_split):
    splits = load_splits(convai2_valid)
    assert [ex.id for ex in splits.test] == [ex.id for ex in valid_split["test"]]
    assert splits.description["counts"]["test"]["dialogue_ids_sha256"] == "174c0e261dde2485"


def _dialogue_file(n_dialogues: int, tag: str) -> str:
    lines = []
    for d in range(n_dialogues):
        lines += [f"1 your persona: i am {tag} person {d}.", f"2 hi {d} .\thello from {tag} {d} ."]
        lines += [f"3 how are you ?\tfine , {tag} {d} ."]
    return "\n".join(lines) + "\n"


def test_folder_with_train_and_valid_uses_official_splits(tmp_path):
    (tmp_path / "train_self_original_no_cands.txt").write_text(_dialogue_file(30, "train"))
    (tmp_path / "valid_self_original_no_cands.txt").write_text(_dialogue_file(7, "valid"))
    (tmp_path / "valid_other_original.txt").write_text(_dialogue_file(2, "other"))
    splits = load_splits(tmp_path)
    assert splits.description["mode"] == "official"
    assert {ex.dialog_id.split(":")[0] for ex in splits.test} == {"valid_self_original_no_cands"}
    assert len({ex.dialog_id for ex in splits.test}) == 7
    assert len({ex.dialog_id for ex in splits.dev}) == 3  # 10% of 30 train dialogues
    assert len({ex.dialog_id for ex in splits.train}) == 27
    train, dev = hold_out_dev(load_examples(tmp_path, split="train"), 0.1, seed=0)
    assert [ex.id for ex in splits.dev] == [ex.id for ex in dev]


def test_folder_with_one_valid_file_is_split_by_protocol(tmp_path):
    (tmp_path / "valid_self_original_no_cands.txt").write_text(_dialogue_file(20, "v"))
    splits = load_splits(tmp_path)
    assert splits.description["mode"] == "protocol"
    assert [splits.description["counts"][k]["dialogues"] for k in ("train", "dev", "test")] == [
        16,
        2,
        2,
    ]


def test_explicit_train_and_test_data(tmp_path):
    train = tmp_path / "mine_train.txt"
    test = tmp_path / "mine_test.txt"
    train.write_text(_dialogue_file(10, "a"))
    test.write_text(_dialogue_file(4, "b"))
    splits = load_splits(train_data=train, test_data=test)
    assert splits.description["mode"] == "explicit"
    assert len(splits.test) == 8 and len({ex.dialog_id for ex in splits.dev}) == 1
    with pytest.raises(SptBenchError, match="share"):
        load_splits(train_data=train, test_data=train)
    with pytest.raises(ConfigError):
        load_splits(train_data=train)


@pytest.mark.parametrize("fmt", ["jsonl", "parlai"])
def test_written_split_folder_reloads_as_predefined_splits(tmp_path, fmt):
    splits = load_splits("sample")
    out = tmp_path / "split"
    files = write_splits(splits, out, fmt=fmt)
    suffix = ".jsonl" if fmt == "jsonl" else ".txt"
    assert [p.name for p in files] == [
        f"train{suffix}",
        f"dev{suffix}",
        f"test{suffix}",
        "split.json",
    ]
    manifest = json.loads((out / "split.json").read_text())
    assert manifest["protocol"] == "convai2-valid-split" and manifest["format"] == fmt
    again = load_splits(out)
    assert again.description["mode"] == "predefined"
    for (name, part), (_, reloaded) in zip(splits.items(), again.items(), strict=True):
        assert len(reloaded) == len(part), name
        assert [ex.response for ex in reloaded] == [ex.response for ex in part]
        if fmt == "jsonl":  # JSONL keeps the original ids; ParlAI text renumbers dialogues
            assert [ex.id for ex in reloaded] == [ex.id for ex in part]


def test_same_dialogues_under_other_ids_are_refused_with_the_overlap_count(tmp_path):
    from spt_bench.data import write_examples_jsonl

    test = tmp_path / "mine_test.txt"
    test.write_text(_dialogue_file(30, "a"))
    renamed = [
        dataclasses.replace(ex, dialog_id=f"other:{ex.dialog_id}") for ex in load_examples(test)
    ]
    train = tmp_path / "train_copy.jsonl"
    write_examples_jsonl(renamed, train)
    with pytest.raises(SptBenchError, match=r"train/test 27 of 30 test.*dev/test 3 of 30 test"):
        load_splits(train_data=train, test_data=test)
    other = tmp_path / "mine_train.txt"
    other.write_text(_dialogue_file(30, "b"))  # same shape, other words: accepted
    assert len(load_splits(train_data=other, test_data=test).test) == 60


def test_a_split_rewritten_in_another_format_replaces_the_old_files(tmp_path):
    splits = load_splits("sample")
    write_splits(splits, tmp_path, fmt="jsonl")
    write_splits(splits, tmp_path, fmt="parlai")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dev.txt", "split.json", "test.txt", "train.txt",
    ]  # fmt: skip
    assert load_splits(tmp_path).description["sources"]["test"].endswith("test.txt")


def test_a_split_folder_holding_two_formats_follows_split_json_or_says_which(tmp_path):
    from spt_bench.data.resolve import load_source, resolve_source

    splits = load_splits("sample")
    write_splits(splits, tmp_path / "x", fmt="parlai")
    write_splits(splits, tmp_path, fmt="jsonl")
    for name in ("train", "dev", "test"):  # a stale copy in the other format
        (tmp_path / "x" / f"{name}.txt").rename(tmp_path / f"{name}.txt")
    got = load_splits(tmp_path)  # split.json lists the .jsonl files: those are current
    assert got.description["sources"]["train"].endswith("train.jsonl")
    assert len(load_source(resolve_source(tmp_path), split="train")) == len(splits.train)
    (tmp_path / "split.json").unlink()
    with pytest.raises(SptBenchError, match=r"train split is here in several formats"):
        load_splits(tmp_path)
    with pytest.raises(SptBenchError, match=r"pass the file, e.g. .*train.jsonl"):
        load_source(resolve_source(tmp_path), split="train")


def test_whole_dialogue_sampling_covers_every_turn_with_exactly_n_examples(convai2_valid):
    from spt_bench.data.sampling import sample_dialogues, sample_examples

    test = load_splits(convai2_valid).test
    picked = sample_dialogues(test, 24, seed=0)
    assert len(picked) == 24 and picked == sample_dialogues(test, 24, seed=0)
    by_dialogue: dict[str, list[int]] = {}
    for ex in picked:
        by_dialogue.setdefault(ex.dialog_id, []).append(ex.turn)
    # every dialogue starts at turn 0 and has no gaps; only the last one taken is cut short
    assert all(turns == list(range(len(turns))) for turns in by_dialogue.values())
    assert sum(1 for ex in picked if ex.turn == 0) == len(by_dialogue) >= 2
    assert [test.index(ex) for ex in picked] == sorted(test.index(ex) for ex in picked)
    spread = sample_examples(test, 24, seed=0)  # the old draw: scattered over dialogues
    assert len({ex.dialog_id for ex in spread}) > len(by_dialogue)
    assert sample_dialogues(test, None, seed=0) == list(test)


def test_eval_limit_takes_whole_test_dialogues_and_the_run_records_its_samplers():
    from spt_bench.config import config_from_dict
    from spt_bench.data.run_data import load_run_data

    config = config_from_dict({"data": {"train_limit": 20, "eval_limit": 12}})
    train, dev, test, desc = load_run_data(config)
    assert len(train) == 20 and len(test) == 12
    assert min(ex.turn for ex in test) == 0
    firsts = sum(1 for ex in test if ex.turn == 0)
    assert firsts == len({ex.dialog_id for ex in test})  # every test dialogue from turn 0
    assert desc["limits"]["samplers"] == {
        "train": "examples",
        "dev": "examples",
        "test": "dialogues",
    }
