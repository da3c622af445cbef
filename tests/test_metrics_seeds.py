"""Seed-aware significance (two-level bootstrap) and Holm's adjustment, on synthetic systems
whose answer is known."""

from __future__ import annotations

import pytest
from run_helpers import make_predictions

from metrics import paired_bootstrap, score_predictions
from metrics.bootstrap import holm_adjust, seed_bootstrap

_CACHE: dict[tuple[float, int], list[dict]] = {}


def scores(quality: float, seed: int) -> list[dict]:
    """Per-example scores of a synthetic system (200 examples; a seed = a training run)."""
    if (quality, seed) not in _CACHE:
        rows = make_predictions(quality=quality, seed=seed, n_dialogues=40)
        _CACHE[quality, seed] = score_predictions(rows, bertscore=None, n_resamples=0).per_example
    return _CACHE[quality, seed]


def test_one_seed_each_is_exactly_the_paired_bootstrap():
    a, b = scores(0.5, 1), scores(0.45, 2)
    paired = paired_bootstrap(a, b, n_resamples=300, seed=4)
    seeded = seed_bootstrap([a], [b], n_resamples=300, seed=4)
    assert {m: r["p_value"] for m, r in seeded.items()} == {
        m: r["p_value"] for m, r in paired.items()
    }


def test_seed_spread_makes_a_single_seed_win_non_significant():
    """A's seeds straddle B (0.75, 0.15, 0.45 vs 0.45 x3): its best seed alone beats B
    clearly, but over seeds the difference is within the seed-to-seed spread."""
    a = [scores(q, s) for q, s in ((0.75, 11), (0.15, 12), (0.45, 13))]
    b = [scores(0.45, s) for s in (21, 22, 23)]
    best_seed_alone = paired_bootstrap(a[0], b[0], n_resamples=300)
    over_seeds = seed_bootstrap(a, b, n_resamples=300)
    assert best_seed_alone["f1"]["p_value"] < 0.01
    assert over_seeds["f1"]["p_value"] > 0.05
    assert over_seeds["f1"]["a_per_seed"] == pytest.approx(
        [best_seed_alone["f1"]["a"], *(paired_bootstrap(x, b[0], 1)["f1"]["a"] for x in a[1:])]
    )


def test_a_consistent_improvement_over_seeds_is_significant():
    a = [scores(q, s) for q, s in ((0.62, 31), (0.6, 32), (0.58, 33))]
    b = [scores(q, s) for q, s in ((0.32, 41), (0.3, 42), (0.28, 43))]
    result = seed_bootstrap(a, b, n_resamples=300)
    assert result["f1"]["delta"] > 0
    assert result["f1"]["p_value"] < 0.01
    assert result["f1"]["ci95"][0] > 0


def test_seed_bootstrap_refuses_runs_on_different_examples():
    a, b = scores(0.5, 1), scores(0.45, 2)
    with pytest.raises(Exception, match="same examples"):
        seed_bootstrap([a, a[:-3]], [b])


def test_holm_adjustment_matches_the_step_down_definition():
    p = {"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.5}
    # sorted: a .01*4=.04, c .03*3=.09, b .04*2=.08 -> max(.09,.08)=.09, d .5*1 -> .5
    assert holm_adjust(p) == pytest.approx({"a": 0.04, "c": 0.09, "b": 0.09, "d": 0.5})
    assert holm_adjust({"x": 0.6, "y": 0.7}) == pytest.approx({"x": 1.0, "y": 1.0})
    assert holm_adjust({}) == {}
