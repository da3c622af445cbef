"""`spt-bench compare`: runs as rows, metrics as columns, with CIs, gains and significance.

Reads only finished run folders (those with `metrics.json`); every number shown comes from a
run's `metrics.json` (values, CIs) or is computed here from its `example_scores.jsonl` (paired
bootstrap p-values), so each cell traces back to files in the run folder.

Definitions (also in docs/reports.md):
- relative gain of a run over the baseline, per metric, in percent:
  100 * (run - baseline) / |baseline|, sign-flipped for lower-is-better metrics so that a
  positive gain always means "better"; undefined when the baseline value is 0.
- AVG: the SPT paper's summary figure, the mean relative gain over its ten metrics
  (F1, BLEU, ROUGE-1/2/L, BERTScore F1/P/R, Dist-1/2). The paper's F1 is unnormalised, so AVG
  uses our `f1_raw` (not the ParlAI-normalised `f1`).
- p-values: paired bootstrap over the examples both runs scored (metrics.paired_bootstrap);
  `*` marks p < 0.05 and `**` p < 0.01.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spt_bench.errors import InputError, SptBenchError
from spt_bench.io import read_jsonl
from spt_bench.paper import (
    PAPER_AVG_METRICS,
    PAPER_BERTSCORE_MODEL,
    PAPER_CITATION,
    load_paper_results,
)

FORMATS = ("rich", "md", "csv", "json", "latex")

# Default columns, in display order: ours (`f1`) then the paper's ten. Extra model metrics
# (issue 7) are appended when a run has them.
DEFAULT_METRICS: tuple[str, ...] = ("f1", *PAPER_AVG_METRICS)
EXTRA_METRICS: tuple[str, ...] = ("ppl", "hits@1")

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
VARYING_FIELDS: tuple[str, ...] = (
    "model",
    "seed",
    "max_steps",
    "epochs",
    "lr",
    "train_limit",
    "decoding",
)


class ComparisonRefused(SptBenchError):
    """Runs that cannot be compared fairly (different examples or BERTScore encoders)."""


# ------------------------------------------------------------------------------------ run folders


@dataclass
class RunRecord:
    """A finished run folder: its resolved config and metrics.json (example scores lazily)."""

    path: Path
    config: dict
    metrics: dict
    label: str = ""
    _example_scores: list[dict] | None = field(default=None, repr=False)
    _ids: frozenset[str] | None = field(default=None, repr=False)

    @property
    def method(self) -> str:
        method = self.config.get("method") or self.metrics.get("method")
        if isinstance(method, dict):  # metrics.json keeps the method's summary under "method"
            method = method.get("method")
        return str(method or self.path.name)

    @property
    def model(self) -> str | None:
        model = self.config.get("model")
        if isinstance(model, dict):
            model = model.get("name") or model.get("name_or_path")
        return None if model is None else str(model)

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

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
        per_method = (self.config.get("methods") or {}).get(self.method)
        for layer in (per_method, self.config.get("method_options")):
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
    def example_scores(self) -> list[dict]:
        if self._example_scores is None:
            path = self.path / "example_scores.jsonl"
            if not path.is_file():
                raise InputError(path, None, "missing: needed for paired bootstrap p-values")
            self._example_scores = list(read_jsonl(path))
        return self._example_scores

    @property
    def example_ids(self) -> frozenset[str]:
        """Ids of the scored examples (example_scores.jsonl, else predictions.jsonl)."""
        if self._ids is None:
            for name in ("example_scores.jsonl", "predictions.jsonl"):
                path = self.path / name
                if path.is_file():
                    self._ids = frozenset(str(r["id"]) for r in _rows_with_id(path))
                    break
            else:
                raise InputError(
                    self.path, None, "has neither example_scores.jsonl nor predictions.jsonl"
                )
        return self._ids


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
                if path.name == "metrics.json":
                    path = path.parent
                else:
                    raise InputError(path, None, "expected a run folder (or its metrics.json)")
            _collect_runs(path, found, notes)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique, notes


def _collect_runs(folder: Path, found: list[Path], notes: list[str]) -> None:
    if (folder / "metrics.json").is_file():
        found.append(folder)
        return
    if (folder / "config.json").is_file():
        notes.append(f"{folder}: incomplete run (no metrics.json), ignored")
        return
    for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        _collect_runs(child, found, notes)


def load_run(path: str | os.PathLike) -> RunRecord:
    """Read a finished run folder; malformed files raise InputError naming the file."""
    path = Path(path)
    metrics = _read_json(path / "metrics.json")
    if not isinstance(metrics.get("overall"), dict):
        raise InputError(path / "metrics.json", None, "no 'overall' metrics object")
    config_path = path / "config.json"
    config = _read_json(config_path) if config_path.is_file() else {}
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
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, None, "file not found") from None
    except UnicodeDecodeError:
        raise InputError(path, None, "invalid UTF-8") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(path, e.lineno, f"invalid JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise InputError(path, None, "expected a JSON object")
    return obj


# ------------------------------------------------------------------------------------ labels


def _fmt_setting(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str) and ("/" in value or os.sep in value):
        return Path(value).name
    return str(value)


def assign_labels(runs: Sequence[RunRecord]) -> None:
    """Name each run by method + key settings, adding settings that differ between runs of the
    same method (model, seed, steps, method options) and finally the folder name if two runs
    would still share a label."""
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
            f for f in VARYING_FIELDS if len({_freeze(r.config.get(f)) for r in group}) > 1
        ]
        for run in group:
            parts = [
                f"{KEY_OPTIONS[k]}={_fmt_setting(v)}"
                for k, v in run.method_options.items()
                if k in KEY_OPTIONS
            ]
            parts += [f"{k}={_fmt_setting(run.method_options.get(k))}" for k in varying_opts]
            parts += [f"{f}={_fmt_setting(run.config.get(f))}" for f in varying_fields]
            run.label = method + (f" ({', '.join(parts)})" if parts else "")
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.label] = counts.get(run.label, 0) + 1
    for run in runs:
        if counts[run.label] > 1:
            run.label = f"{run.label} [{run.path.name}]"


def _freeze(value: Any) -> Any:
    return json.dumps(value, sort_keys=True, default=str)


# ------------------------------------------------------------------------------------ comparison


@dataclass
class ComparisonRow:
    label: str
    source: str  # "run" or "paper"
    values: dict[str, float]
    ci95: dict[str, tuple[float, float]] = field(default_factory=dict)
    gain: dict[str, float] = field(default_factory=dict)  # relative gain (%) vs `baseline`
    p_value: dict[str, float] = field(default_factory=dict)
    avg_gain: float | None = None
    avg_gain_metrics: list[str] = field(default_factory=list)
    baseline: str | None = None  # label of what `gain` is relative to
    is_baseline: bool = False
    best: list[str] = field(default_factory=list)  # columns where this row is best
    path: str | None = None
    method: str | None = None
    model: str | None = None
    seed: Any = None
    n: int | None = None
    bertscore_model: str | None = None
    trainable_params: int | None = None  # from metrics.json's method summary

    def to_json(self) -> dict:
        return {
            "label": self.label,
            "source": self.source,
            "path": self.path,
            "method": self.method,
            "model": self.model,
            "seed": self.seed,
            "n": self.n,
            "bertscore_model": self.bertscore_model,
            "trainable_params": self.trainable_params,
            "is_baseline": self.is_baseline,
            "values": self.values,
            "ci95": {k: list(v) for k, v in self.ci95.items()},
            "baseline": self.baseline,
            "gain_pct": self.gain,
            "p_value": self.p_value,
            "avg_gain_pct": self.avg_gain,
            "avg_gain_metrics": self.avg_gain_metrics,
            "best": self.best,
        }


@dataclass
class Comparison:
    metrics: list[str]
    higher_is_better: dict[str, bool | None]
    rows: list[ComparisonRow]
    baseline: str | None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "metrics": self.metrics,
            "higher_is_better": self.higher_is_better,
            "baseline": self.baseline,
            "avg_metrics": list(PAPER_AVG_METRICS),
            "significance": {mark: level for level, mark in SIGNIFICANCE},
            "rows": [r.to_json() for r in self.rows],
            "notes": self.notes,
        }


def resolve_baseline(runs: list[RunRecord], baseline: str) -> RunRecord:
    """A baseline given as a run folder (added to the rows if not listed), a run label or a
    method name that names exactly one of the runs."""
    path = Path(baseline)
    if path.is_dir():
        target = path.resolve()
        for run in runs:
            if run.path.resolve() == target:
                return run
        if not (path / "metrics.json").is_file():
            raise InputError(path, None, "baseline run is incomplete (no metrics.json)")
        run = load_run(path)
        runs.insert(0, run)
        assign_labels(runs)
        return run
    for key in (lambda r: r.label, lambda r: r.method):
        matches = [r for r in runs if key(r) == baseline]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = "; ".join(str(r.path) for r in matches)
            raise SptBenchError(
                f"--baseline {baseline!r} matches {len(matches)} runs ({names}); "
                "give the baseline's run folder instead"
            )
    raise SptBenchError(
        f"--baseline {baseline!r} is neither a run folder nor the method/label of a listed run "
        f"(labels: {', '.join(r.label for r in runs)})"
    )


def check_comparable(
    runs: Sequence[RunRecord], *, force: bool = False, reference: RunRecord | None = None
) -> list[str]:
    """Refuse (ComparisonRefused) runs scored on different example sets or BERTScore encoders,
    unless `force`; returns the notes to print (including the forced mismatches)."""
    notes: list[str] = []
    problems: list[str] = []
    reference = reference or runs[0]
    ref_ids = reference.example_ids
    for run in runs:
        if run is reference:
            continue
        ids = run.example_ids
        if ids != ref_ids:
            shared = len(ids & ref_ids)
            problems.append(
                f"runs were scored on different example sets: {run.label} ({run.path}) has "
                f"{len(ids)} examples, {reference.label} ({reference.path}) has {len(ref_ids)}, "
                f"{shared} shared"
            )
    encoders = {r.bertscore_encoder for r in runs if r.bertscore_encoder is not None}
    if len(encoders) > 1:
        listing = "; ".join(
            f"{r.label}: {r.bertscore_encoder[0]} layer {r.bertscore_encoder[1]}"
            for r in runs
            if r.bertscore_encoder is not None
        )
        problems.append(f"runs used different BERTScore encoders ({listing})")
    if problems and not force:
        raise ComparisonRefused(
            problems[0]
            + (f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else "")
            + "; such numbers are not comparable - pass --force to compare anyway"
        )
    notes += [f"forced: {p}" for p in problems]
    if any(m in r.overall for r in runs for m in ("ppl",)):
        models = sorted({str(r.model) for r in runs if "ppl" in r.overall})
        if len(models) > 1:
            notes.append(
                "ppl is comparable only between runs that share a tokenizer; these runs use "
                + ", ".join(models)
            )
    return notes


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


def paired_p_values(
    run: RunRecord, baseline: RunRecord, metric_names: Sequence[str], *, seed: int = 0
) -> dict[str, float]:
    """Paired bootstrap p-values of `run` vs `baseline` over the examples both scored."""
    from metrics import paired_bootstrap

    base_rows = {str(r["id"]): r for r in baseline.example_scores}
    run_rows = [r for r in run.example_scores if str(r["id"]) in base_rows]
    if not run_rows:
        return {}
    a = run_rows
    b = [base_rows[str(r["id"])] for r in run_rows]
    result = paired_bootstrap(a, b, seed=seed)
    return {m: p for m, p in _extract_p_values(result).items() if m in metric_names}


def _extract_p_values(result: Any) -> dict[str, float]:
    """Accept metrics.paired_bootstrap's result: {metric: p} or {metric: {"p_value": p, ...}}."""
    if hasattr(result, "to_json"):
        result = result.to_json()
    if isinstance(result, dict) and isinstance(result.get("p_value"), dict):
        return {k: float(v) for k, v in result["p_value"].items() if _is_number(v)}
    out: dict[str, float] = {}
    if isinstance(result, dict):
        for metric, entry in result.items():
            if _is_number(entry):
                out[metric] = float(entry)
            elif isinstance(entry, dict):
                p = entry.get("p_value", entry.get("p"))
                if _is_number(p):
                    out[metric] = float(p)
            elif hasattr(entry, "p_value"):
                out[metric] = float(entry.p_value)
    return out


