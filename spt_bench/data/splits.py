"""Train/dev/test splits, always by dialogue (never by example), deterministic across machines.

Protocol `convai2-valid-split` (the offline protocol; see docs/data.md): sort the unique dialogue
ids, shuffle them with `random.Random(seed)` (pure Python: same order on every machine and Python
3 version), then the first 80% are train, the next 10% dev and the last 10% test (10% rounds half
up, at least one dialogue each). On valid_self_original_no_cands.txt: 800/100/100 dialogues.

`load_splits` picks the splits a source provides:
- `data=None` -> the bundled sample, split by the protocol;
- a folder with `train.*`, `dev.*`, `test.*` (what `data split` writes) -> used as they are;
- a folder with ConvAI2 `train_*` and `valid_*` files, or a dataset with train and validation
  splits -> official: test = valid, train = train less 10% of its dialogues (seeded), which
  become dev; a dataset with a test split too -> its train / validation (dev) / test;
- a named dataset (spt_bench/data/named.py) -> its default split;
- any other single source -> split by the protocol.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spt_bench.data.example import Example
from spt_bench.data.hf import _choose_split, dataset_splits, rows_to_examples
from spt_bench.data.jsonl import format_examples_jsonl
from spt_bench.data.named import locate
from spt_bench.data.parlai import format_parlai
from spt_bench.data.resolve import (
    DEFAULT_VARIANT,
    SAMPLE,
    Source,
    folder_files,
    load_source,
    pick_folder_file,
    predefined_file,
    read_file,
    resolve_source,
)
from spt_bench.errors import ConfigError, SptBenchError
from spt_bench.io import atomic_write_json, atomic_write_text

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class SplitProtocol:
    name: str
    dev_fraction: float
    test_fraction: float
    description: str


PROTOCOLS: dict[str, SplitProtocol] = {}


def register_protocol(protocol: SplitProtocol) -> SplitProtocol:
    if protocol.name in PROTOCOLS:
        raise ValueError(f"split protocol {protocol.name!r} is already registered")
    PROTOCOLS[protocol.name] = protocol
    return protocol


register_protocol(
    SplitProtocol(
        "convai2-valid-split",
        dev_fraction=0.1,
        test_fraction=0.1,
        description="one file split by dialogue 80/10/10 (sorted ids shuffled by random.Random(seed))",
    )
)


def get_protocol(name: str) -> SplitProtocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ConfigError(
            f"unknown split protocol {name!r} (known: {', '.join(sorted(PROTOCOLS))})"
        ) from None


@dataclass
class DataSplits:
    train: list[Example]
    dev: list[Example]
    test: list[Example]
    description: dict = field(default_factory=dict)

    def items(self) -> list[tuple[str, list[Example]]]:
        return [("train", self.train), ("dev", self.dev), ("test", self.test)]


def _part(n: int, fraction: float) -> int:
    return max(1, int(n * fraction + 0.5))


def shuffled_dialogue_ids(examples: Sequence[Example], seed: int) -> list[str]:
    """Unique dialogue ids, sorted, then shuffled with a seeded pure-Python RNG."""
    ids = sorted({ex.dialog_id for ex in examples})
    random.Random(seed).shuffle(ids)
    return ids


def _select(examples: Sequence[Example], ids: set[str]) -> list[Example]:
    return [ex for ex in examples if ex.dialog_id in ids]


def split_by_dialogue(
    examples: Sequence[Example], protocol: str = "convai2-valid-split", seed: int = 0
) -> dict[str, list[Example]]:
    """Split by dialogue into {"train", "dev", "test"}; examples keep their input order."""
    proto = get_protocol(protocol)
    ids = shuffled_dialogue_ids(examples, seed)
    n = len(ids)
    if n < 3:
        raise SptBenchError(f"split protocol {protocol!r} needs at least 3 dialogues, got {n}")
    n_dev, n_test = _part(n, proto.dev_fraction), _part(n, proto.test_fraction)
    n_train = n - n_dev - n_test
    if n_train < 1:
        raise SptBenchError(f"split protocol {protocol!r}: {n} dialogues leave none for train")
    parts = {
        "train": set(ids[:n_train]),
        "dev": set(ids[n_train : n_train + n_dev]),
        "test": set(ids[n_train + n_dev :]),
    }
    return {name: _select(examples, part) for name, part in parts.items()}


def hold_out_dev(
    examples: Sequence[Example], fraction: float = 0.1, seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """(train, dev): the last `fraction` of the shuffled dialogue ids become dev."""
    ids = shuffled_dialogue_ids(examples, seed)
    if len(ids) < 2:
        raise SptBenchError(f"cannot hold out a dev split from {len(ids)} dialogue(s)")
    n_dev = min(_part(len(ids), fraction), len(ids) - 1)
    dev = set(ids[len(ids) - n_dev :])
    return [ex for ex in examples if ex.dialog_id not in dev], _select(examples, dev)


def dialogue_ids_digest(examples: Sequence[Example]) -> str:
    """sha256 (first 16 hex digits) of the sorted unique dialogue ids: identifies a split."""
    ids = sorted({ex.dialog_id for ex in examples})
    return hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()[:16]


def _counts(examples: Sequence[Example]) -> dict:
    return {
        "dialogues": len({ex.dialog_id for ex in examples}),
        "examples": len(examples),
        "dialogue_ids_sha256": dialogue_ids_digest(examples),
    }


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def dialogue_fingerprints(examples: Sequence[Example]) -> dict[str, str]:
    """{content digest: first dialogue id}: a dialogue's digest covers its persona and every
    utterance (each turn's partner utterance and response, case and spacing folded), so the
    same dialogue read from two sources under different ids gets the same digest."""
    dialogues: dict[str, list[Example]] = {}
    for ex in examples:
        dialogues.setdefault(ex.dialog_id, []).append(ex)
    out: dict[str, str] = {}
    for dialog_id, exs in dialogues.items():
        parts = [_norm(p) for p in exs[0].persona]
        for ex in sorted(exs, key=lambda e: e.turn):
            parts += ["\x1e", _norm(ex.history[-1]) if ex.history else "", _norm(ex.response)]
        digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
        out.setdefault(digest, dialog_id)
    return out


def check_disjoint(parts: dict[str, Sequence[Example]]) -> None:
    """Refuse splits that share a dialogue, by id or by content (persona + utterances); the
    content error counts the shared dialogues of every pair."""
    names = list(parts)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    for a, b in pairs:
        shared = {ex.dialog_id for ex in parts[a]} & {ex.dialog_id for ex in parts[b]}
        if shared:
            raise SptBenchError(
                f"{a} and {b} share {len(shared)} dialogue id(s), e.g. {sorted(shared)[0]!r}"
            )
    prints = {name: dialogue_fingerprints(exs) for name, exs in parts.items()}
    found, example = [], ""
    for a, b in pairs:
        same = [d for d in prints[a] if d in prints[b]]
        if same:
            found.append(f"{a}/{b} {len(same)} of {len(prints[b])} {b}")
            example = example or f"{a} {prints[a][same[0]]!r} = {b} {prints[b][same[0]]!r}"
    if found:
        raise SptBenchError(
            f"the same dialogues (persona and utterances) are in two splits under different "
            f"ids: {'; '.join(found)} dialogue(s), e.g. {example}; results would be measured "
            "on training data"
        )


def _finish(train: list, dev: list, test: list, description: dict) -> DataSplits:
    check_disjoint({"train": train, "dev": dev, "test": test})
    description["counts"] = {"train": _counts(train), "dev": _counts(dev), "test": _counts(test)}
    return DataSplits(train, dev, test, description)


def splits_by_protocol(
    examples: list[Example], source: str, protocol: str = "convai2-valid-split", seed: int = 0
) -> DataSplits:
    """`split_by_dialogue` as DataSplits, with a description naming the source and protocol."""
    parts = split_by_dialogue(examples, protocol, seed)
    desc = {"mode": "protocol", "protocol": protocol, "seed": seed, "sources": {"all": source}}
    return _finish(parts["train"], parts["dev"], parts["test"], desc)


def _official(train_all: list, test: list, sources: dict, seed: int) -> DataSplits:
    train, dev = hold_out_dev(train_all, 0.1, seed)
    desc = {
        "mode": "official",
        "protocol": "official train/valid; dev = 10% of train dialogues",
        "seed": seed,
        "sources": sources,
    }
    return _finish(train, dev, test, desc)


def load_splits(
    data: str | Path | None = None,
    *,
    train_data: str | Path | None = None,
    test_data: str | Path | None = None,
    protocol: str = "convai2-valid-split",
    seed: int = 0,
    variant: str | None = None,
    msc_history: str = "none",
) -> DataSplits:
    """Train/dev/test Examples for a run; `description` records how they were made."""
    get_protocol(protocol)  # validate early, whatever the mode
    if train_data is not None or test_data is not None:
        if data is not None or train_data is None or test_data is None:
            raise ConfigError("give train_data and test_data together, and without data")
        train_src, test_src = resolve_source(train_data), resolve_source(test_data)
        how = {"variant": variant, "msc_history": msc_history}
        train_all = load_source(train_src, split="train", **how)
        test = load_source(test_src, split="valid", **how)
        sources = {"train": str(train_src), "test": str(test_src)}
        splits = _official(train_all, test, sources, seed)
        splits.description["mode"] = "explicit"
        return splits

    src = resolve_source(SAMPLE if data is None else data)
    if src.kind == "named":
        return _named_splits(src.name, protocol, seed, msc_history)
    if src.kind == "folder":
        assert src.path is not None
        groups = folder_files(src.path)
        predefined = {s: groups.get(s, []) for s in SPLITS}
        exact = {s: [p for p in files if p.stem == s] for s, files in predefined.items()}
        if all(exact.values()):
            exact = {s: [predefined_file(src.path, s, files)] for s, files in exact.items()}
            parts = {s: read_file(files[0]) for s, files in exact.items()}
            desc = {
                "mode": "predefined",
                "protocol": None,
                "seed": None,
                "sources": {s: str(files[0]) for s, files in exact.items()},
            }
            return _finish(parts["train"], parts["dev"], parts["test"], desc)
        if "train" in groups and "valid" in groups:
            train_file = pick_folder_file(src.path, "train", variant)
            valid_file = pick_folder_file(src.path, "valid", variant)
            sources = {"train": str(train_file), "test": str(valid_file)}
            return _official(read_file(train_file), read_file(valid_file), sources, seed)
        split = next(iter(groups)) if len(groups) == 1 else None
        file = pick_folder_file(src.path, split, variant)
        return splits_by_protocol(read_file(file), str(file), protocol, seed)
    if src.kind in ("hf-disk", "hf-hub"):
        return _hf_splits(src, protocol, seed)
    examples = load_source(src, msc_history=msc_history)
    return splits_by_protocol(examples, str(src), protocol, seed)


def _named_splits(name: str, protocol: str, seed: int, msc_history: str) -> DataSplits:
    """A named dataset's splits by its default protocol (`spt-bench data list`): ConvAI2 the
    official train/valid (or, with only valid here, `protocol` over valid), the others their
    predefined train/dev/test files."""
    located = locate(name)
    ds, files = located.dataset, located.files

    def read(split: str) -> list[Example]:
        return [ex for p in files[split] for ex in read_file(p, msc_history=msc_history)]

    if ds.format == "parlai":
        valid = str(files["valid"][0])
        if "train" not in files:
            splits = splits_by_protocol(read("valid"), valid, protocol, seed)
        else:
            sources = {"train": str(files["train"][0]), "test": valid}
            splits = _official(read("train"), read("valid"), sources, seed)
    else:
        desc = {
            "mode": "predefined",
            "protocol": None,
            "seed": None,
            "sources": {s: ", ".join(str(p) for p in files[s]) for s in SPLITS},
        }
        splits = _finish(read("train"), read("dev"), read("test"), desc)
    splits.description["dataset"] = ds.name
    return splits


def with_eval_data(splits: DataSplits, eval_data: str, **how: Any) -> DataSplits:
    """Cross-dataset evaluation: `splits`' train and dev, and as test the test split that
    `load_splits(eval_data)` gives with the same protocol, seed and options. The description
    keeps the training data's and records the evaluation data's under `eval`."""
    evaluated = load_splits(eval_data, **how)
    desc = dict(splits.description)
    desc["eval"] = {
        "data": eval_data,
        **{
            k: v
            for k, v in evaluated.description.items()
            if k in ("mode", "protocol", "seed", "dataset")
        },
    }
    desc["eval"]["test_source"] = evaluated.description["sources"].get(
        "test", evaluated.description["sources"].get("all")
    )  # fmt: skip
    return _finish(splits.train, splits.dev, evaluated.test, desc)


def _hf_splits(src: Source, protocol: str, seed: int) -> DataSplits:
    splits = dataset_splits(src.path or src.name, local=src.kind == "hf-disk")
    names = list(splits)
    if "train" in names and any(n in names for n in ("validation", "valid")):
        valid = _choose_split(names, "valid", str(src))
        if "test" in names:  # e.g. Synthetic-Persona-Chat's train / validation / test
            parts = {s: rows_to_examples(splits[s].to_dict(), name=s)
                     for s in ("train", valid, "test")}  # fmt: skip
            desc = {"mode": "predefined", "protocol": None, "seed": None,
                    "sources": {"train": f"{src}[train]", "dev": f"{src}[{valid}]",
                                "test": f"{src}[test]"}}  # fmt: skip
            return _finish(parts["train"], parts[valid], parts["test"], desc)
        train_all = rows_to_examples(splits["train"].to_dict(), name="train")
        test = rows_to_examples(splits[valid].to_dict(), name=valid)
        sources = {"train": f"{src}[train]", "test": f"{src}[{valid}]"}
        return _official(train_all, test, sources, seed)
    if len(names) != 1:
        raise SptBenchError(
            f"{src} holds splits {names}: expected one split, or train + validation"
        )
    examples = rows_to_examples(splits[names[0]].to_dict(), name=names[0])
    return splits_by_protocol(examples, f"{src}[{names[0]}]", protocol, seed)


def write_splits(splits: DataSplits, out_dir: str | Path, *, fmt: str = "jsonl") -> list[Path]:
    """Write train/dev/test files (`jsonl` canonical or `parlai` text) and `split.json`.

    Each file is written atomically; `split.json` (the description) is written last, so a
    folder with a `split.json` holds a complete split.
    """
    if fmt not in ("jsonl", "parlai"):
        raise ConfigError(f"unknown split file format {fmt!r} (jsonl or parlai)")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    suffix = ".jsonl" if fmt == "jsonl" else ".txt"
    # Render everything first so a rendering error leaves the folder untouched.
    texts = {
        name: (format_examples_jsonl(part) if fmt == "jsonl" else format_parlai(part))
        for name, part in splits.items()
    }
    written = []
    for name, text in texts.items():
        path = out / f"{name}{suffix}"
        atomic_write_text(path, text)
        written.append(path)
    # A split written earlier in the other format would be read alongside this one: remove it.
    stale = ".txt" if fmt == "jsonl" else ".jsonl"
    for name in SPLITS:
        (out / f"{name}{stale}").unlink(missing_ok=True)
    manifest = out / "split.json"
    atomic_write_json(
        manifest, {**splits.description, "format": fmt, "files": [p.name for p in written]}
    )
    return [*written, manifest]


__all__ = [
    "DEFAULT_VARIANT",
    "DataSplits",
    "PROTOCOLS",
    "check_disjoint",
    "dialogue_fingerprints",
    "SplitProtocol",
    "dialogue_ids_digest",
    "get_protocol",
    "hold_out_dev",
    "load_splits",
    "register_protocol",
    "split_by_dialogue",
    "splits_by_protocol",
    "write_splits",
]


def splits_for_config(data: Any) -> DataSplits:
    """load_splits with a run config's `data` section (the one place that maps it), the test
    split taken from `data.eval_data` when it is set."""
    how = {
        "protocol": data.split_protocol,
        "seed": data.split_seed,
        "variant": data.variant,
        "msc_history": data.msc_history,
    }
    splits = load_splits(data.source, train_data=data.train_data, test_data=data.test_data, **how)
    if data.eval_data is not None:
        splits = with_eval_data(splits, data.eval_data, **how)
    return splits
