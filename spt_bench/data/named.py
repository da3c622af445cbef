"""Named datasets: `--data NAME` for the persona datasets the toolkit knows (`spt-bench data
list`). A name resolves once its files are present; otherwise one line says where to put them.

Where a dataset's files are looked for, in order (the first folder holding them wins):
1. the folder its own environment variable names (`SPT_BENCH_CONVAI2_DIR`, `SPT_BENCH_SPC_DIR`,
   `SPT_BENCH_MSC_DIR`);
2. `$SPT_BENCH_DATA_DIR/<folder>` (`convai2`, `synthetic-persona-chat`, `msc`);
3. `<cache>/data/<folder>` (`$SPT_BENCH_CACHE`, default ~/.cache/spt-bench);
4. for a hub dataset, the Hugging Face hub cache (`$HF_HUB_CACHE`, default
   `$HF_HOME/hub` or ~/.cache/huggingface/hub): the `data/` folder of the newest-named snapshot
   of `datasets--<owner>--<name>`, as `huggingface-cli download` or `datasets.load_dataset`
   leave it.

This module only finds files (no reading); spt_bench/data/splits.py builds the splits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from spt_bench.assets import cache_root
from spt_bench.errors import MissingAssetError

DATA_DIR_ENV = "SPT_BENCH_DATA_DIR"
SPLIT_ORDER = ("train", "dev", "test")


@dataclass(frozen=True)
class NamedDataset:
    """A dataset the toolkit knows. `files` maps each split to its file(s), relative to the
    dataset's folder; `optional` splits may be absent (`protocol` says what happens then)."""

    name: str
    title: str
    source: str  # where the files come from: a hub id or a download
    licence: str
    format: str  # the reader: parlai | spc-csv | msc
    protocol: str  # the default split protocol, in words
    folder: str
    env: str
    files: tuple[tuple[str, tuple[str, ...]], ...]
    optional: tuple[str, ...] = ()
    hub_id: str | None = None

    def split_files(self) -> dict[str, tuple[str, ...]]:
        return dict(self.files)

    def file_names(self) -> list[str]:
        return [f for _, names in self.files for f in names]


@dataclass(frozen=True)
class Located:
    """A named dataset's files found on this machine: split -> absolute paths."""

    dataset: NamedDataset
    folder: Path
    files: dict[str, tuple[Path, ...]]


CONVAI2_SOURCE = "ParlAI convai2 (convai2_fix_723.tgz)"
CONVAI2_LICENCE = "ParlAI's terms"
CONVAI2_PROTOCOL = "official (test = valid); only valid here: convai2-valid-split"
PERSONA_VIEWS = ("self", "other", "both", "none")


def _convai2_entries() -> list[NamedDataset]:
    out = []
    for view in PERSONA_VIEWS:
        for kind in ("original", "revised"):
            for cands in ("no_cands", "cands"):
                variant = f"{view}_{kind}" + ("_no_cands" if cands == "no_cands" else "")
                suffix = "-cands" if cands == "cands" else ""
                what = (
                    "Hits@1 over the file's 20 candidates" if cands == "cands" else "no candidates"
                )
                out.append(NamedDataset(
                    name=f"convai2-{view}-{kind}{suffix}",
                    title=f"ConvAI2 {variant} ({what})",
                    source=CONVAI2_SOURCE, licence=CONVAI2_LICENCE, format="parlai",
                    protocol=CONVAI2_PROTOCOL, folder="convai2", env="SPT_BENCH_CONVAI2_DIR",
                    files=(("train", (f"train_{variant}.txt",)),
                           ("valid", (f"valid_{variant}.txt",))),
                    optional=("train",),
                ))  # fmt: skip
    return out


SPC_FILES = tuple(
    (split, (f"Synthetic-Persona-Chat_{name}.csv",))
    for split, name in (("train", "train"), ("dev", "valid"), ("test", "test"))
)
SPC = NamedDataset(
    name="synthetic-persona-chat",
    title="Synthetic-Persona-Chat (Jandaghi et al. 2023): two responder views per conversation",
    source="hub google/Synthetic-Persona-Chat",
    licence="CC-BY-4.0",
    format="spc-csv",
    protocol="predefined train / valid (dev) / test",
    folder="synthetic-persona-chat",
    env="SPT_BENCH_SPC_DIR",
    files=SPC_FILES,
    hub_id="google/Synthetic-Persona-Chat",
)
MSC_SOURCE = "ParlAI msc (msc_v0.1.tar.gz: msc/msc_dialogue/)"


