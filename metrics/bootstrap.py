"""Percentile bootstrap confidence intervals and the paired bootstrap test.

Resamples draw N examples with replacement (numpy PCG64, seeded); each resample becomes a row
of per-example draw counts, and `ScoreTable.evaluate` recomputes every metric from those counts
(corpus metrics from summed sufficient statistics), so no scoring library runs per resample.
distinct-n is the exception in how a resample is read: see `_delete_d_scaled`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from spt_bench.errors import SptBenchError
from spt_bench.metrics.table import ScoreTable

# Metrics whose resampled values come from subsets (see _delete_d_scaled).
SUBSET_METRICS = ("dist1", "dist2")

# Rows of resample weights built at once: bounds memory at about 16 MB of float64 weights.
_WEIGHT_CELLS_PER_CHUNK = 2_000_000


def resample_weights(n: int, n_resamples: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Yield [r, n] arrays of draw counts (each row sums to n), n_resamples rows in total."""
    chunk = max(1, min(n_resamples, _WEIGHT_CELLS_PER_CHUNK // max(n, 1)))
    done = 0
    while done < n_resamples:
        r = min(chunk, n_resamples - done)
        draws = rng.integers(0, n, size=(r, n))
        draws += np.arange(r)[:, None] * n
        yield np.bincount(draws.ravel(), minlength=r * n).reshape(r, n).astype(np.float64)
        done += r


def _joint_samples(
    tables: Sequence[ScoreTable], n_resamples: int, rng: np.random.Generator
) -> list[dict[str, np.ndarray]]:
    """Bootstrap values of every metric of each table, all tables on the same draws."""
    n = len(tables[0])
    parts: list[dict[str, list[np.ndarray]]] = [{} for _ in tables]
    n_drawn: list[np.ndarray] = []
    for weights in resample_weights(n, n_resamples, rng):
        n_drawn.append((weights > 0).sum(axis=1))
        for table, part in zip(tables, parts, strict=True):
            for m, v in table.evaluate(weights).items():
                part.setdefault(m, []).append(v)
    drawn = np.concatenate(n_drawn).astype(np.float64)
    out = []
    for table, part in zip(tables, parts, strict=True):
        samples = {m: np.concatenate(v) for m, v in part.items()}
        point = table.point()
        for m in SUBSET_METRICS:
            if m in samples:
                samples[m] = _delete_d_scaled(samples[m], point[m], drawn, n)
        out.append(samples)
    return out


def _delete_d_scaled(
    subset_values: np.ndarray, point: float, n_drawn: np.ndarray, n: int
) -> np.ndarray:
    """Turn values on random subsets into draws of the full-sample statistic.

    distinct-n depends on corpus size and on repeated text, so resampling with replacement
    biases it downwards (a repeated draw adds n-grams but no new ones). Each resample's set of
    drawn examples (m of the n, about 63%) is instead a random subset, and the delete-d
    jackknife (Shao & Wu 1989; valid for non-smooth statistics) scales its deviation by
    sqrt(m / (n - m)) around the full-sample value.
    """
    removed = n - n_drawn
    scale = np.where(removed > 0, np.sqrt(n_drawn / np.maximum(removed, 1)), 0.0)
    return point + scale * (subset_values - subset_values.mean())


def bootstrap_samples(
    table: ScoreTable, n_resamples: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """{metric: [n_resamples]} bootstrap values of every metric the table reports."""
    return _joint_samples([table], n_resamples, rng)[0]


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    alpha = (1.0 - level) / 2
    lo, hi = np.percentile(samples, [100 * alpha, 100 * (1 - alpha)])
    return float(lo), float(hi)


def bootstrap_ci(
    table: ScoreTable, n_resamples: int = 1000, seed: int | Sequence[int] = 0
) -> dict[str, tuple[float, float]]:
    """95% percentile bootstrap interval of every metric the table reports."""
    if n_resamples <= 0:
        return {}
    samples = bootstrap_samples(table, n_resamples, np.random.default_rng(seed))
    return {m: percentile_ci(s) for m, s in samples.items()}


def paired_bootstrap(
    per_example_a: Sequence[dict],
    per_example_b: Sequence[dict],
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Paired bootstrap test of system A against system B on the same examples.

    Both systems are resampled with the same example draws. For each metric: delta = A - B on
    all examples; p_value is two-sided: the share of resampled deltas, centred on delta, at
    least as far from 0 as |delta| (the "shift" method of Berg-Kirkpatrick et al. 2012), with
    the +1 correction (p = (1 + hits) / (1 + R)), so it is never exactly 0. Also returns each
    system's value and the 95% interval of the delta. Metrics present in only one input are
    left out. Refuses (SptBenchError) when the two id sets differ.
    """
    if n_resamples < 1:
        raise SptBenchError("paired bootstrap needs at least 1 resample")
    ids_a = [str(r["id"]) for r in per_example_a]
    ids_b = [str(r["id"]) for r in per_example_b]
    for name, ids in (("A", ids_a), ("B", ids_b)):
        if not ids:
            raise SptBenchError(f"paired bootstrap: system {name} has no examples")
        if len(set(ids)) != len(ids):
            raise SptBenchError(f"paired bootstrap: system {name} has duplicate example ids")
    set_a, set_b = set(ids_a), set(ids_b)
    if set_a != set_b:
        only_a, only_b = sorted(set_a - set_b), sorted(set_b - set_a)
        raise SptBenchError(
            "paired bootstrap needs the same examples in both systems: "
            f"{len(only_a)} ids only in A (e.g. {only_a[:3]}), "
            f"{len(only_b)} only in B (e.g. {only_b[:3]})"
        )
    by_id_b = {str(r["id"]): r for r in per_example_b}
    table_a = ScoreTable.from_per_example(list(per_example_a))
    table_b = ScoreTable.from_per_example([by_id_b[i] for i in ids_a])
    names = [m for m in table_a.metric_names() if m in set(table_b.metric_names())]

    point_a, point_b = table_a.point(), table_b.point()
    delta = {m: point_a[m] - point_b[m] for m in names}
    rng = np.random.default_rng(seed)
    samples_a, samples_b = _joint_samples([table_a, table_b], n_resamples, rng)

    result: dict[str, dict[str, float]] = {}
    for m in names:
        d = samples_a[m] - samples_b[m]
        observed = delta[m]
        hits = int(np.count_nonzero(np.abs(d - observed) >= abs(observed) - 1e-12))
        lo, hi = percentile_ci(d)
        result[m] = {
            "a": point_a[m],
            "b": point_b[m],
            "delta": observed,
            "p_value": (1 + hits) / (1 + len(d)),
            "ci95": [lo, hi],
        }
    return result


def _aligned_tables(runs: Sequence[Sequence[dict]]) -> list[ScoreTable]:
    """A ScoreTable per run, rows in run 1's example order; refuses runs on other examples."""
    ids = [str(r["id"]) for r in runs[0]]
    if not ids:
        raise SptBenchError("seed bootstrap: no examples")
    if len(set(ids)) != len(ids):
        raise SptBenchError("seed bootstrap: duplicate example ids")
    tables = []
    for k, rows in enumerate(runs):
        by_id = {str(r["id"]): r for r in rows}
        if set(by_id) != set(ids) or len(by_id) != len(rows):
            raise SptBenchError(
                f"seed bootstrap needs the same examples in every run: run {k + 1} has "
                f"{len(by_id)} ids, {len(set(by_id) & set(ids))} shared with run 1's {len(ids)}"
            )
        tables.append(ScoreTable.from_per_example([by_id[i] for i in ids]))
    return tables


def _seed_mean(
    stack: np.ndarray, point: list[float], pick: np.ndarray | None, inflate: bool
) -> np.ndarray:
    """[R] mean over each resample's drawn seeds of the runs' values (see `seed_bootstrap`).

    stack [S, R]: each run's value on each resample; point [S]: each run's value on all
    examples; pick [R, S]: the seeds drawn (None: a single seed)."""
    if pick is None:
        return stack[0]
    cols = np.arange(stack.shape[1])[:, None]
    drawn = stack[pick, cols].mean(axis=1)
    if not inflate:
        return drawn
    n_seeds = len(point)
    deviation = np.asarray(point) - np.mean(point)
    return drawn + (math.sqrt(n_seeds / (n_seeds - 1)) - 1) * deviation[pick].mean(axis=1)


def seed_bootstrap(
    seeds_a: Sequence[Sequence[dict]],
    seeds_b: Sequence[Sequence[dict]],
    n_resamples: int = 1000,
    seed: int = 0,
    inflate: bool = True,
) -> dict[str, dict[str, float | list[float]]]:
    """Two-level bootstrap test of system A against B, each trained with one or more seeds.

    seeds_a / seeds_b: the per-example rows of each seed's run, all on the same examples. The
    statistic is the difference of the seed means: mean_s metric(A_s) - mean_s metric(B_s).
    Each resample draws (1) one set of examples with replacement, used for every run of both
    systems (they share the test set, so its sampling error is common to all of them), and
    (2) for each system independently, its seeds with replacement; the resampled statistic is
    the mean over the drawn seeds of each run's metric on the drawn examples. So the p-value
    accounts for both the test-set sample and the variation between training seeds. With one
    seed per system it is exactly `paired_bootstrap` (same draws, same p). With few seeds the
    seed variance is under-estimated (a bootstrap over S values has (S-1)/S of their variance):
    `inflate` scales each drawn seed's deviation from the seed mean by sqrt(S/(S-1)), which
    restores that variance (no effect with one seed); 3 or more seeds per system are needed for
    the seed term to mean much. p-value: the "shift" test with the +1 correction, as in
    `paired_bootstrap`. Refuses different example sets.
    """
    if n_resamples < 1:
        raise SptBenchError("seed bootstrap needs at least 1 resample")
    if not seeds_a or not seeds_b:
        raise SptBenchError("seed bootstrap: each system needs at least one run")
    tables = _aligned_tables([*seeds_a, *seeds_b])
    names = [m for m in tables[0].metric_names() if all(m in t.metric_names() for t in tables)]
    points = [t.point() for t in tables]
    rng = np.random.default_rng(seed)
    samples = _joint_samples(tables, n_resamples, rng)
    n_a, n_b = len(seeds_a), len(seeds_b)
    # Drawn after the examples' resamples, A's seeds before B's: the order fixes the results.
    pick_a = rng.integers(0, n_a, size=(n_resamples, n_a)) if n_a > 1 else None
    pick_b = rng.integers(0, n_b, size=(n_resamples, n_b)) if n_b > 1 else None

    result: dict[str, dict[str, float | list[float]]] = {}
    for m in names:
        point_a = [p[m] for p in points[:n_a]]
        point_b = [p[m] for p in points[n_a:]]
        observed = float(np.mean(point_a) - np.mean(point_b))
        stack_a = np.stack([s[m] for s in samples[:n_a]])
        stack_b = np.stack([s[m] for s in samples[n_a:]])
        mean_a = _seed_mean(stack_a, point_a, pick_a, inflate)
        d = mean_a - _seed_mean(stack_b, point_b, pick_b, inflate)
        hits = int(np.count_nonzero(np.abs(d - observed) >= abs(observed) - 1e-12))
        lo, hi = percentile_ci(d)
        result[m] = {
            "a": float(np.mean(point_a)),
            "b": float(np.mean(point_b)),
            "a_per_seed": point_a,
            "b_per_seed": point_b,
            "delta": observed,
            "p_value": (1 + hits) / (1 + len(d)),
            "ci95": [lo, hi],
        }
    return result


def holm_adjust(p_values: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment of a family of p-values (controls the family-wise error
    rate): the i-th smallest of m becomes max over j <= i of min(1, (m - j + 1) p_(j))."""
    order = sorted(p_values, key=lambda k: p_values[k])
    m = len(order)
    out: dict[str, float] = {}
    running = 0.0
    for j, key in enumerate(order):
        running = max(running, min(1.0, (m - j) * p_values[key]))
        out[key] = running
    return out
