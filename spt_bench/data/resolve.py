"""Resolve a `--data` value to a reader: file, ConvAI2 folder, `sample`, saved dataset, hub id.

Resolution order for a value V:
1. `sample` -> the bundled sample (spt_bench/data/sample/sample_dialogues.txt).
2. V exists (relative to the working directory) -> that file or folder.
3. V names a known dataset (`spt-bench data list`, spt_bench/data/named.py) -> its files, or a
   one-line error saying where to put them.
4. V is relative and `$SPT_BENCH_DATA_DIR/V` exists -> that file or folder.
5. V looks like a datasets hub id (`name` or `owner/name`, no file extension) -> the hub.
6. Otherwise: file not found.

Files: `*.csv` is Synthetic-Persona-Chat, a file of MSC session objects (JSON lines with
`personas` and `dialog`) is MSC, other `*.jsonl` canonical JSONL, anything else ParlAI text. Folders: a saved
`datasets` folder, or a folder of data files named `<split>_<variant>.txt` (ConvAI2: e.g.
`valid_self_original_no_cands.txt`) or `<split>.jsonl` / `<split>.txt` (what `data split` writes).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from spt_bench.data.example import Example
from spt_bench.data.hf import is_saved_dataset_dir, load_hf_examples
from spt_bench.data.jsonl import read_examples_jsonl
from spt_bench.data.msc import looks_like_msc, parse_msc
from spt_bench.data.named import get_named, locate
from spt_bench.data.parlai import parse_parlai
from spt_bench.data.synthetic_persona_chat import parse_spc_csv
from spt_bench.errors import InputError, SptBenchError

SAMPLE = "sample"
DATA_DIR_ENV = "SPT_BENCH_DATA_DIR"
DEFAULT_VARIANT = "self_original_no_cands"  # the SPT paper's files
SPLIT_NAMES = ("train", "valid", "dev", "test")
DATA_SUFFIXES = (".txt", ".jsonl")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_FILE_SUFFIXES = (".txt", ".jsonl", ".json", ".csv", ".tsv", ".parquet", ".arrow", ".gz")


@dataclass(frozen=True)
class Source:
    """A resolved data source. kind: sample | parlai | jsonl | msc | spc | folder | hf-disk |
    hf-hub | named (a dataset of spt_bench/data/named.py; path: the folder holding it)."""

    kind: str
    name: str  # the value as given
    path: Path | None = None

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else self.name


def sample_path() -> Path:
    """The bundled sample: ~40 original persona dialogues in ConvAI2 text format."""
    return Path(str(resources.files("spt_bench.data").joinpath("sample/sample_dialogues.txt")))


def _classify(name: str, path: Path) -> Source:
    if path.is_dir():
        kind = "hf-disk" if is_saved_dataset_dir(path) else "folder"
        return Source(kind, name, path)
    return Source(file_kind(path), name, path)


def file_kind(path: Path) -> str:
    """A data file's reader: `.csv` Synthetic-Persona-Chat, a file of MSC session objects (any
    suffix), `.jsonl` canonical JSONL, anything else ParlAI/ConvAI2 text."""
    if path.suffix == ".csv":
        return "spc"
    if path.suffix in (".txt", ".jsonl") and looks_like_msc(path):
        return "msc"
    return "jsonl" if path.suffix == ".jsonl" else "parlai"


def looks_like_hub_id(value: str) -> bool:
    return bool(_HUB_ID.match(value)) and not value.lower().endswith(_FILE_SUFFIXES)


def resolve_source(source: str | Path) -> Source:
    """Map a `--data` value to a Source (see the module docstring for the order)."""
    name = str(source)
    if name == SAMPLE:
        return Source("sample", name, sample_path())
    path = Path(name).expanduser()
    if path.exists():
        return _classify(name, path)
    if isinstance(source, str) and get_named(name) is not None:
        return Source("named", name, locate(name).folder)  # one-line error when absent
    data_dir = os.environ.get(DATA_DIR_ENV)
    if data_dir and not path.is_absolute():
        candidate = Path(data_dir).expanduser() / path
        if candidate.exists():
            return _classify(name, candidate)
    if isinstance(source, str) and looks_like_hub_id(name):
        return Source("hf-hub", name)
    where = f" (nor under {DATA_DIR_ENV}={data_dir})" if data_dir else ""
    raise InputError(path, None, f"file not found{where}")


def folder_files(directory: Path) -> dict[str, list[Path]]:
    """Data files in a folder grouped by split: `train_*.txt`, `valid.jsonl`, ..."""
    groups: dict[str, list[Path]] = {}
    for p in sorted(directory.iterdir()):
        if p.is_file() and p.suffix in DATA_SUFFIXES and not p.name.startswith("."):
            split = p.stem.split("_", 1)[0]
            if split in SPLIT_NAMES:
                groups.setdefault(split, []).append(p)
    return groups


def predefined_file(folder: Path, split: str, files: list[Path]) -> Path:
    """The file of `split` in a `data split` folder. Several formats of one split (train.jsonl
    and train.txt) are resolved by the folder's split.json (the last split written there);
    without one it is an error instead of a silent pick."""
    if len(files) == 1:
        return files[0]
    manifest = folder / "split.json"
    if manifest.is_file():
        try:
            listed = json.loads(manifest.read_text(encoding="utf-8")).get("files") or []
        except (json.JSONDecodeError, AttributeError):
            listed = []
        chosen = [p for p in files if p.name in listed]
        if len(chosen) == 1:
            return chosen[0]
    names = ", ".join(p.name for p in files)
    raise SptBenchError(
        f"{folder}: the {split} split is here in several formats ({names}) and split.json does "
        f"not say which is current; delete the stale ones or pass the file, e.g. {files[0]}"
    )


def pick_folder_file(directory: Path, split: str | None, variant: str | None = None) -> Path:
    """The one data file of `split` (and `variant`) in a folder; ambiguity is an error."""
    groups = folder_files(directory)
    every = [p for files in groups.values() for p in files]
    if not every:
        raise InputError(
            directory,
            None,
            "no data files here (expected e.g. valid_self_original_no_cands.txt or test.jsonl)",
        )
    if split is None:
        if len(every) == 1:
            return every[0]
        names = ", ".join(p.name for p in every)
        raise SptBenchError(
            f"{directory}: several data files ({names}); choose one with --split and --variant, "
            "or pass the file"
        )
    files = groups.get(split, [])
    if variant is not None:
        wanted = [p for p in files if p.stem == f"{split}_{variant}"]
        if not wanted:
            raise InputError(directory, None, f"no {split}_{variant}.txt here")
        return wanted[0]
    if len(files) == 1:
        return files[0]
    plain = [p for p in files if p.stem == split]  # `data split` output, in several formats
    if len(plain) > 1:
        return predefined_file(directory, split, plain)
    if not files:
        present = ", ".join(sorted(groups))
        raise InputError(
            directory, None, f"no {split!r} data file here (splits present: {present})"
        )
    default = [p for p in files if p.stem == f"{split}_{DEFAULT_VARIANT}"]
    if default:
        return default[0]
    names = ", ".join(p.name for p in files)
    raise SptBenchError(f"{directory}: several {split} files ({names}); choose one with --variant")


def read_file(path: Path, *, msc_history: str = "none") -> list[Example]:
    """Read one data file with the reader `file_kind` picks (MSC: `msc_history` sessions)."""
    kind = file_kind(path)
    if kind == "spc":
        examples = parse_spc_csv(path)
    elif kind == "msc":
        examples = parse_msc(path, history=msc_history)
    elif kind == "jsonl":
        examples = read_examples_jsonl(path)
    else:
        examples = parse_parlai(path)
    if not examples:
        raise InputError(path, None, "no examples")
    return examples


def narrow_source(src: Source, *, split: str | None = None, variant: str | None = None) -> Source:
    """A folder source narrowed to the one file `split`/`variant` pick; other sources as given."""
    if src.kind != "folder":
        return src
    assert src.path is not None
    return _classify(src.name, pick_folder_file(src.path, split, variant))


def named_split_files(name: str, split: str | None) -> list[Path]:
    """The files of a named dataset's `split` (valid and dev are one), or all of them."""
    located = locate(name)
    if split is None:
        return [p for paths in located.files.values() for p in paths]
    aliases = {"valid": ("valid", "dev"), "dev": ("dev", "valid"), "validation": ("valid", "dev")}
    for key in aliases.get(split, (split,)):
        if key in located.files:
            return list(located.files[key])
    raise InputError(located.folder, None, f"dataset {name!r} has no {split!r} split here")


