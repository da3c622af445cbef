"""Building a comparison: rows (seed groups, with values, CIs, stds, gains and p-values against
a baseline), the best value per column, the paper's rows, and the notes a reader needs."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spt_bench.compare.calibration import calibration_notes
from spt_bench.compare.labels import RunGroup, assign_labels, group_runs
from spt_bench.compare.runs import RunRecord, load_run
from spt_bench.compare.stats import (
    P_ADJUST,
    P_ADJUST_SCOPES,
    SIGNIFICANCE,
    SIGNIFICANCE_TEST,
    ComparisonRefused,
    _avg_gain,
    _higher_is_better,
    _restricted,
    adjust_p_values,
    check_comparable,
    reference_mismatches,
    relative_gain,
    row_p_values,
)
from spt_bench.compare.table import fmt_value
from spt_bench.errors import InputError, SptBenchError
from spt_bench.paper import (
    PAPER_AVG_METRICS,
    PAPER_BERTSCORE_MODEL,
    PAPER_CITATION,
    PAPER_N_EXAMPLES,
    load_paper_results,
)
from spt_bench.run_folder import RunFolder

# Default columns, in display order: ours (`f1`) then the paper's ten. Extra model metrics
# (issue 7) are appended when a run has them.
DEFAULT_METRICS: tuple[str, ...] = ("f1", *PAPER_AVG_METRICS)


EXTRA_METRICS: tuple[str, ...] = (
    "ppl",
    "hits@1",
    "c_score",
    "c_entail_rate",
    "c_contradict_rate",
    "judge_consistency",
    "judge_coherence",
)


DIST_METRICS = ("dist1", "dist2")


# Marks a paper row's Dist-n when its corpus size differs from ours by more than this factor.
CORPUS_SIZE_FACTOR = 2.0


DIST_FLAG = "†"


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


def _run_values(
    run: RunRecord, columns: Sequence[str], ids: frozenset[str] | None, seed: int
) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """A run's values and CIs: from metrics.json, or rescored on `ids` from its per-example
    scores (forced comparisons of runs with different example sets)."""
    if ids is not None and run.per_example is not None:
        from spt_bench.metrics import ScoreTable, bootstrap_ci

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
    """Compare finished runs (see the package docstring for the definitions used)."""
    if not runs:
        raise SptBenchError("nothing to compare: no runs")
    _check_p_adjust(p_adjust, p_adjust_scope)
    runs = list(runs)
    if not all(r.label for r in runs):
        assign_labels(runs)
    groups, base = _groups_and_baseline(runs, baseline, group_seeds)
    notes = check_comparable(runs, force=force, reference=base.lead if base else None)
    shared, value_ids = _shared_ids(runs, notes)
    columns = _columns(runs, metrics, paper)
    hib = {m: _higher_is_better(runs, m) for m in columns}
    rows, no_p = _rows(
        groups, base, columns, runs, value_ids=value_ids, shared=shared, seed=bootstrap_seed,
        p_adjust=p_adjust,
    )  # fmt: skip
    if p_adjust_scope == "table":  # one Holm family: every p-value of the table
        family = {(i, m): p for i, r in enumerate(rows) for m, p in r.p_value.items()}
        adjusted = adjust_p_values(family, p_adjust)
        for i, r in enumerate(rows):
            r.p_adjusted = {m: adjusted[i, m] for m in r.p_value}
    notes += _row_notes(rows, base, no_p)
    notes += calibration_notes(rows, runs, columns)
    _mark_best(rows, columns, hib)
    if paper:
        rows += _paper_rows(columns)
        notes += _paper_notes(rows, columns)
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


def _check_p_adjust(p_adjust: str, p_adjust_scope: str) -> None:
    if p_adjust not in P_ADJUST:
        raise SptBenchError(f"unknown --p-adjust {p_adjust!r}; choose one of {', '.join(P_ADJUST)}")
    if p_adjust_scope not in P_ADJUST_SCOPES:
        raise SptBenchError(
            f"unknown --p-adjust-scope {p_adjust_scope!r}; choose one of "
            + ", ".join(P_ADJUST_SCOPES)
        )


def _groups_and_baseline(
    runs: list[RunRecord], baseline: str | None, group_seeds: bool
) -> tuple[list[RunGroup], RunGroup | None]:
    """The seed groups and the baseline's group (a baseline folder not listed joins the runs)."""
    while True:
        groups = group_runs(runs, by_seed=group_seeds)
        try:
            base = resolve_baseline(groups, baseline, runs) if baseline else None
        except _Regroup:
            assign_labels(runs)
            continue
        return groups, base


