"""Bootstrap intervals and the paired bootstrap test."""

from __future__ import annotations

import random

import numpy as np
import pytest

from spt_bench.data import load_examples
from spt_bench.errors import SptBenchError
from spt_bench.metrics import ScoreTable, paired_bootstrap, score_predictions
from spt_bench.metrics.bootstrap import bootstrap_samples, resample_weights


@pytest.fixture(scope="module")
def examples(convai2_valid):
    rng = random.Random(3)
    return rng.sample(load_examples(convai2_valid), 400)


def rows_for(examples, predictions) -> list[dict]:
    return [
        {
            "id": e.id,
            "turn": e.turn,
            "persona": list(e.persona),
            "reference": e.response,
            "prediction": p,
            "ref_nll_sum": 2.0 + (i % 7) * 0.5,
            "ref_n_tokens": 3 + i % 5,
        }
        for i, (e, p) in enumerate(zip(examples, predictions, strict=True))
    ]


@pytest.fixture(scope="module")
def shuffled_rows(examples):
    preds = [e.response for e in examples]
    random.Random(0).shuffle(preds)
    return rows_for(examples, preds)


@pytest.fixture(scope="module")
def copied_rows(examples):
    # a strong system: half its predictions are the reference
    preds = [e.response if i % 2 else e.persona[0] for i, e in enumerate(examples)]
    return rows_for(examples, preds)


@pytest.fixture(scope="module")
def shuffled_report(shuffled_rows):
    return score_predictions(shuffled_rows, bertscore=None, n_resamples=300, seed=0)


def test_resample_weights_are_draw_counts_reproducible_by_seed():
    a = np.concatenate(list(resample_weights(50, 30, np.random.default_rng(1))))
    b = np.concatenate(list(resample_weights(50, 30, np.random.default_rng(1))))
    c = np.concatenate(list(resample_weights(50, 30, np.random.default_rng(2))))
    assert a.shape == (30, 50)
    assert (a.sum(axis=1) == 50).all()
    assert (a == b).all() and not (a == c).all()


def test_corpus_metrics_on_a_resample_equal_the_libraries_on_the_resampled_corpus(shuffled_rows):
    """Recomputing from summed per-example statistics is the same as re-running the library."""
    import sacrebleu
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

    report = score_predictions(shuffled_rows, bertscore=None, n_resamples=0)
    table = ScoreTable.from_per_example(report.per_example)
    weights = next(resample_weights(len(table), 1, np.random.default_rng(5)))
    drawn = np.repeat(np.arange(len(table)), weights[0].astype(int))
    preds = [shuffled_rows[i]["prediction"] for i in drawn]
    refs = [shuffled_rows[i]["reference"] for i in drawn]
    got = table.evaluate(weights)

    assert got["bleu"][0] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score, abs=1e-9)
    b2 = corpus_bleu(
        [[r.split()] for r in refs],
        [p.split() for p in preds],
        weights=(0.5, 0.5),
        smoothing_function=SmoothingFunction().method1,
    )
    assert got["bleu2"][0] == pytest.approx(100 * b2, abs=1e-9)
    f1 = np.mean([report.per_example[i]["f1"] for i in drawn])
    assert got["f1"][0] == pytest.approx(f1)
    nll = sum(shuffled_rows[i]["ref_nll_sum"] for i in drawn)
    ntok = sum(shuffled_rows[i]["ref_n_tokens"] for i in drawn)
    assert got["ppl"][0] == pytest.approx(np.exp(nll / ntok))
    # distinct-n of a resample: the drawn examples, each once
    once = [shuffled_rows[i]["prediction"].split() for i in sorted(set(drawn.tolist()))]
    unigrams = [t for toks in once for t in toks]
    assert got["dist1"][0] == pytest.approx(100 * len(set(unigrams)) / len(unigrams))


def test_every_metric_has_an_interval_around_its_value(shuffled_report):
    rep = shuffled_report
    assert set(rep.ci95) == set(rep.overall)
    for m, value in rep.overall.items():
        lo, hi = rep.ci95[m]
        assert lo <= value <= hi, m
        assert lo < hi, m


def test_distinct_interval_is_not_biased_by_repeated_draws(shuffled_report):
    # Plain with-replacement resampling would put the whole interval far below the value.
    for m in ("dist1", "dist2"):
        lo, hi = shuffled_report.ci95[m]
        value = shuffled_report.overall[m]
        assert hi - value > 0.2 * (hi - lo) and value - lo > 0.2 * (hi - lo)


def test_intervals_are_reproducible_by_seed(shuffled_rows, shuffled_report):
    again = score_predictions(shuffled_rows, bertscore=None, n_resamples=300, seed=0)
    other = score_predictions(shuffled_rows, bertscore=None, n_resamples=300, seed=1)
    assert again.ci95 == shuffled_report.ci95
    assert other.ci95 != shuffled_report.ci95


def test_bootstrap_samples_cover_every_reported_metric(shuffled_report):
    table = ScoreTable.from_per_example(shuffled_report.per_example)
    samples = bootstrap_samples(table, 20, np.random.default_rng(0))
    assert set(samples) == set(shuffled_report.overall)
    assert all(v.shape == (20,) for v in samples.values())


def test_paired_bootstrap_of_a_system_against_itself_finds_no_difference(shuffled_report):
    result = paired_bootstrap(shuffled_report.per_example, shuffled_report.per_example, 200)
    for m, r in result.items():
        assert r["delta"] == 0.0, m
        assert r["p_value"] == 1.0, m


def test_paired_bootstrap_detects_a_better_system(copied_rows, shuffled_report):
    better = score_predictions(copied_rows, bertscore=None, n_resamples=0)
    result = paired_bootstrap(better.per_example, shuffled_report.per_example, 500, seed=0)
    for m in ("f1", "f1_raw", "bleu", "bleu1", "rougeL"):
        assert result[m]["delta"] > 0, m
        assert result[m]["p_value"] < 0.01, m
        assert result[m]["ci95"][0] > 0, m
    assert result["f1"]["a"] == pytest.approx(better.overall["f1"])
    assert result["ppl"]["delta"] == 0.0  # same reference NLLs in both
    assert 1 / 501 <= min(r["p_value"] for r in result.values())


def test_paired_bootstrap_pairs_by_id_not_by_row_order(copied_rows, shuffled_report):
    better = score_predictions(copied_rows, bertscore=None, n_resamples=0)
    reordered = list(reversed(shuffled_report.per_example))
    a = paired_bootstrap(better.per_example, shuffled_report.per_example, 100, seed=4)
    b = paired_bootstrap(better.per_example, reordered, 100, seed=4)
    assert a == b


def test_paired_bootstrap_refuses_different_example_sets(shuffled_report):
    per_example = shuffled_report.per_example
    with pytest.raises(SptBenchError, match="same examples"):
        paired_bootstrap(per_example, per_example[:-1])
    with pytest.raises(SptBenchError, match="duplicate"):
        paired_bootstrap(per_example + per_example[:1], per_example)