def _msc_entry(name: str, sessions: tuple[int, ...], title: str) -> NamedDataset:
    files = tuple(
        (split, tuple(f"session_{s}/{stem}.txt" for s in sessions))
        for split, stem in (("train", "train"), ("dev", "valid"), ("test", "test"))
    )
    return NamedDataset(
        name=name, title=title, source=MSC_SOURCE, licence="ParlAI's terms",
        format="msc", protocol="predefined train / valid (dev) / test",
        folder="msc", env="SPT_BENCH_MSC_DIR", files=files,
    )  # fmt: skip


MSC_ENTRIES = [
    _msc_entry("msc", (2, 3, 4), "Multi-Session Chat sessions 2-4 (Xu et al. 2022)"),
    *[_msc_entry(f"msc-session{s}", (s,), f"Multi-Session Chat session {s}") for s in (2, 3, 4)],
]
NAMED: dict[str, NamedDataset] = {d.name: d for d in (*_convai2_entries(), SPC, *MSC_ENTRIES)}
ALIASES = {"convai2": "convai2-self-original"}  # the SPT paper's files


def get_named(name: str) -> NamedDataset | None:
    return NAMED.get(ALIASES.get(name, name))


def hub_cache() -> Path:
    """The Hugging Face hub cache, where `huggingface-cli download` and `datasets.load_dataset`
    (it fetches hub files with `hf_hub_download`) leave a dataset's files."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME")
    return (Path(home).expanduser() if home else Path.home() / ".cache" / "huggingface") / "hub"


def candidate_folders(ds: NamedDataset) -> list[Path]:
    """Where `ds`'s files are looked for, in order (see the module docstring)."""
    folders = []
    if os.environ.get(ds.env):
        folders.append(Path(os.environ[ds.env]).expanduser())
    if os.environ.get(DATA_DIR_ENV):
        folders.append(Path(os.environ[DATA_DIR_ENV]).expanduser() / ds.folder)
    folders.append(cache_root() / "data" / ds.folder)
    if ds.hub_id:
        hub = hub_cache()
        snapshots = hub / f"datasets--{ds.hub_id.replace('/', '--')}" / "snapshots"
        if snapshots.is_dir():
            folders += [p / "data" for p in sorted(snapshots.iterdir(), reverse=True)]
    return folders


def _found(ds: NamedDataset, folder: Path) -> dict[str, tuple[Path, ...]] | None:
    out = {}
    for split, names in ds.files:
        paths = tuple(folder / n for n in names)
        if all(p.is_file() for p in paths):
            out[split] = paths
        elif split not in ds.optional:
            return None
    return out


def locate(name: str) -> Located:
    """The files of a named dataset, or MissingAssetError saying in one line where to put them."""
    ds = get_named(name)
    if ds is None:
        raise KeyError(name)
    folders = candidate_folders(ds)
    for folder in folders:
        files = _found(ds, folder)
        if files:
            return Located(ds, folder.resolve(), {k: tuple(p.resolve() for p in v)
                                                   for k, v in files.items()})  # fmt: skip
    needed = [f for split, names in ds.files if split not in ds.optional for f in names]
    default = Path(f"${DATA_DIR_ENV}") / ds.folder if os.environ.get(DATA_DIR_ENV) else None
    places = [f"${ds.env}", str(default or cache_root() / "data" / ds.folder)]
    raise MissingAssetError(
        f"dataset {ds.name!r} is not on this machine: put {', '.join(needed)} in "
        f"{' or '.join(places)} (from {ds.source}; licence {ds.licence})"
    )


def named_rows() -> list[dict]:
    """`spt-bench data list`'s rows: each dataset's description and whether it is here."""
    rows = []
    for ds in NAMED.values():
        try:
            found: Located | None = locate(ds.name)
        except MissingAssetError:
            found = None
        rows.append({
            "name": ds.name, "title": ds.title, "source": ds.source, "licence": ds.licence,
            "format": ds.format, "protocol": ds.protocol, "files": ds.file_names(),
            "optional_splits": list(ds.optional), "env": ds.env,
            "present": found is not None, "folder": str(found.folder) if found else None,
            "aliases": {a: n for a, n in ALIASES.items()},
        })  # fmt: skip
    return rows
