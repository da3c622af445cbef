"""`spt-bench compare`: runs as rows, metrics as columns, with CIs, gains and significance.

Reads only finished run folders (those with `metrics.json`); every number shown comes from a
run's `metrics.json` (values, CIs), is computed here from its per-example scores
(`example_scores.jsonl`, or the text-free `example_stats.jsonl`), or is a mean/std over the
seeds of one setting, so each cell traces back to files in the run folders.

Definitions (also in docs/reports.md):
- rows: runs that differ only in their training seed form one row (mean over seeds, sample
  std, per-seed values in json/csv); `group_seeds=False` gives one row per run.
- relative gain of a row over the baseline, per metric, in percent:
  100 * (row - baseline) / |baseline|, sign-flipped for lower-is-better metrics so that a
  positive gain always means "better"; undefined when the baseline value is 0.
- AVG: the SPT paper's summary figure, the mean relative gain over its ten metrics
  (F1, BLEU, ROUGE-1/2/L, BERTScore F1/P/R, Dist-1/2). The paper's F1 is unnormalised, so AVG
  uses our `f1_raw` (not the ParlAI-normalised `f1`).
- p-values: the paired bootstrap over the test examples when the row and the baseline have one
  seed each; with several seeds on a side, a t-test on the per-seed values (metrics.ttest:
  Welch's, calibrated at the seed level; docs/metrics.md); Holm-adjusted across the metrics of
  a row by default (`p_adjust_scope="table"`: across every p-value of the table); `*` marks
  p < 0.05 and `**` p < 0.01. The legend names each row's test.
- example sets: ids must match, and so must the references where the per-example files carry
  their hashes (`reference_sha`); `force` compares anyway, the paired statistics on the
  examples that match.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import math
import os
import statistics
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spt_bench.config import flatten, get_dotted
from spt_bench.errors import InputError, SptBenchError
from spt_bench.io import read_jsonl
from spt_bench.paper import (
    PAPER_AVG_METRICS,
    PAPER_BERTSCORE_MODEL,
    PAPER_CITATION,
    PAPER_N_EXAMPLES,
    load_paper_results,
)
from spt_bench.run_folder import RunFolder

FORMATS = ("rich", "md", "csv", "json", "latex")
P_ADJUST = ("holm", "none")
P_ADJUST_SCOPES = ("row", "table")  # Holm's family: the metrics of a row, or the whole table
SUFFIX_FORMATS = {".md": "md", ".csv": "csv", ".json": "json", ".tex": "latex", ".txt": "rich"}

# Default columns, in display order: ours (`f1`) then the paper's ten. Extra model metrics
# (issue 7) are appended when a run has them.
DEFAULT_METRICS: tuple[str, ...] = ("f1", *PAPER_AVG_METRICS)
EXTRA_METRICS: tuple[str, ...] = ("ppl", "hits@1")
DIST_METRICS = ("dist1", "dist2")

SHORT_NAMES: dict[str, str] = {
    "f1": "F1",
    "f1_raw": "F1 raw",
    "bleu": "BLEU",
    "bleu1": "BLEU-1",
    "bleu2": "BLEU-2",
    "rouge1": "R-1",
    "rouge2": "R-2",
    "rougeL": "R-L",
    "bertscore_f1": "BS-F1",
    "bertscore_p": "BS-P",
    "bertscore_r": "BS-R",
    "dist1": "Dist-1",
    "dist2": "Dist-2",
    "avg_len": "Len",
    "persona_f1": "Persona F1",
    "ppl": "PPL",
    "hits@1": "Hits@1",
}

# Significance marks, strictest first.
SIGNIFICANCE: tuple[tuple[float, str], ...] = ((0.01, "**"), (0.05, "*"))
# Marks a paper row's Dist-n when its corpus size differs from ours by more than this factor.
CORPUS_SIZE_FACTOR = 2.0
DIST_FLAG = "†"

# method option -> short name, always shown in a run's label when present (key settings)
KEY_OPTIONS: dict[str, str] = {
    "k": "K",
    "prompt_len": "L",
    "lora_r": "r",
    "shots": "shots",
    "num_virtual_tokens": "P",  # prefix-tuning, p-tuning-v2
    "prefix_projection": "mlp",  # prefix-tuning's reparameterisation
    "peft_type": "type",  # the generic `peft` method
}
# config fields shown in labels only when they differ between the compared runs of one method
# (labelled by their last part, e.g. `lr=`, except those in FIELD_LABELS)
VARYING_FIELDS: tuple[str, ...] = (
    "model.name",
    "seed",
    "train.max_steps",
    "train.epochs",
    "train.lr",
    "data.train_limit",
    "decode.mode",
)
FIELD_LABELS: dict[str, str] = {"model.name": "model"}
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
    "data.source", "data.test_data", "data.split_protocol", "data.split_seed", "data.eval_limit",
)  # fmt: skip


class ComparisonRefused(SptBenchError):
    """Runs that cannot be compared fairly (different examples, BERTScore encoders or
    post-processing rules)."""


# ------------------------------------------------------------------------------------ run folders


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
            from metrics.files import read_example_scores

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

    def data_key(self) -> str:
        flat = flatten(self.config)
        data = {
            k: (Path(v).name if isinstance(v, str) else v)
            for k, v in flat.items()
            if k in DATA_FIELDS
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
    assign_labels(runs)
    return runs


def _default_warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def _read_json(path: Path) -> dict:
    return RunFolder(path.parent).read_json(path.name)


# ------------------------------------------------------------------------------------ labels


def _fmt_setting(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str) and ("/" in value or os.sep in value):
        return Path(value).name
    return str(value)


def assign_labels(runs: Sequence[RunRecord], *, exclude: Sequence[str] = ()) -> None:
    """Name each run by method + key settings, adding settings that differ between runs of the
    same method (model, seed, steps, method options; not those in `exclude`) and finally the
    folder name if two runs would still share a label."""
    by_method: dict[str, list[RunRecord]] = {}
    for run in runs:
        by_method.setdefault(run.method, []).append(run)
    for method, group in by_method.items():
        option_keys = sorted({k for r in group for k in r.method_options})
        varying_opts = [
            k
            for k in option_keys
            if k not in KEY_OPTIONS and len({_freeze(r.method_options.get(k)) for r in group}) > 1
        ]
        varying_fields = [
            f
            for f in VARYING_FIELDS
            if f not in exclude and len({_freeze(_field(r, f)) for r in group}) > 1
        ]
        for run in group:
            parts = [
                f"{KEY_OPTIONS[k]}={_fmt_setting(v)}"
                for k, v in run.method_options.items()
                if k in KEY_OPTIONS
            ]
            parts += [f"{k}={_fmt_setting(run.method_options.get(k))}" for k in varying_opts]
            parts += [
                f"{_field_label(f)}={_fmt_setting(get_dotted(run.config, f))}"
                for f in varying_fields
            ]
            run.label = method + (f" ({', '.join(parts)})" if parts else "")
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.label] = counts.get(run.label, 0) + 1
    for run in runs:
        if counts[run.label] > 1:
            run.label = f"{run.label} [{run.path.name}]"


def _field_label(name: str) -> str:
    return FIELD_LABELS.get(name, name.rsplit(".", 1)[-1])


def _seed_order(run: RunRecord) -> tuple:
    seed = run.seed
    return (0, seed, "") if _is_number(seed) else (1, 0, str(seed))


def _field(run: RunRecord, name: str) -> Any:
    return run.seed if name == "seed" else get_dotted(run.config, name)


def _freeze(value: Any) -> Any:
    return json.dumps(value, sort_keys=True, default=str)


@dataclass
class RunGroup:
    """The runs of one setting that differ only in their seed (one row of the table)."""

    runs: list[RunRecord]
    label: str = ""

    @property
    def lead(self) -> RunRecord:
        return self.runs[0]

    @property
    def method(self) -> str:
        return self.lead.method

    @property
    def seeds(self) -> list[Any]:
        return [r.seed for r in self.runs]


def group_runs(runs: Sequence[RunRecord], *, by_seed: bool = True) -> list[RunGroup]:
    """Runs that differ only in their seed become one group (in first-seen order, members by
    seed); labels name the setting, with `[n seeds]` when a group has several."""
    groups: dict[str, RunGroup] = {}
    for run in runs:
        key = run.settings_key() if by_seed else str(run.path.resolve())
        groups.setdefault(key, RunGroup([])).runs.append(run)
    out = list(groups.values())
    for g in out:
        seeds = [_freeze(s) for s in g.seeds]
        if len(set(seeds)) != len(seeds):  # same setting and seed twice: keep them apart
            out = [RunGroup([r]) for grp in out for r in grp.runs]
            by_seed = False
            break
        g.runs.sort(key=_seed_order)
    leads = [
        RunRecord(g.lead.path, g.lead.config, g.lead.metrics) for g in out
    ]  # copies: labelling the leads must not rename the runs
    assign_labels(leads, exclude=("seed",) if by_seed else ())
    for g, lead in zip(out, leads, strict=True):
        g.label = lead.label + (f" [{len(g.runs)} seeds]" if len(g.runs) > 1 else "")
    return out


# ------------------------------------------------------------------------------------ comparison


@dataclass
class ComparisonRow:
    label: str
    source: str  # "run" or "paper"
    values: dict[str, float]
    ci95: dict[str, tuple[float, float]] = field(default_factory=dict)
    gain: dict[str, float] = field(default_factory=dict)  # relative gain (%) vs `baseline`
    p_value: dict[str, float] = field(default_factory=dict)  # raw
    p_adjusted: dict[str, float] = field(default_factory=dict)  # what marks and tables show
    p_test: str | None = None  # the test behind p_value (P_TEST_*)
    p_fallback: list[str] = field(default_factory=list)  # metrics tested by seed_bootstrap
    avg_gain: float | None = None
    avg_gain_metrics: list[str] = field(default_factory=list)
    baseline: str | None = None  # label of what `gain` is relative to
    is_baseline: bool = False
    best: list[str] = field(default_factory=list)  # columns where this row is best
    flags: dict[str, str] = field(default_factory=dict)  # metric -> mark explained in a note
    path: str | None = None
    paths: list[str] = field(default_factory=list)
    method: str | None = None
    model: str | None = None
    seed: Any = None
    seeds: list[Any] = field(default_factory=list)
    std: dict[str, float] = field(default_factory=dict)  # sample std over seeds (>= 2 seeds)
    per_seed: dict[str, list[float]] = field(default_factory=dict)
    n: int | None = None
    bertscore_model: str | None = None
    trainable_params: int | None = None  # from metrics.json's method summary

    @property
    def n_seeds(self) -> int:
        return len(self.seeds) if self.source == "run" else 0

    def to_json(self) -> dict:
        return {
            "label": self.label,
            "source": self.source,
            "path": self.path,
            "paths": self.paths,
            "method": self.method,
            "model": self.model,
            "seed": self.seed,
            "seeds": self.seeds,
            "n_seeds": self.n_seeds,
            "n": self.n,
            "bertscore_model": self.bertscore_model,
            "trainable_params": self.trainable_params,
            "is_baseline": self.is_baseline,
            "values": self.values,
            "ci95": {k: list(v) for k, v in self.ci95.items()},
            "std": self.std,
            "per_seed": self.per_seed,
            "baseline": self.baseline,
            "gain_pct": self.gain,
            "p_value": self.p_value,
            "p_adjusted": self.p_adjusted,
            "p_test": self.p_test,
            "p_fallback": self.p_fallback,
            "avg_gain_pct": self.avg_gain,
            "avg_gain_metrics": self.avg_gain_metrics,
            "best": self.best,
            "flags": self.flags,
        }


@dataclass
class Comparison:
    metrics: list[str]
    higher_is_better: dict[str, bool | None]
    rows: list[ComparisonRow]
    baseline: str | None
    notes: list[str] = field(default_factory=list)
    p_adjust: str = "holm"
    compact: bool = False  # no CIs / stds in md, latex and rich (narrow tables)
    p_adjust_scope: str = "row"

    def to_json(self) -> dict:
        return {
            "metrics": self.metrics,
            "higher_is_better": self.higher_is_better,
            "baseline": self.baseline,
            "avg_metrics": list(PAPER_AVG_METRICS),
            "significance": {mark: level for level, mark in SIGNIFICANCE},
            "significance_test": SIGNIFICANCE_TEST,
            "p_adjust": self.p_adjust,
            "p_adjust_scope": self.p_adjust_scope,
            "rows": [r.to_json() for r in self.rows],
            "notes": self.notes,
        }


SIGNIFICANCE_TEST = (
    "one seed per side: paired bootstrap over the test examples (metrics.paired_bootstrap via "
    "seed_bootstrap: 1000 resamples, seed 0, two-sided shift test with +1 correction); several "
    "seeds on a side: Welch's t-test on the per-seed values of each metric (metrics.ttest; with "
    "one seed on the other side, that side takes the other's seed variance); a metric whose "
    "per-seed values do not vary falls back to the two-level bootstrap (rows' p_fallback); "
    "each row's p_test names its test"
)


def resolve_baseline(groups: list[RunGroup], baseline: str, runs: list[RunRecord]) -> RunGroup:
    """A baseline given as a run folder (added to the rows if not listed), a row label or a
    method name that names exactly one row."""
    path = Path(baseline)
    if path.is_dir():
        target = path.resolve()
        for g in groups:
            if any(r.path.resolve() == target for r in g.runs):
                return g
        if not (path / RunFolder.METRICS).is_file():
            raise InputError(path, None, "baseline run is incomplete (no metrics.json)")
        runs.insert(0, load_run(path))
        raise _Regroup()
    for key in (lambda g: g.label, lambda g: g.method):
        matches = [g for g in groups if key(g) == baseline]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = "; ".join(str(g.lead.path) for g in matches)
            raise SptBenchError(
                f"--baseline {baseline!r} matches {len(matches)} runs ({names}); "
                "give the baseline's run folder instead"
            )
    raise SptBenchError(
        f"--baseline {baseline!r} is neither a run folder nor the method/label of a listed run "
        f"(labels: {', '.join(g.label for g in groups)})"
    )


class _Regroup(Exception):
    """A baseline folder was added to the runs: group again."""


def check_comparable(
    runs: Sequence[RunRecord], *, force: bool = False, reference: RunRecord | None = None
) -> list[str]:
    """Refuse (ComparisonRefused) runs scored on different example sets, with different
    BERTScore encoders or different post-processing rules, unless `force`; returns the notes
    to print (including the forced mismatches)."""
    notes: list[str] = []
    problems: list[str] = []
    reference = reference or runs[0]
    ref_ids = reference.example_ids
    unchecked = []
    for run in runs:
        if run is reference:
            continue
        ids = run.example_ids
        if ids is not None and ref_ids is not None:
            if ids != ref_ids:
                problems.append(
                    f"runs were scored on different example sets: {run.label} ({run.path}) has "
                    f"{len(ids)} examples, {reference.label} ({reference.path}) has "
                    f"{len(ref_ids)}, {len(ids & ref_ids)} shared"
                )
        elif run.data_key() != reference.data_key():
            problems.append(
                f"runs were scored on different example sets: {run.label} ({run.path}) has "
                f"n={run.n}, {reference.label} ({reference.path}) has n={reference.n} or other "
                "data settings (no per-example scores to compare ids)"
            )
        else:
            unchecked += [r for r in (run, reference) if r.example_ids is None]
    if unchecked:
        names = sorted({r.path.name for r in unchecked})
        notes.append(
            "example sets checked by count and data settings only (no per-example scores, so "
            f"no ids and no p-values) for: {', '.join(names)}"
        )
    _, ref_problems, ref_notes = reference_mismatches(runs, reference)
    problems += ref_problems
    notes += ref_notes
    encoders = {r.bertscore_encoder for r in runs if r.bertscore_encoder is not None}
    if len(encoders) > 1:
        listing = "; ".join(
            f"{r.label}: {r.bertscore_encoder[0]} layer {r.bertscore_encoder[1]}"
            for r in runs
            if r.bertscore_encoder is not None
        )
        problems.append(f"runs used different BERTScore encoders ({listing})")
    rules = {r.clean_rule for r in runs}
    if len(rules) > 1:
        listing = "; ".join(f"{r.label}: {r.clean_rule}" for r in runs)
        problems.append(
            f"runs used different post-processing rules (clean_rule {listing}); see docs/metrics.md"
        )
    if problems and not force:
        raise ComparisonRefused(
            problems[0]
            + (f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else "")
            + "; such numbers are not comparable - pass --force to compare anyway"
        )
    notes = [f"forced: {p}" for p in problems] + notes
    if any(m in r.overall for r in runs for m in ("ppl",)):
        models = sorted({str(r.model) for r in runs if "ppl" in r.overall})
        if len(models) > 1:
            notes.append(
                "ppl is comparable only between runs that share a tokenizer; these runs use "
                + ", ".join(models)
            )
    return notes


def reference_mismatches(
    runs: Sequence[RunRecord], reference: RunRecord | None = None
) -> tuple[frozenset[str], list[str], list[str]]:
    """Check that runs sharing example ids also share their references (per-example
    `reference_sha`, e.g. not one run on a modified copy of the data file).

    Returns (ids whose reference differs between two runs, problems, notes). Only runs whose
    per-example files carry the hashes are checked; older files have none, so there is nothing
    to check: no note when no run has hashes, a note naming the unchecked runs otherwise."""
    hashed = [r for r in runs if r.reference_shas is not None]
    notes: list[str] = []
    if hashed and len(hashed) < len(runs):
        names = sorted({r.path.name for r in runs if r.reference_shas is None})
        notes.append(
            "references not checked for: " + ", ".join(names) + " (per-example files without "
            "reference_sha, written before it existed)"
        )
    if len(hashed) < 2:
        return frozenset(), [], notes
    anchor = reference if any(r is reference for r in hashed) else hashed[0]
    anchor_shas = anchor.reference_shas or {}
    seen: dict[str, set[str]] = {}
    for run in hashed:
        for i, sha in (run.reference_shas or {}).items():
            seen.setdefault(i, set()).add(sha)
    problems = []
    for run in hashed:
        if run is anchor:
            continue
        shas = run.reference_shas or {}
        shared = anchor_shas.keys() & shas.keys()
        differ = sum(1 for i in shared if shas[i] != anchor_shas[i])
        if differ:
            problems.append(
                f"runs share example ids but not their references: {differ} of the "
                f"{len(shared)} shared examples have another reference in {run.label} "
                f"({run.path}) than in {anchor.label} ({anchor.path}) (a modified data file?)"
            )
    if not problems and any(len(v) > 1 for v in seen.values()):  # two non-anchor runs differ
        problems.append(
            "runs share example ids but not their references: "
            f"{sum(1 for v in seen.values() if len(v) > 1)} examples have different references "
            "in different runs (a modified data file?)"
        )
    return frozenset(i for i, v in seen.items() if len(v) > 1), problems, notes


def _higher_is_better(runs: Sequence[RunRecord], metric: str) -> bool | None:
    for run in runs:
        meta = (run.metrics.get("metrics_meta") or {}).get(metric)
        if isinstance(meta, dict) and "higher_is_better" in meta:
            return bool(meta["higher_is_better"])
    try:
        from metrics import METRICS  # light: the registry, not the scoring backends

        spec = METRICS[metric]
    except (ImportError, KeyError):
        spec = None
    if spec is not None:  # the registry's answer, None included (descriptive metrics)
        hib = getattr(spec, "higher_is_better", None)
        return None if hib is None else bool(hib)
    if metric in PAPER_AVG_METRICS or metric in ("f1", "bleu1", "bleu2", "persona_f1", "hits@1"):
        return True
    if metric == "ppl":
        return False
    return None


def relative_gain(value: float, base: float, higher_is_better: bool | None) -> float | None:
    """100 * (value - base) / |base|, sign-flipped for lower-is-better; None if base is 0."""
    if base == 0 or not (_is_number(value) and _is_number(base)):
        return None
    gain = (value - base) / abs(base) * 100.0
    return -gain if higher_is_better is False else gain


def _avg_gain(gains: dict[str, float]) -> tuple[float | None, list[str]]:
    used = [m for m in PAPER_AVG_METRICS if gains.get(m) is not None]
    if not used:
        return None, []
    return sum(gains[m] for m in used) / len(used), used


def significance_mark(p: float | None) -> str:
    if p is None:
        return ""
    for level, mark in SIGNIFICANCE:
        if p < level:
            return mark
    return ""


def _restricted(rows: list[dict], ids: frozenset[str] | None) -> list[dict]:
    return rows if ids is None else [r for r in rows if str(r["id"]) in ids]


def seed_p_values(
    group: RunGroup,
    baseline: RunGroup,
    metric_names: Sequence[str],
    *,
    ids: frozenset[str] | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """p-values of `group` vs `baseline` (metrics.seed_bootstrap) over `ids` (default: all;
    the runs must then share their examples); {} when a run has no per-example scores."""
    from metrics.bootstrap import seed_bootstrap

    if any(r.per_example is None for r in (*group.runs, *baseline.runs)):
        return {}
    a = [_restricted(r.per_example, ids) for r in group.runs]
    b = [_restricted(r.per_example, ids) for r in baseline.runs]
    result = seed_bootstrap(a, b, seed=seed)
    return {m: float(v["p_value"]) for m, v in result.items() if m in metric_names}


# The test behind a row's p-values (ComparisonRow.p_test), as the legend names it.
P_TEST_PAIRED = "paired bootstrap"
P_TEST_WELCH = "Welch t"
P_TEST_ONE_SIDE = "t (one-seed side)"
P_TEST_TEXT = {
    P_TEST_PAIRED: "the paired bootstrap over the test examples",
    P_TEST_WELCH: "Welch's t-test on the per-seed values",
    P_TEST_ONE_SIDE: "t-test on the per-seed values, the one-seed side taking the other "
    "side's seed spread",
}


def row_p_values(
    group: RunGroup,
    baseline: RunGroup,
    metric_names: Sequence[str],
    *,
    ids: frozenset[str] | None = None,
    seed: int = 0,
) -> tuple[dict[str, float], str | None, list[str]]:
    """p-values of a row vs the baseline over `ids` (default: all; the runs must then share
    their examples): (p by metric, the test used, metrics that fell back to the two-level
    bootstrap). One seed on both sides: the paired bootstrap over examples. Several seeds on a
    side: a t-test on the per-seed values (metrics.ttest: Welch's, or with the other side's
    spread when one side has one seed), calibrated at the seed level; a metric whose per-seed
    values do not vary at all (nothing to estimate a spread from) falls back to
    metrics.seed_bootstrap. ({}, None, []) when a run has no per-example scores."""
    if any(r.per_example is None for r in (*group.runs, *baseline.runs)):
        return {}, None, []
    if len(group.runs) == 1 and len(baseline.runs) == 1:
        return seed_p_values(group, baseline, metric_names, ids=ids, seed=seed), P_TEST_PAIRED, []
    from metrics.bootstrap import seed_bootstrap
    from metrics.ttest import seed_t_test

    a = [_restricted(r.per_example, ids) for r in group.runs]
    b = [_restricted(r.per_example, ids) for r in baseline.runs]
    tested = {m: v for m, v in seed_t_test(a, b).items() if m in metric_names}
    p = {m: float(v["p_value"]) for m, v in tested.items() if v["p_value"] is not None}
    flat = [m for m, v in tested.items() if v["p_value"] is None]
    if flat:
        boot = seed_bootstrap(a, b, seed=seed)
        p.update({m: float(boot[m]["p_value"]) for m in flat})
    test = P_TEST_WELCH if min(len(a), len(b)) >= 2 else P_TEST_ONE_SIDE
    return {m: p[m] for m in tested}, test, flat


def paired_p_values(
    run: RunRecord, baseline: RunRecord, metric_names: Sequence[str], *, seed: int = 0
) -> dict[str, float]:
    """Paired bootstrap p-values of one run vs another (both on the same examples)."""
    return seed_p_values(RunGroup([run]), RunGroup([baseline]), metric_names, seed=seed)


def adjust_p_values(p_values: dict[Any, float], method: str) -> dict[Any, float]:
    """Holm across the family given (the metrics of one row, or every p-value of a table),
    or unchanged (`none`)."""
    from metrics.bootstrap import holm_adjust

    if method not in P_ADJUST:
        raise SptBenchError(f"unknown --p-adjust {method!r}; choose one of {', '.join(P_ADJUST)}")
    return holm_adjust(p_values) if method == "holm" else dict(p_values)


def _run_values(
    run: RunRecord, columns: Sequence[str], ids: frozenset[str] | None, seed: int
) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """A run's values and CIs: from metrics.json, or rescored on `ids` from its per-example
    scores (forced comparisons of runs with different example sets)."""
    if ids is not None and run.per_example is not None:
        from metrics import ScoreTable, bootstrap_ci

        table = ScoreTable.from_per_example(_restricted(run.per_example, ids))
        point = table.point()
        ci = bootstrap_ci(table, 1000, seed)
        return (
            {m: float(point[m]) for m in columns if m in point},
            {m: (float(ci[m][0]), float(ci[m][1])) for m in columns if m in ci},
        )
    values = {m: float(run.overall[m]) for m in columns if m in run.overall}
    ci95 = {
        m: (float(run.ci95[m][0]), float(run.ci95[m][1]))
        for m in columns
        if m in run.ci95 and run.ci95[m] is not None and len(run.ci95[m]) == 2
    }
    return values, ci95


def _group_row(
    group: RunGroup, columns: Sequence[str], ids: frozenset[str] | None, seed: int
) -> ComparisonRow:
    per_run = [_run_values(r, columns, ids, seed) for r in group.runs]
    lead = group.lead
    ns = {r.n for r in group.runs}
    row = ComparisonRow(
        label=group.label,
        source="run",
        values={},
        path=str(lead.path),
        paths=[str(r.path) for r in group.runs],
        method=lead.method,
        model=lead.model,
        seed=lead.seed if len(group.runs) == 1 else None,
        seeds=group.seeds,
        n=(len(ids) if ids is not None else ns.pop()) if len(ns) == 1 else None,
        bertscore_model=lead.metrics.get("bertscore_model"),
        trainable_params=lead.trainable_params,
    )
    if len(group.runs) == 1:
        row.values, row.ci95 = per_run[0]
        return row
    for m in columns:
        seeds_values = [v[m] for v, _ in per_run if m in v]
        if len(seeds_values) != len(per_run):
            continue  # a metric only some seeds have is not averaged
        row.values[m] = statistics.fmean(seeds_values)
        row.std[m] = statistics.stdev(seeds_values)
        row.per_seed[m] = seeds_values
    return row


def build_comparison(
    runs: list[RunRecord],
    *,
    baseline: str | None = None,
    force: bool = False,
    paper: bool = False,
    metrics: Sequence[str] | None = None,
    bootstrap_seed: int = 0,
    p_adjust: str = "holm",
    group_seeds: bool = True,
    compact: bool = False,
    p_adjust_scope: str = "row",
) -> Comparison:
    """Compare finished runs (see the module docstring for the definitions used)."""
    if not runs:
        raise SptBenchError("nothing to compare: no runs")
    if p_adjust not in P_ADJUST:
        raise SptBenchError(f"unknown --p-adjust {p_adjust!r}; choose one of {', '.join(P_ADJUST)}")
    if p_adjust_scope not in P_ADJUST_SCOPES:
        raise SptBenchError(
            f"unknown --p-adjust-scope {p_adjust_scope!r}; choose one of "
            + ", ".join(P_ADJUST_SCOPES)
        )
    runs = list(runs)
    if not all(r.label for r in runs):
        assign_labels(runs)
    while True:
        groups = group_runs(runs, by_seed=group_seeds)
        try:
            base = resolve_baseline(groups, baseline, runs) if baseline else None
        except _Regroup:
            assign_labels(runs)
            continue
        break
    notes = check_comparable(runs, force=force, reference=base.lead if base else None)

    # forced past different example sets: score everything on the examples all runs share
    shared: frozenset[str] | None = None  # p-values on these ids
    value_ids: frozenset[str] | None = None  # values and CIs rescored on these ids
    id_sets = [r.example_ids for r in runs]
    if len({s for s in id_sets if s is not None}) > 1:
        shared = frozenset.intersection(*[s for s in id_sets if s is not None])
        if not shared:
            raise ComparisonRefused("the runs share no example: nothing to compare")
        if all(r.per_example is not None for r in runs):
            value_ids = shared
            notes.append(
                f"forced: every value, CI and p-value is computed on the {len(shared)} examples "
                "all runs share"
            )
        else:
            notes.append(
                "forced: values are each run's own example set (a run has no per-example "
                f"scores to rescore); p-values use the {len(shared)} shared examples"
            )
    # forced past different references: the paired statistics use the examples whose
    # references match in every run
    bad_refs = reference_mismatches(runs)[0]
    if bad_refs:
        common = shared
        if common is None:
            common = next(s for s in id_sets if s is not None)
        matched = common - bad_refs
        if not matched:
            raise ComparisonRefused("the runs share no example with the same reference")
        shared = matched
        notes.append(
            f"forced: references differ between runs on {len(common & bad_refs)} examples, "
            f"dropped from the paired statistics: p-values use the {len(matched)} examples "
            "whose references match in every run (values and CIs still include the others)"
        )

    if metrics:
        columns = list(dict.fromkeys(metrics))
        unknown = [m for m in columns if not any(m in r.overall for r in runs)]
        if unknown:
            available = sorted({m for r in runs for m in r.overall})
            raise SptBenchError(
                f"no run has metric(s) {', '.join(unknown)}; available: {', '.join(available)}"
            )
    else:
        present = {m for r in runs for m in r.overall}
        columns = [m for m in DEFAULT_METRICS if m in present or paper]
        columns += [m for m in EXTRA_METRICS if m in present]
    hib = {m: _higher_is_better(runs, m) for m in columns}
    gain_metrics = list(dict.fromkeys([*columns, *PAPER_AVG_METRICS]))
    hib_all = {m: _higher_is_better(runs, m) for m in gain_metrics}

    rows: list[ComparisonRow] = []
    base_all = _group_row(base, gain_metrics, value_ids, bootstrap_seed) if base else None
    base_values = dict(base_all.values) if base_all else {}
    no_p: list[str] = []
    for group in groups:
        row = (
            base_all
            if group is base
            else _group_row(group, gain_metrics, value_ids, bootstrap_seed)
        )
        mine = dict(row.values)
        for attr in ("values", "ci95", "std", "per_seed"):  # shown columns only
            setattr(row, attr, {m: v for m, v in getattr(row, attr).items() if m in columns})
        row.is_baseline = group is base
        if base is not None and base_all is not None and group is not base:
            row.baseline = base.label
            for m in gain_metrics:
                if m in mine and m in base_values:
                    g = relative_gain(mine[m], base_values[m], hib_all[m])
                    if g is not None:
                        row.gain[m] = g
            row.avg_gain, row.avg_gain_metrics = _avg_gain(row.gain)
            row.gain = {m: g for m, g in row.gain.items() if m in columns}
            row.p_value, row.p_test, row.p_fallback = row_p_values(
                group, base, columns, ids=shared, seed=bootstrap_seed
            )
            if not row.p_value:
                no_p.append(group.label)
            row.p_adjusted = adjust_p_values(row.p_value, p_adjust)
        rows.append(row)
    if p_adjust_scope == "table":  # one Holm family: every p-value of the table
        family = {(i, m): p for i, r in enumerate(rows) for m, p in r.p_value.items()}
        adjusted = adjust_p_values(family, p_adjust)
        for i, r in enumerate(rows):
            r.p_adjusted = {m: adjusted[i, m] for m in r.p_value}
    fallback = [f"{r.label}: {', '.join(r.p_fallback)}" for r in rows if r.p_fallback]
    if fallback:
        notes.append(
            "per-seed values that do not vary (no seed spread to test against), so the "
            "two-level bootstrap over examples and seeds gives their p-values: "
            + "; ".join(fallback)
        )
    if base is not None:
        if no_p:
            notes.append(
                "no p-values for: " + "; ".join(no_p) + " (a run of the row or of the baseline "
                "has no example_scores.jsonl / example_stats.jsonl)"
            )
        partial = [r.label for r in rows if r.avg_gain is not None and len(r.avg_gain_metrics) < 10]
        if partial:
            notes.append(
                "AVG is the mean over fewer than the paper's ten metrics for: "
                + "; ".join(partial)
                + " (missing metrics, e.g. scored with --no-bertscore)"
            )
    if any(r.n_seeds > 1 for r in rows):
        few = [r.label for r in rows if 1 < r.n_seeds < 3 and (r.p_value or r.is_baseline)]
        notes.append(
            "rows over several seeds: mean ± sample std over the seeds (per-seed values in the "
            "json/csv output); their p-values account for the seed-to-seed variation"
            + (
                f"; with fewer than 3 seeds ({'; '.join(few)}) that variation is poorly estimated"
                if few
                else ""
            )
        )
    if any(r.method == "text-prompt" for r in rows):
        notes.append(
            "text-prompt answers in the chat model's cased, untokenised style while ConvAI2 "
            "references are lowercase and tokenised ('i am .'): F1 raw counts every case or "
            "punctuation difference as a miss, so F1 raw and AVG (which uses it) understate "
            "text-prompt; the normalised F1 does not."
        )

    for m in columns:
        if hib[m] is None:
            continue
        scored = [r for r in rows if m in r.values]
        if len(scored) < 2:
            continue
        # on the values as displayed (rounded), so rows that show the same value are all bold
        shown = {id(r): float(fmt_value(r.values[m])) for r in scored}
        best = (max if hib[m] else min)(shown.values())
        for r in scored:
            if shown[id(r)] == best:  # ties: all best
                r.best.append(m)

    if paper:
        rows += _paper_rows(columns)
        notes.append(
            f"paper rows: published figures from {PAPER_CITATION}, computed with the authors' "
            "conventions on the full ConvAI2 valid set with OPT/Llama-2 backbones: their F1 is "
            f"unnormalised (our f1_raw), their BERTScore used {PAPER_BERTSCORE_MODEL}; they are "
            "not directly comparable to our runs, have no CIs, and are excluded from 'best'. "
            "Their gains are SPT vs PT on the same backbone."
        )
        ours = sorted({r.n for r in rows if r.source == "run" and r.n})
        far = [
            n
            for n in ours
            if max(n, PAPER_N_EXAMPLES) > CORPUS_SIZE_FACTOR * min(n, PAPER_N_EXAMPLES)
        ]
        flagged = [m for m in DIST_METRICS if m in columns]
        if far and flagged:
            for r in rows:
                if r.source == "paper":
                    r.flags.update({m: DIST_FLAG for m in flagged if m in r.values})
            notes.append(
                f"{DIST_FLAG} Dist-n depends on corpus size (more responses repeat more "
                f"n-grams): the paper's values are over {PAPER_N_EXAMPLES:,} responses, our "
                f"runs over {', '.join(f'{n:,}' for n in ours)} (more than "
                f"{CORPUS_SIZE_FACTOR:g}x apart), so Dist-n is not comparable between them."
            )
    return Comparison(
        metrics=columns,
        higher_is_better=hib,
        rows=rows,
        baseline=base.label if base else None,
        notes=notes,
        p_adjust=p_adjust,
        compact=compact,
        p_adjust_scope=p_adjust_scope,
    )


def _paper_rows(columns: Sequence[str]) -> list[ComparisonRow]:
    published = load_paper_results()
    pt_by_model = {r.model: r for r in published if r.method == "PT"}
    rows = []
    for rec in published:
        row = ComparisonRow(
            label=rec.label,
            source="paper",
            values={m: v for m, v in rec.values.items() if m in columns},
            method=rec.our_method,
            model=rec.model,
            n=PAPER_N_EXAMPLES,
            bertscore_model=PAPER_BERTSCORE_MODEL,
        )
        pt = pt_by_model.get(rec.model)
        if rec.method != "PT" and pt is not None:
            row.baseline = pt.label
            gains = {
                m: g
                for m in PAPER_AVG_METRICS
                if (g := relative_gain(rec.values[m], pt.values[m], True)) is not None
            }
            row.avg_gain, row.avg_gain_metrics = _avg_gain(gains)
            row.gain = {m: g for m, g in gains.items() if m in columns}
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------ rendering

# One precision rule for every human-readable table (compare's md/latex/rich and each run's
# report.md): 2 decimals (metrics are on a 0-100 scale, so 0.01 points), p-values 3 decimals.
DECIMALS = 2


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def fmt_value(x: float | None) -> str:
    return "" if x is None else f"{x:.{DECIMALS}f}"


def fmt_gain(x: float | None) -> str:
    return "" if x is None else f"{x:+.{DECIMALS}f}"


def fmt_interval(lo: float, hi: float) -> str:
    return f"[{fmt_value(lo)}, {fmt_value(hi)}]"


def fmt_p(p: float | None) -> str:
    """'p=0.012', or 'p<0.001' below the resolution worth printing."""
    if p is None:
        return ""
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def _header(metric: str) -> str:
    return SHORT_NAMES.get(metric, metric)


def _hib_arrow(c: Comparison, metric: str) -> str:
    hib = c.higher_is_better.get(metric)
    return "" if hib is None else ("↑" if hib else "↓")


def _has_gains(c: Comparison) -> bool:
    return any(r.gain or r.avg_gain is not None for r in c.rows)


def _spread(c: Comparison, r: ComparisonRow, m: str) -> str:
    """What follows a value: its CI in brackets, or ± the std over seeds; '' when compact."""
    if c.compact:
        return ""
    if m in r.std:
        return f"±{fmt_value(r.std[m])}"
    if m in r.ci95:
        return fmt_interval(*r.ci95[m])
    return ""


def _shown_p(c: Comparison, r: ComparisonRow, m: str) -> float | None:
    return (r.p_adjusted or r.p_value).get(m) if c.p_adjust != "none" else r.p_value.get(m)


def _legend_lines(c: Comparison) -> list[str]:
    spread = (
        ""
        if c.compact
        else "brackets: 95% bootstrap CI (± sample std over seeds for rows of several seeds); "
    )
    lines = [
        f"Values x100 (except Len/PPL); {spread}best run per column in bold, ties all bold "
        "(↑ higher is better, ↓ lower is better).",
        "F1 = ParlAI-normalised token F1; F1 raw = unnormalised (the SPT paper's F1).",
    ]
    if _has_gains(c):
        n_tested = max((len(r.p_value) for r in c.rows), default=0)
        if c.p_adjust != "holm":
            adjust = "not adjusted for multiple comparisons"
        elif c.p_adjust_scope == "table":
            total = sum(len(r.p_value) for r in c.rows)
            adjust = (
                f"Holm-adjusted across all {total} p-values of the table (raw values in json/csv)"
            )
        else:
            adjust = (
                f"Holm-adjusted across the {n_tested} metrics of each row (raw values in json/csv)"
            )
        line = (
            "Gain = relative change vs the baseline in % (positive = better); AVG = mean gain over "
            "the paper's ten metrics (F1 raw, BLEU, R-1/2/L, BS-F1/P/R, Dist-1/2)"
        )
        if n_tested:
            line += f"; p = p-value vs the baseline by {_tests_text(c)}, {adjust}; "
            line += "* p<0.05, ** p<0.01"
        lines.append(line + ".")
    return lines + c.notes


def _tests_text(c: Comparison) -> str:
    """Which test gave each row's p-values: one name when all rows share it, else the rows of
    each test."""
    by_test: dict[str, list[str]] = {}
    for r in c.rows:
        if r.p_value and r.p_test:
            by_test.setdefault(r.p_test, []).append(r.label)
    if len(by_test) == 1:
        return P_TEST_TEXT[next(iter(by_test))]
    return ", by ".join(
        f"{P_TEST_TEXT[test]} (rows: {'; '.join(labels)})" for test, labels in by_test.items()
    )


def _value_cell(c: Comparison, r: ComparisonRow, m: str, bold: Callable[[str], str]) -> str:
    v = r.values.get(m)
    if v is None:
        return ""
    cell = fmt_value(v) + r.flags.get(m, "")
    if m in r.best:
        cell = bold(cell)
    spread = _spread(c, r, m)
    return f"{cell} {spread}" if spread else cell


def fmt_params(n: int | None) -> str:
    """Trainable-parameter count, short: 4608, 92.2K, 2.26M."""
    if n is None:
        return ""
    if n < 1000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1e3:.1f}K"
    return f"{n / 1e6:.2f}M"


def _has_params(c: Comparison) -> bool:
    return any(r.trainable_params is not None for r in c.rows)


def render_markdown(c: Comparison) -> str:
    params = _has_params(c)
    head = "| Run | " + ("Trainable | " if params else "")
    out = [head + " | ".join(f"{_header(m)} {_hib_arrow(c, m)}".strip() for m in c.metrics)]
    out[0] += " |"
    out.append("|---|" + ("---:|" if params else "") + "---:|" * len(c.metrics))
    for r in c.rows:
        cells = [_value_cell(c, r, m, lambda s: f"**{s}**") or "–" for m in c.metrics]
        label = r.label + (" (baseline)" if r.is_baseline else "")
        if params:
            cells.insert(0, fmt_params(r.trainable_params) or "–")
        out.append(f"| {_md_escape(label)} | " + " | ".join(cells) + " |")
    if _has_gains(c):
        out += ["", f"Relative gain (%) vs baseline: {_md_escape(c.baseline or 'paper PT')}", ""]
        out.append("| Run | vs | " + " | ".join(_header(m) for m in c.metrics) + " | AVG |")
        out.append("|---|---|" + "---:|" * (len(c.metrics) + 1))
        for r in c.rows:
            if r.baseline is None:
                continue
            cells = []
            for m in c.metrics:
                g = r.gain.get(m)
                if g is None:
                    cells.append("–")
                    continue
                p = _shown_p(c, r, m)
                cell = fmt_gain(g) + significance_mark(p)
                if p is not None and not c.compact:
                    cell += f" ({fmt_p(p)})"
                cells.append(cell)
            cells.append(fmt_gain(r.avg_gain) or "–")
            out.append(
                f"| {_md_escape(r.label)} | {_md_escape(r.baseline)} | " + " | ".join(cells) + " |"
            )
    out.append("")
    out += [f"- {_md_escape(line)}" for line in _legend_lines(c)]
    return "\n".join(out) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


CSV_ID_FIELDS = (
    "label",
    "source",
    "path",
    "method",
    "model",
    "seed",
    "seeds",
    "n_seeds",
    "n",
    "trainable_params",
    "is_baseline",
)


def render_csv(c: Comparison) -> str:
    """Wide CSV at full precision: one row per table row; per metric value, CI, std and
    per-seed values (';'-separated, in the order of `seeds`), gain, raw and adjusted p."""
    header = list(CSV_ID_FIELDS)
    for m in c.metrics:
        header += [m, f"{m}_ci_low", f"{m}_ci_high", f"{m}_std", f"{m}_per_seed"]
    header += ["baseline"]
    for m in c.metrics:
        header += [f"{m}_gain_pct", f"{m}_p", f"{m}_p_adj"]
    header += ["avg_gain_pct"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for r in c.rows:
        rec: list[Any] = [
            r.label,
            r.source,
            r.path or "",
            r.method or "",
            r.model or "",
            "" if r.seed is None else r.seed,
            ";".join(str(s) for s in r.seeds),
            r.n_seeds,
            "" if r.n is None else r.n,
            "" if r.trainable_params is None else r.trainable_params,
            int(r.is_baseline),
        ]
        for m in c.metrics:
            lo, hi = r.ci95.get(m, (None, None))
            rec += [_csv_num(r.values.get(m)), _csv_num(lo), _csv_num(hi)]
            rec += [_csv_num(r.std.get(m)), ";".join(_csv_num(v) for v in r.per_seed.get(m, []))]
        rec.append(r.baseline or "")
        for m in c.metrics:
            rec += [_csv_num(r.gain.get(m)), _csv_num(r.p_value.get(m))]
            rec.append(_csv_num(r.p_adjusted.get(m)))
        rec.append(_csv_num(r.avg_gain))
        writer.writerow(rec)
    return buf.getvalue()


def _csv_num(x: float | None) -> str:
    return "" if x is None else repr(float(x))


def render_json(c: Comparison) -> str:
    return json.dumps(c.to_json(), indent=2, ensure_ascii=False) + "\n"


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "†": r"$^\dagger$",
}


def _tex(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def render_latex(c: Comparison) -> str:
    """booktabs tables: values (best bold, CI or ±std as a small subscript unless compact) and
    gains with marks. Pick columns with `metrics` (--metric) to fit a paper column."""
    arrows = {True: r"$\uparrow$", False: r"$\downarrow$", None: ""}
    params = _has_params(c)
    lines = [
        "% spt-bench compare; needs \\usepackage{booktabs}",
        r"\begin{tabular}{l" + "r" * (len(c.metrics) + params) + "}",
        r"\toprule",
        "Run & "
        + ("Trainable & " if params else "")
        + " & ".join(f"{_tex(_header(m))}{arrows[c.higher_is_better.get(m)]}" for m in c.metrics)
        + r" \\",
        r"\midrule",
    ]
    paper_started = False
    for r in c.rows:
        if r.source == "paper" and not paper_started:
            lines.append(r"\midrule")
            paper_started = True
        cells = []
        for m in c.metrics:
            v = r.values.get(m)
            if v is None:
                cells.append("--")
                continue
            cell = fmt_value(v) + _tex(r.flags.get(m, ""))
            if m in r.best:
                cell = rf"\textbf{{{cell}}}"
            spread = _spread(c, r, m)
            if spread:
                spread = spread.replace("±", r"\pm ").replace(" ", "")
                cell += rf"$_{{{spread}}}$"
            cells.append(cell)
        label = r.label + (" (baseline)" if r.is_baseline else "")
        if params:
            cells.insert(0, fmt_params(r.trainable_params) or "--")
        lines.append(_tex(label) + " & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if _has_gains(c):
        adjusted = ""
        if c.p_adjust == "holm":
            adjusted = ", Holm-adjusted " + (
                "per row" if c.p_adjust_scope == "row" else "per table"
            )
        lines += [
            "",
            f"% relative gain (%) vs baseline; * p<0.05, ** p<0.01 (see the legend{adjusted})",
            r"\begin{tabular}{l" + "r" * (len(c.metrics) + 1) + "}",
            r"\toprule",
            "Run & " + " & ".join(_tex(_header(m)) for m in c.metrics) + r" & AVG \\",
            r"\midrule",
        ]
        for r in c.rows:
            if r.baseline is None:
                continue
            cells = []
            for m in c.metrics:
                g = r.gain.get(m)
                mark = significance_mark(_shown_p(c, r, m))
                cells.append(
                    "--" if g is None else fmt_gain(g) + (f"$^{{{mark}}}$" if mark else "")
                )
            cells.append(fmt_gain(r.avg_gain) or "--")
            lines.append(_tex(f"{r.label} vs {r.baseline}") + " & " + " & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
    lines += ["", *[f"% {line}" for line in _legend_lines(c)]]
    return "\n".join(lines) + "\n"


def render_rich(c: Comparison, console: Any) -> None:
    """Print the comparison as rich tables (values with CIs, then gains with p-values)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Comparison", title_style="bold", show_lines=False)
    table.add_column("Run", overflow="fold", min_width=14)
    params = _has_params(c)
    if params:
        table.add_column("Trainable", justify="right")
    for m in c.metrics:
        table.add_column(f"{_header(m)}{_hib_arrow(c, m)}", justify="right")
    last_run = max((i for i, r in enumerate(c.rows) if r.source == "run"), default=-1)
    for i, r in enumerate(c.rows):
        cells = []
        for m in c.metrics:
            v = r.values.get(m)
            if v is None:
                cells.append(Text("–", style="dim"))
                continue
            t = Text(fmt_value(v) + r.flags.get(m, ""), style="bold green" if m in r.best else "")
            spread = _spread(c, r, m)
            if spread:
                t.append(f"\n{spread}", style="dim")
            cells.append(t)
        label = Text(r.label, style="italic" if r.source == "paper" else "")
        if r.is_baseline:
            label.append(" (baseline)", style="cyan")
        if params:
            cells.insert(0, Text(fmt_params(r.trainable_params) or "–", style="dim"))
        table.add_row(label, *cells, end_section=i == last_run)
    _print_whole(console, table)
    if _has_gains(c):
        gains = Table(title="Relative gain (%) vs baseline", title_style="bold")
        gains.add_column("Run", overflow="fold", min_width=14)
        gains.add_column("vs", overflow="fold")
        for m in c.metrics:
            gains.add_column(_header(m), justify="right")
        gains.add_column("AVG", justify="right", style="bold")
        for r in c.rows:
            if r.baseline is None:
                continue
            cells = []
            for m in c.metrics:
                g = r.gain.get(m)
                if g is None:
                    cells.append(Text("–", style="dim"))
                    continue
                p = _shown_p(c, r, m)
                t = Text(fmt_gain(g) + significance_mark(p), style="green" if g > 0 else "red")
                if p is not None and not c.compact:
                    t.append(f"\n{fmt_p(p)}", style="dim")
                cells.append(t)
            cells.append(Text(fmt_gain(r.avg_gain) or "–"))
            gains.add_row(r.label, r.baseline, *cells)
        _print_whole(console, gains)
    for line in _legend_lines(c):
        console.print(Text(line, style="dim"), soft_wrap=not console.is_terminal)


