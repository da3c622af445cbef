"""Reading finished run folders: `RunRecord` (config, metrics.json, per-example scores loaded
lazily) and the discovery of run folders from arguments. Shared by compare, plots and report."""

from __future__ import annotations

import glob
import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spt_bench.config import flatten, get_dotted
from spt_bench.errors import InputError, SptBenchError
from spt_bench.io import read_jsonl
from spt_bench.run_folder import RunFolder

# config fields that do not change a run's numbers (where and how it was written); left out
# when deciding whether two runs differ only in their seed
NON_SETTINGS: frozenset[str] = frozenset(
    {"output.name", "output.out", "model.device", "decode.batch_size", "decode.engine",
     "train.log_every", "train.save_every", "train.activation_checkpointing",
     "train.lean_activations"}
)  # fmt: skip


# config fields that say which examples a run was scored on (checked when a run has no
# per-example score file to compare ids with)
DATA_FIELDS: tuple[str, ...] = (
    "data.source", "data.test_data", "data.eval_data", "data.split_protocol", "data.split_seed",
    "data.eval_limit",
)  # fmt: skip


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass
class RunRecord:
    """A finished run folder: its resolved config and metrics.json (example scores lazily)."""

    path: Path
    config: dict
    metrics: dict
    label: str = ""
    _example_scores: list[dict] | None = field(default=None, repr=False)
    _scores_checked: bool = field(default=False, repr=False)
    _ids: frozenset[str] | None = field(default=None, repr=False)
    _ids_checked: bool = field(default=False, repr=False)

    @property
    def method(self) -> str:
        method = get_dotted(self.config, "method.name") or self.metrics.get("method")
        if isinstance(method, dict):  # metrics.json keeps the method's summary under "method"
            method = method.get("name") or method.get("method")
        return str(method or self.path.name)

    @property
    def model(self) -> str | None:
        model = get_dotted(self.config, "model.name")
        return None if model is None else str(model)

    @property
    def seed(self) -> Any:
        return self.config.get("seed")  # top level in the flat and the nested schema

    @property
    def clean_rule(self) -> str:
        """The post-processing rule of the generations (metrics.json `clean_rule`; runs
        without the key used the default rule)."""
        return str(self.metrics.get("clean_rule") or "default")

    @property
    def n(self) -> int | None:
        n = self.metrics.get("n")
        return int(n) if _is_number(n) else None

    @property
    def trainable_params(self) -> int | None:
        summary = self.metrics.get("method")
        n = summary.get("trainable_params") if isinstance(summary, dict) else None
        return n if isinstance(n, int) and not isinstance(n, bool) else None

    @property
    def method_options(self) -> dict:
        """Resolved options: the method's summary in metrics.json (all options, defaults
        included) under the config's per-method defaults and explicit method_options."""
        opts: dict = {}
        summary = self.metrics.get("method")
        if isinstance(summary, dict) and isinstance(summary.get("options"), dict):
            opts.update(summary["options"])
        per_method = (get_dotted(self.config, "method.by_method") or {}).get(self.method)
        for layer in (per_method, get_dotted(self.config, "method.options")):
            if isinstance(layer, dict):
                opts.update({k: v for k, v in layer.items() if v is not None})
        return opts

    @property
    def overall(self) -> dict[str, float]:
        return {k: v for k, v in self.metrics.get("overall", {}).items() if _is_number(v)}

    @property
    def ci95(self) -> dict[str, list[float]]:
        return self.metrics.get("ci95") or {}

    @property
    def bertscore_encoder(self) -> tuple[str, Any] | None:
        model = self.metrics.get("bertscore_model")
        if not model:
            return None
        return (str(model), self.metrics.get("bertscore_layer"))

    @property
    def per_example(self) -> list[dict] | None:
        """Per-example scores: example_scores.jsonl, else the text-free example_stats.jsonl;
        None when the run folder has neither (e.g. only metrics.json was kept)."""
        if not self._scores_checked:
            from spt_bench.metrics.files import read_example_scores

            found = read_example_scores(self.path)
            self._example_scores = found[0] if found else None
            self._scores_checked = True
        return self._example_scores

    @property
    def example_scores(self) -> list[dict]:
        rows = self.per_example
        if rows is None:
            raise InputError(self.path, None, "has no example_scores.jsonl or example_stats.jsonl")
        return rows

    @property
    def predictions(self) -> list[dict]:
        """The rows of predictions.jsonl (InputError when the file is missing)."""
        path = self.path / RunFolder.PREDICTIONS
        if not path.is_file():
            raise InputError(path, None, "file not found")
        return list(read_jsonl(path))

    @property
    def example_ids(self) -> frozenset[str] | None:
        """Ids of the scored examples (per-example scores, else predictions.jsonl); None when
        the folder has none of these files."""
        if not self._ids_checked:
            self._ids_checked = True
            if self.per_example is not None:
                self._ids = frozenset(str(r["id"]) for r in self.per_example)
            elif (self.path / RunFolder.PREDICTIONS).is_file():
                path = self.path / RunFolder.PREDICTIONS
                self._ids = frozenset(str(r["id"]) for r in _rows_with_id(path))
        return self._ids

    @property
    def reference_shas(self) -> dict[str, str] | None:
        """id -> `reference_sha` (hash of the reference text) from the per-example scores; None
        when the run has none, or its files predate the hashes (no reference check then)."""
        rows = self.per_example
        if not rows or any("reference_sha" not in r for r in rows):
            return None
        return {str(r["id"]): str(r["reference_sha"]) for r in rows}

    def settings_key(self) -> str:
        """Everything that defines the run except its seed and where it was written: two runs
        with the same key are seeds of one setting."""
        flat = {
            k: (Path(v).name if isinstance(v, str) and os.sep in v else v)
            for k, v in flatten(self.config).items()
            if k not in NON_SETTINGS | {"seed"}
        }
        flat["method"] = self.method
        flat["__options"] = self.method_options
        flat["__clean_rule"] = self.clean_rule
        return json.dumps(flat, sort_keys=True, default=str)

    @property
    def evaluated_on(self) -> str:
        """The data the run's test split came from (file name, dataset name or `sample`):
        `data.eval_data` for a cross-dataset run, else its test data or source."""
        for key in ("data.eval_data", "data.test_data", "data.source"):
            value = get_dotted(self.config, key)
            if value:
                return Path(str(value)).name
        return "sample"

    def data_key(self) -> str:
        flat = flatten(self.config)
        data = {  # unset fields left out: configs written before a field existed lack it
            k: (Path(v).name if isinstance(v, str) else v)
            for k, v in flat.items()
            if k in DATA_FIELDS and v is not None
        }
        return json.dumps([self.n, data], sort_keys=True, default=str)