def build_comparison(
    runs: list[RunRecord],
    *,
    baseline: str | None = None,
    force: bool = False,
    paper: bool = False,
    metrics: Sequence[str] | None = None,
    bootstrap_seed: int = 0,
) -> Comparison:
    """Compare finished runs (see the module docstring for the definitions used)."""
    if not runs:
        raise SptBenchError("nothing to compare: no runs")
    runs = list(runs)
    if not all(r.label for r in runs):
        assign_labels(runs)
    base_run = resolve_baseline(runs, baseline) if baseline else None
    notes = check_comparable(runs, force=force, reference=base_run)

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

    rows: list[ComparisonRow] = []
    for run in runs:
        row = ComparisonRow(
            label=run.label,
            source="run",
            values={m: float(run.overall[m]) for m in columns if m in run.overall},
            ci95={
                m: (float(run.ci95[m][0]), float(run.ci95[m][1]))
                for m in columns
                if m in run.ci95 and run.ci95[m] is not None and len(run.ci95[m]) == 2
            },
            path=str(run.path),
            method=run.method,
            model=run.model,
            seed=run.seed,
            n=run.metrics.get("n"),
            bertscore_model=run.metrics.get("bertscore_model"),
            trainable_params=run.trainable_params,
            is_baseline=run is base_run,
        )
        if base_run is not None and run is not base_run:
            row.baseline = base_run.label
            gain_metrics = list(dict.fromkeys([*columns, *PAPER_AVG_METRICS]))
            for m in gain_metrics:
                if m in run.overall and m in base_run.overall:
                    g = relative_gain(
                        run.overall[m], base_run.overall[m], _higher_is_better(runs, m)
                    )
                    if g is not None:
                        row.gain[m] = g
            row.avg_gain, row.avg_gain_metrics = _avg_gain(row.gain)
            row.gain = {m: g for m, g in row.gain.items() if m in columns}
            row.p_value = paired_p_values(run, base_run, columns, seed=bootstrap_seed)
        rows.append(row)
    if base_run is not None:
        partial = [r.label for r in rows if r.avg_gain is not None and len(r.avg_gain_metrics) < 10]
        if partial:
            notes.append(
                "AVG is the mean over fewer than the paper's ten metrics for: "
                + "; ".join(partial)
                + " (missing metrics, e.g. scored with --no-bertscore)"
            )

    for m in columns:
        if hib[m] is None:
            continue
        scored = [r for r in rows if m in r.values]
        if len(scored) < 2:
            continue
        if len({r.values[m] for r in scored}) == 1:
            continue  # all equal: nothing to single out
        best = (max if hib[m] else min)(r.values[m] for r in scored)
        for r in scored:
            if r.values[m] == best:
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
    return Comparison(
        metrics=columns,
        higher_is_better=hib,
        rows=rows,
        baseline=base_run.label if base_run else None,
        notes=notes,
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


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def fmt_value(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}"


def fmt_gain(x: float | None) -> str:
    return "" if x is None else f"{x:+.2f}"


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


def _legend_lines(c: Comparison) -> list[str]:
    lines = [
        "Values x100 (except Len/PPL); brackets: 95% bootstrap CI; best run per column in bold "
        "(↑ higher is better, ↓ lower is better).",
        "F1 = ParlAI-normalised token F1; F1 raw = unnormalised (the SPT paper's F1).",
    ]
    if _has_gains(c):
        lines.append(
            "Gain = relative change vs the baseline in % (positive = better); AVG = mean gain over "
            "the paper's ten metrics (F1 raw, BLEU, R-1/2/L, BS-F1/P/R, Dist-1/2); p = paired "
            "bootstrap p-value vs the baseline, * p<0.05, ** p<0.01."
        )
    return lines + c.notes


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
        cells = []
        for m in c.metrics:
            v = r.values.get(m)
            cell = fmt_value(v)
            if v is not None and m in r.best:
                cell = f"**{cell}**"
            if m in r.ci95:
                lo, hi = r.ci95[m]
                cell += f" [{lo:.2f}, {hi:.2f}]"
            cells.append(cell or "–")
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
                p = r.p_value.get(m)
                cell = fmt_gain(g) + significance_mark(p)
                if p is not None:
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
    "label", "source", "path", "method", "model", "seed", "n", "trainable_params", "is_baseline"
)  # fmt: skip