def _print_whole(console: Any, table: Any) -> None:
    """Print a table; off a terminal (a log, a pipe, a file) at its natural width, so rich never
    shortens a label or a number to fit 80 columns ("…")."""
    if console.is_terminal:
        console.print(table)
        return
    from rich.measure import Measurement

    natural = Measurement.get(console, console.options.update_width(100_000), table).maximum
    width = console.width
    console.width = max(width, natural)  # print() caps its width at the console's
    try:
        console.print(table)
    finally:
        console.width = width


RENDERERS: dict[str, Callable[[Comparison], str]] = {
    "md": render_markdown,
    "csv": render_csv,
    "json": render_json,
    "latex": render_latex,
}


def render(c: Comparison, fmt: str) -> str:
    """Render to text in one of md/csv/json/latex (rich goes through render_rich)."""
    if fmt == "rich":
        from rich.console import Console

        buf = io.StringIO()
        render_rich(c, Console(file=buf, width=200, force_terminal=False, color_system=None))
        return buf.getvalue()
    try:
        return RENDERERS[fmt](c)
    except KeyError:
        raise SptBenchError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}") from None


def format_from_path(path: str | os.PathLike) -> str | None:
    return SUFFIX_FORMATS.get(Path(path).suffix.lower())


def output_format(fmt: str | None, out: str | os.PathLike | None) -> str:
    """The format to write: --format, else --out's suffix, else rich. An unknown --out suffix
    without --format, or a --format that contradicts a known suffix, is refused."""
    if fmt is not None and fmt not in FORMATS:
        raise SptBenchError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if out is None:
        return fmt or "rich"
    inferred = format_from_path(out)
    if fmt is None:
        if inferred is None:
            suffix = Path(out).suffix or "(none)"
            raise SptBenchError(
                f"--out {out}: unknown file type {suffix}; use "
                f"{' '.join(SUFFIX_FORMATS)} or give --format"
            )
        return inferred
    if inferred is not None and inferred != fmt:
        raise SptBenchError(f"--out {out} is a {inferred} file but --format is {fmt}")
    return fmt