def _rows_with_id(path: Path):
    for i, row in enumerate(read_jsonl(path), start=1):
        if "id" not in row:
            raise InputError(path, i, "row has no 'id' field")
        yield row


def _has_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def discover_runs(specs: Sequence[str | os.PathLike]) -> tuple[list[Path], list[str]]:
    """Expand run arguments (run folders, folders of runs, globs) into complete run folders.

    Returns (run folders in argument order, warnings about incomplete runs). A folder with
    `metrics.json` is a run; a folder with `config.json` but no `metrics.json` is an incomplete
    run (skipped with a warning); any other folder is searched for runs below it.
    """
    found: list[Path] = []
    notes: list[str] = []
    for spec in specs:
        text = str(spec)
        if _has_glob(text) and not Path(text).exists():
            matches = sorted(glob.glob(text))
            if not matches:
                raise SptBenchError(f"{text}: no files or folders match this pattern")
            paths = [Path(m) for m in matches]
        else:
            paths = [Path(text)]
        for path in paths:
            if not path.exists():
                raise InputError(path, None, "no such run folder")
            if path.is_file():
                if path.name == RunFolder.METRICS:
                    path = path.parent
                else:
                    raise InputError(path, None, "expected a run folder (or its metrics.json)")
            _collect_runs(path, found, notes)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique, notes


def _collect_runs(folder: Path, found: list[Path], notes: list[str]) -> None:
    if (folder / RunFolder.METRICS).is_file():
        found.append(folder)
        return
    if (folder / RunFolder.CONFIG).is_file():
        notes.append(f"{folder}: incomplete run (no metrics.json), ignored")
        return
    for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        _collect_runs(child, found, notes)


def load_run(path: str | os.PathLike) -> RunRecord:
    """Read a finished run folder; malformed files raise InputError naming the file."""
    path = Path(path)
    folder = RunFolder(path)
    metrics = folder.read_metrics()
    if not isinstance(metrics.get("overall"), dict):
        raise InputError(folder.metrics_path, None, "no 'overall' metrics object")
    config = folder.read_config_dict() if folder.is_run() else {}
    return RunRecord(path=path, config=config, metrics=metrics)


def load_single_run(spec: str | os.PathLike) -> RunRecord:
    """One finished run folder, labelled (plots of one run)."""
    path = Path(spec)
    if not path.is_dir():
        raise InputError(path, None, "no such run folder")
    if not RunFolder(path).is_finished():
        raise InputError(path, None, "incomplete run (no metrics.json)")
    run = load_run(path)
    from spt_bench.compare.labels import assign_labels

    assign_labels([run])
    return run


def load_unfinished_run(spec: str | os.PathLike) -> RunRecord:
    """A run folder that may still be training: its config only (no metrics), labelled."""
    path = Path(spec)
    if not path.is_dir():
        raise InputError(path, None, "no such run folder")
    folder = RunFolder(path)
    config = folder.read_config_dict() if folder.is_run() else {}
    run = RunRecord(path=path, config=config, metrics={})
    from spt_bench.compare.labels import assign_labels

    assign_labels([run])
    return run


def example_score_rows(run_dir: str | os.PathLike) -> list[dict]:
    """The rows of a run folder's example_scores.jsonl ([] when it has none)."""
    path = RunFolder.of(run_dir).example_scores
    return list(read_jsonl(path)) if path.is_file() else []


def load_runs(specs: Sequence[str | os.PathLike], *, warn: Callable[[str], None] | None = None):
    """discover_runs + load_run + labels; incomplete runs reported through `warn`."""
    paths, notes = discover_runs(specs)
    for note in notes:
        (warn or _default_warn)(note)
    if not paths:
        raise SptBenchError(
            "no complete runs found in " + ", ".join(str(s) for s in specs) + " (no metrics.json)"
        )
    runs = [load_run(p) for p in paths]
    from spt_bench.compare.labels import assign_labels

    assign_labels(runs)
    return runs


def _default_warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)
