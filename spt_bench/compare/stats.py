"""Statistics of a comparison: relative gains, p-values (paired bootstrap, seed-level t-test),
Holm adjustment, and the checks that runs are comparable (example sets, references, BERTScore
encoders, post-processing rules)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from spt_bench.compare.runs import _is_number
from spt_bench.errors import SptBenchError
from spt_bench.paper import PAPER_AVG_METRICS

if TYPE_CHECKING:  # pragma: no cover
    from spt_bench.compare.labels import RunGroup
    from spt_bench.compare.runs import RunRecord

P_ADJUST = ("holm", "none")


P_ADJUST_SCOPES = ("row", "table")  # Holm's family: the metrics of a row, or the whole table


# Significance marks, strictest first.
SIGNIFICANCE: tuple[tuple[float, str], ...] = ((0.01, "**"), (0.05, "*"))


class ComparisonRefused(SptBenchError):
    """Runs that cannot be compared fairly (different examples, BERTScore encoders or
    post-processing rules)."""


SIGNIFICANCE_TEST = (
    "one seed per side: paired bootstrap over the test examples (metrics.paired_bootstrap via "
    "seed_bootstrap: 1000 resamples, seed 0, two-sided shift test with +1 correction); several "
    "seeds on a side: Welch's t-test on the per-seed values of each metric (metrics.ttest; with "
    "one seed on the other side, that side takes the other's seed variance); a metric whose "
    "per-seed values do not vary falls back to the two-level bootstrap (rows' p_fallback); "
    "each row's p_test names its test"
)


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
        # cross-dataset runs: name the evaluation data when it differs
        data = "" if run.evaluated_on == reference.evaluated_on else (
            f" (evaluated on {run.evaluated_on} vs {reference.evaluated_on})"
        )  # fmt: skip
        if ids is not None and ref_ids is not None:
            if ids != ref_ids:
                problems.append(
                    f"runs were scored on different example sets{data}: {run.label} "
                    f"({run.path}) has {len(ids)} examples, {reference.label} "
                    f"({reference.path}) has {len(ref_ids)}, {len(ids & ref_ids)} shared"
                )
        elif run.data_key() != reference.data_key():
            problems.append(
                f"runs were scored on different example sets{data}: {run.label} ({run.path}) "
                f"has n={run.n}, {reference.label} ({reference.path}) has n={reference.n} or "
                "other data settings (no per-example scores to compare ids)"
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
        from spt_bench.metrics import METRICS  # light: the registry, not the scoring backends

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
    from spt_bench.metrics.bootstrap import seed_bootstrap

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
    from spt_bench.metrics.bootstrap import seed_bootstrap
    from spt_bench.metrics.ttest import seed_t_test

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
    from spt_bench.compare.labels import RunGroup

    return seed_p_values(RunGroup([run]), RunGroup([baseline]), metric_names, seed=seed)


def adjust_p_values(p_values: dict[Any, float], method: str) -> dict[Any, float]:
    """Holm across the family given (the metrics of one row, or every p-value of a table),
    or unchanged (`none`)."""
    from spt_bench.metrics.bootstrap import holm_adjust

    if method not in P_ADJUST:
        raise SptBenchError(f"unknown --p-adjust {method!r}; choose one of {', '.join(P_ADJUST)}")
    return holm_adjust(p_values) if method == "holm" else dict(p_values)