def _shared_ids(
    runs: list[RunRecord], notes: list[str]
) -> tuple[frozenset[str] | None, frozenset[str] | None]:
    """(ids the p-values use, ids values and CIs are rescored on); None = each run's own. Only
    forced comparisons of different example sets or references restrict them (noted)."""
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
    return shared, value_ids


def _columns(runs: list[RunRecord], metrics: Sequence[str] | None, paper: bool) -> list[str]:
    if metrics:
        columns = list(dict.fromkeys(metrics))
        unknown = [m for m in columns if not any(m in r.overall for r in runs)]
        if unknown:
            available = sorted({m for r in runs for m in r.overall})
            raise SptBenchError(
                f"no run has metric(s) {', '.join(unknown)}; available: {', '.join(available)}"
            )
        return columns
    present = {m for r in runs for m in r.overall}
    columns = [m for m in DEFAULT_METRICS if m in present or paper]
    return columns + [m for m in EXTRA_METRICS if m in present]


def _rows(
    groups: list[RunGroup],
    base: RunGroup | None,
    columns: list[str],
    runs: list[RunRecord],
    *,
    value_ids: frozenset[str] | None,
    shared: frozenset[str] | None,
    seed: int,
    p_adjust: str,
) -> tuple[list[ComparisonRow], list[str]]:
    """One row per group: values of the shown columns, gains (AVG over the paper's metrics)
    and p-values against the baseline; and the labels of rows without p-values."""
    gain_metrics = list(dict.fromkeys([*columns, *PAPER_AVG_METRICS]))
    hib_all = {m: _higher_is_better(runs, m) for m in gain_metrics}
    base_all = _group_row(base, gain_metrics, value_ids, seed) if base else None
    base_values = dict(base_all.values) if base_all else {}
    rows: list[ComparisonRow] = []
    no_p: list[str] = []
    for group in groups:
        row = base_all if group is base else _group_row(group, gain_metrics, value_ids, seed)
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
                group, base, columns, ids=shared, seed=seed
            )
            if not row.p_value:
                no_p.append(group.label)
            row.p_adjusted = adjust_p_values(row.p_value, p_adjust)
        rows.append(row)
    return rows, no_p


def _row_notes(rows: list[ComparisonRow], base: RunGroup | None, no_p: list[str]) -> list[str]:
    notes = []
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
    return notes + _method_notes(rows)


def _method_notes(rows: list[ComparisonRow]) -> list[str]:
    """The `compare_note` of each method in the table (e.g. how its outputs are styled)."""
    from spt_bench.methods import method_class

    notes = []
    for method in dict.fromkeys(r.method for r in rows):
        cls = method_class(method)
        if cls is not None and cls.compare_note:
            notes.append(cls.compare_note)
    return notes


def _mark_best(rows: list[ComparisonRow], columns: list[str], hib: dict) -> None:
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


def _paper_notes(rows: list[ComparisonRow], columns: list[str]) -> list[str]:
    notes = [
        f"paper rows: published figures from {PAPER_CITATION}, computed with the authors' "
        "conventions on the full ConvAI2 valid set with OPT/Llama-2 backbones: their F1 is "
        f"unnormalised (our f1_raw), their BERTScore used {PAPER_BERTSCORE_MODEL}; they are "
        "not directly comparable to our runs, have no CIs, and are excluded from 'best'. "
        "Their gains are SPT vs PT on the same backbone."
    ]
    ours = sorted({r.n for r in rows if r.source == "run" and r.n})
    far = [
        n for n in ours if max(n, PAPER_N_EXAMPLES) > CORPUS_SIZE_FACTOR * min(n, PAPER_N_EXAMPLES)
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
    return notes


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
