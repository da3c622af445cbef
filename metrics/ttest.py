"""Seed-level significance: t-tests on the per-seed values of two systems.

With several training seeds per system, the question compare asks is whether another set of
seeds would give the same difference; each seed's run is one observation. The seed-grouped
bootstrap (metrics.bootstrap.seed_bootstrap) draws from 3 seeds as if they were the population
and rejects a true null too often (docs/metrics.md, "Several seeds"); Welch's t-test on the
per-seed values is calibrated at the seed level. Pure Python (math only): the t distribution's
tail comes from the regularised incomplete beta function below, so scipy is not needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from spt_bench.errors import SptBenchError

WELCH = "welch"  # several seeds on both sides
POOLED_ONE_SIDE = "t-one-seed-side"  # one seed on one side: the other side's seed spread

# relative size under which a standard error counts as 0 (per-seed values that do not vary)
_ZERO_SE = 1e-12


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Lentz's continued fraction for the incomplete beta function (Numerical Recipes betacf)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with `df` (> 0, not necessarily whole) degrees of freedom."""
    if df <= 0:
        raise ValueError("degrees of freedom must be positive")
    if math.isinf(t):
        return 0.0
    return min(1.0, betainc(df / 2.0, 0.5, df / (df + t * t)))


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> dict[str, float | str | None]:
    """Two-sided t-test of mean(a) - mean(b) over independent per-seed values.

    Several values on both sides: Welch's t-test (unequal variances, Welch-Satterthwaite
    degrees of freedom). One value on one side: that side's spread is unknown, so the other
    side's sample variance stands for both (equal seed-to-seed spread assumed), with its n - 1
    degrees of freedom. One value on both sides: refused (nothing to estimate a spread from).
    `p_value` is None when the standard error is 0 (the per-seed values do not vary at all):
    the seeds carry no information about the spread and the caller must use another test.
    """
    n_a, n_b = len(a), len(b)
    if n_a < 1 or n_b < 1 or n_a + n_b < 3:
        raise SptBenchError("a seed-level t-test needs at least 2 seeds on one side")
    mean_a, mean_b = math.fsum(a) / n_a, math.fsum(b) / n_b
    delta = mean_a - mean_b

    def var(xs: Sequence[float], mean: float) -> float:
        return math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1)

    if n_a >= 2 and n_b >= 2:
        va, vb = var(a, mean_a) / n_a, var(b, mean_b) / n_b
        se2 = va + vb
        denom = (va * va / (n_a - 1) if va else 0.0) + (vb * vb / (n_b - 1) if vb else 0.0)
        df = se2 * se2 / denom if denom > 0 else float(n_a + n_b - 2)
        test = WELCH
    else:
        many, mean = (a, mean_a) if n_a >= 2 else (b, mean_b)
        se2 = var(many, mean) * (1.0 / n_a + 1.0 / n_b)
        df = float(len(many) - 1)
        test = POOLED_ONE_SIDE
    se = math.sqrt(se2)
    scale = max(1.0, abs(mean_a), abs(mean_b))
    if se <= _ZERO_SE * scale:
        return {"delta": delta, "t": None, "df": df, "se": se, "p_value": None, "test": test}
    t = delta / se
    return {
        "delta": delta,
        "t": t,
        "df": df,
        "se": se,
        "p_value": t_two_sided_p(t, df),
        "test": test,
    }


def seed_t_test(
    seeds_a: Sequence[Sequence[dict]], seeds_b: Sequence[Sequence[dict]]
) -> dict[str, dict]:
    """Seed-level test of system A against B: each seed's run is scored on the shared examples
    (its metric value, e.g. corpus BLEU or mean F1), and `welch_t_test` compares the per-seed
    values of every metric both report. seeds_a / seeds_b: the per-example rows of each seed's
    run, all on the same examples (refused otherwise), at least 2 runs on one side."""
    from spt_bench.metrics.table import ScoreTable

    runs = [*seeds_a, *seeds_b]
    if not seeds_a or not seeds_b:
        raise SptBenchError("seed t-test: each system needs at least one run")
    ids = sorted(str(r["id"]) for r in runs[0])
    tables = []
    for k, rows in enumerate(runs):
        by_id = {str(r["id"]): r for r in rows}
        if sorted(by_id) != ids or len(by_id) != len(rows):
            raise SptBenchError(
                f"seed t-test needs the same examples in every run: run {k + 1} has "
                f"{len(by_id)} ids, {len(set(by_id) & set(ids))} shared with run 1's {len(ids)}"
            )
        tables.append(ScoreTable.from_per_example([by_id[i] for i in ids]))
    names = [m for m in tables[0].metric_names() if all(m in t.metric_names() for t in tables)]
    points = [t.point() for t in tables]
    n_a = len(seeds_a)
    out: dict[str, dict] = {}
    for m in names:
        a = [float(p[m]) for p in points[:n_a]]
        b = [float(p[m]) for p in points[n_a:]]
        out[m] = {**welch_t_test(a, b), "a_per_seed": a, "b_per_seed": b}
    return out