def load_source(
    src: Source,
    *,
    split: str | None = None,
    variant: str | None = None,
    msc_history: str = "none",
) -> list[Example]:
    """Examples of a resolved source (a folder is first narrowed to one file)."""
    if src.kind == "named":
        return [ex for p in named_split_files(src.name, split)
                for ex in read_file(p, msc_history=msc_history)]  # fmt: skip
    src = narrow_source(src, split=split, variant=variant)
    if src.kind in ("sample", "parlai", "jsonl", "msc", "spc"):
        assert src.path is not None
        return read_file(src.path, msc_history=msc_history)
    if src.kind == "hf-disk":
        return load_hf_examples(src.path or src.name, split=split, local=True)
    if src.kind == "hf-hub":
        return load_hf_examples(src.name, split=split, local=False)
    raise AssertionError(src.kind)


def load_examples(
    source: str | Path,
    *,
    split: str | None = None,
    variant: str | None = None,
    msc_history: str = "none",
) -> list[Example]:
    """Read any supported source into canonical Examples.

    `split`/`variant` choose among the files of a ConvAI2 folder (`valid` + `self_original_no_cands`
    picks `valid_self_original_no_cands.txt`) or among the splits of a dataset; single files ignore
    them.
    """
    src = resolve_source(source)
    return load_source(src, split=split, variant=variant, msc_history=msc_history)
