"""False-positive rate of compare's seed-level tests under a true null, per-example simulation.

Two systems with S seeds each on N shared examples. Example i of seed s of a system scores
    x = e_i + u_s + eps_si,   e_i ~ N(0, 1) (shared test set), u_s ~ N(0, SD) (the seed),
    eps_si ~ N(0, 1) (run-level noise)
the same for both systems (a true null), as an `f1` column of per-example rows. Counts how
often p < 0.05 for the seed-grouped bootstrap (metrics.seed_bootstrap, RESAMPLES resamples,
the test compare used for rows of several seeds up to 0.x) and for Welch's t-test on the
per-seed means (metrics.ttest.seed_t_test, what compare uses now). Seeded (numpy PCG64).
Numbers in docs/metrics.md ("Several seeds").

    PYTHONPATH=. python scripts/seed_null_calibration.py REPS_BOOTSTRAP REPS_T [SD ...]
    # e.g. 2000 20000 0.3 1.0   (about 1 min per SD for the bootstrap on 2 cores)
"""

from __future__ import annotations

import sys
import time

import numpy as np

from spt_bench.metrics.bootstrap import seed_bootstrap
from spt_bench.metrics.ttest import seed_t_test, welch_t_test

N_EXAMPLES, N_SEEDS, ALPHA, RESAMPLES = 64, 3, 0.05, 1000


def null_scores(rng: np.random.Generator, seed_sd: float, reps: int) -> np.ndarray:
    """[reps, 2 systems, N_SEEDS, N_EXAMPLES] per-example scores under the null above."""
    shared = rng.normal(0.0, 1.0, size=(reps, 1, 1, N_EXAMPLES))
    seeds = rng.normal(0.0, seed_sd, size=(reps, 2, N_SEEDS, 1))
    noise = rng.normal(0.0, 1.0, size=(reps, 2, N_SEEDS, N_EXAMPLES))
    return shared + seeds + noise


def rows(scores: np.ndarray) -> list[dict]:
    """Minimal per-example rows (text-free layout) carrying `scores` as f1."""
    return [
        {"id": str(i), "f1": float(v), "bleu_stats": [0] * 10,
         "nltk_bleu_stats": [1, 1, 0, 1, 0, 1], "ngrams1": [1, [i]], "ngrams2": [1, [i]]}
        for i, v in enumerate(scores)
    ]  # fmt: skip


def main(reps_boot: int, reps_t: int, sds: list[float]) -> None:
    for sd in sds:
        t0 = time.time()
        rng = np.random.default_rng([2024, int(sd * 1000)])
        boot = 0
        for rep, sim in enumerate(null_scores(rng, sd, reps_boot)):
            a, b = [rows(s) for s in sim[0]], [rows(s) for s in sim[1]]
            boot += seed_bootstrap(a, b, RESAMPLES, rep)["f1"]["p_value"] < ALPHA
            if rep < 20:  # the fast path below is the same test as compare's seed_t_test
                ref = welch_t_test(sim[0].mean(axis=1), sim[1].mean(axis=1))["p_value"]
                assert abs(seed_t_test(a, b)["f1"]["p_value"] - ref) < 1e-9
        welch = 0
        for sim in null_scores(rng, sd, reps_t):
            means = sim.mean(axis=2)
            welch += welch_t_test(list(means[0]), list(means[1]))["p_value"] < ALPHA
        print(
            f"seed sd {sd}, {N_SEEDS} vs {N_SEEDS} seeds, {N_EXAMPLES} examples: p < {ALPHA} in "
            f"{boot}/{reps_boot} = {boot / reps_boot:.3f} (seed bootstrap, {RESAMPLES} "
            f"resamples), {welch}/{reps_t} = {welch / reps_t:.4f} (Welch t); "
            f"{time.time() - t0:.0f} s"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), [float(x) for x in sys.argv[3:]] or [0.3, 1.0])