def compare_command(
    specs: Sequence[str | os.PathLike],
    *,
    baseline: str | None = None,
    fmt: str | None = None,
    out: str | os.PathLike | None = None,
    paper: bool = False,
    force: bool = False,
    metrics: Sequence[str] | None = None,
    p_adjust: str = "holm",
    per_seed: bool = False,
    compact: bool = False,
    console: Any = None,
    p_adjust_scope: str = "row",
    err: Callable[[str], None] | None = None,
) -> Comparison:
    """What `spt-bench compare` does: load, check, compare, then print or write one format.

    The format is --format, else the --out suffix (.md .csv .json .tex .txt), else rich on the
    terminal. Warnings (incomplete runs, forced comparisons) go to `err` (stderr in the CLI) so
    machine formats on stdout stay parseable.
    """
    import sys

    def warn(message: str) -> None:
        (err or (lambda m: print(m, file=sys.stderr)))(f"warning: {message}")

    fmt = output_format(fmt, out)
    runs = load_runs(specs, warn=warn)
    comparison = build_comparison(
        runs,
        baseline=baseline,
        force=force,
        paper=paper,
        metrics=metrics,
        p_adjust=p_adjust,
        group_seeds=not per_seed,
        compact=compact,
        p_adjust_scope=p_adjust_scope,
    )
    for note in comparison.notes:
        if note.startswith("forced:"):
            warn(note)
    if out is not None:
        from spt_bench.io import atomic_write_text

        atomic_write_text(out, render(comparison, fmt))
        (err or (lambda m: print(m, file=sys.stderr)))(f"wrote {out} ({fmt})")
    elif fmt == "rich":
        if console is None:
            from rich.console import Console

            console = Console()
        render_rich(comparison, console)
    else:
        sys.stdout.write(render(comparison, fmt))
    return comparison
