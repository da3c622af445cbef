"""Type-I error of compare's seed-aware test (metrics.seed_bootstrap) under a null hypothesis.

Two synthetic systems (tests/test_compare.py's make_predictions, 200 examples) whose training
seeds draw their quality from the same N(0.40, SD); S seeds each. Counts how often p < 0.05 for
F1 with the two-level bootstrap (with and without the sqrt(S/(S-1)) inflation) and with a paired
bootstrap on one seed each. Numbers in docs/metrics.md ("Several seeds").

    PYTHONPATH=. python scripts/seed_test_calibration.py REPS S SD    # e.g. 100 3 0.06
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_compare import make_predictions  # noqa: E402

from spt_bench.metrics import paired_bootstrap, score_predictions  # noqa: E402
from spt_bench.metrics.bootstrap import seed_bootstrap  # noqa: E402


def system_run(quality: float, seed: int) -> list[dict]:
    rows = make_predictions(quality=quality, seed=seed, n_dialogues=40)
    return score_predictions(rows, bertscore=None, n_resamples=0).per_example


def main(reps: int, n_seeds: int, sd: float) -> None:
    rng = random.Random(11 + n_seeds)
    rejected = {"inflated": 0, "plain": 0, "single": 0}
    t0 = time.time()
    for rep in range(reps):
        qa = [min(0.95, max(0.0, rng.gauss(0.40, sd))) for _ in range(n_seeds)]
        qb = [min(0.95, max(0.0, rng.gauss(0.40, sd))) for _ in range(n_seeds)]
        a = [system_run(q, 1000 * rep + k) for k, q in enumerate(qa)]
        b = [system_run(q, 1000 * rep + 500 + k) for k, q in enumerate(qb)]
        rejected["inflated"] += seed_bootstrap(a, b, 500, rep)["f1"]["p_value"] < 0.05
        rejected["plain"] += seed_bootstrap(a, b, 500, rep, inflate=False)["f1"]["p_value"] < 0.05
        rejected["single"] += paired_bootstrap(a[0], b[0], 500, rep)["f1"]["p_value"] < 0.05
    print(
        f"S={n_seeds} seed sd={sd} reps={reps}: rejections at 0.05 {rejected}; "
        f"{time.time() - t0:.0f} s"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