def render_csv(c: Comparison) -> str:
    """Wide CSV at full precision: one row per run; per metric value, CI, gain and p-value."""
    header = list(CSV_ID_FIELDS)
    for m in c.metrics:
        header += [m, f"{m}_ci_low", f"{m}_ci_high"]
    header += ["baseline"]
    for m in c.metrics:
        header += [f"{m}_gain_pct", f"{m}_p"]
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
            "" if r.n is None else r.n,
            "" if r.trainable_params is None else r.trainable_params,
            int(r.is_baseline),
        ]
        for m in c.metrics:
            lo, hi = r.ci95.get(m, (None, None))
            rec += [_csv_num(r.values.get(m)), _csv_num(lo), _csv_num(hi)]
        rec.append(r.baseline or "")
        for m in c.metrics:
            rec += [_csv_num(r.gain.get(m)), _csv_num(r.p_value.get(m))]
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
}


def _tex(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def render_latex(c: Comparison) -> str:
    """booktabs tables: values (best bold, CI as a small subscript) and gains with marks."""
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
            cell = fmt_value(v)
            if m in r.best:
                cell = rf"\textbf{{{cell}}}"
            if m in r.ci95:
                lo, hi = r.ci95[m]
                cell += rf"$_{{[{lo:.2f},{hi:.2f}]}}$"
            cells.append(cell)
        label = r.label + (" (baseline)" if r.is_baseline else "")
        if params:
            cells.insert(0, fmt_params(r.trainable_params) or "--")
        lines.append(_tex(label) + " & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if _has_gains(c):
        lines += [
            "",
            "% relative gain (%) vs baseline; * p<0.05, ** p<0.01 (paired bootstrap)",
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
                mark = significance_mark(r.p_value.get(m))
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
            t = Text(fmt_value(v), style="bold green" if m in r.best else "")
            if m in r.ci95:
                lo, hi = r.ci95[m]
                t.append(f"\n{lo:.1f}–{hi:.1f}", style="dim")
            cells.append(t)
        label = Text(r.label, style="italic" if r.source == "paper" else "")
        if r.is_baseline:
            label.append(" (baseline)", style="cyan")
        if params:
            cells.insert(0, Text(fmt_params(r.trainable_params) or "–", style="dim"))
        table.add_row(label, *cells, end_section=i == last_run)
    console.print(table)
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
                p = r.p_value.get(m)
                t = Text(fmt_gain(g) + significance_mark(p), style="green" if g > 0 else "red")
                if p is not None:
                    t.append(f"\n{fmt_p(p)}", style="dim")
                cells.append(t)
            cells.append(Text(fmt_gain(r.avg_gain) or "–"))
            gains.add_row(r.label, r.baseline, *cells)
        console.print(gains)
    for line in _legend_lines(c):
        console.print(Text(line, style="dim"))


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
    suffix = Path(path).suffix.lower()
    return {".md": "md", ".csv": "csv", ".json": "json", ".tex": "latex", ".txt": "rich"}.get(
        suffix
    )


def compare_command(
    specs: Sequence[str | os.PathLike],
    *,
    baseline: str | None = None,
    fmt: str | None = None,
    out: str | os.PathLike | None = None,
    paper: bool = False,
    force: bool = False,
    metrics: Sequence[str] | None = None,
    console: Any = None,
    err: Callable[[str], None] | None = None,
) -> Comparison:
    """What `spt-bench compare` does: load, check, compare, then print or write one format.

    The format defaults to the --out extension (.md .csv .json .tex .txt) or rich on the
    terminal. Warnings (incomplete runs, forced comparisons) go to `err` (stderr in the CLI) so
    machine formats on stdout stay parseable.
    """
    import sys

    def warn(message: str) -> None:
        (err or (lambda m: print(m, file=sys.stderr)))(f"warning: {message}")

    if fmt is None:
        fmt = (format_from_path(out) if out is not None else None) or ("md" if out else "rich")
    if fmt not in FORMATS:
        raise SptBenchError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    runs = load_runs(specs, warn=warn)
    comparison = build_comparison(
        runs, baseline=baseline, force=force, paper=paper, metrics=metrics
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
