"""`spt-bench bench --nli-pairs N --judge-responses M`: the model-based instruments' speed."""

from __future__ import annotations

import pytest

from spt_bench.bench import BenchSettings, run_bench


@pytest.mark.slow  # builds the 71M-parameter DeBERTa-shaped classifier (~10 s on a busy CPU)
def test_bench_times_nli_pairs_and_judge_responses(single_thread):
    settings = BenchSettings(
        model="tiny-random", train=False, n_decode=0, nli_pairs=12, nli_batch_size=4,
        judge_responses=3, judge_batch_size=2,
    )  # fmt: skip
    result = run_bench(settings)
    nli, judge = result["instruments"]["nli"], result["instruments"]["judge"]
    assert nli["pairs"] == 12 and nli["pairs_per_s"] > 0
    assert "DeBERTa-v3-xsmall-shaped" in nli["model"]
    assert judge["responses"] == 3 and judge["responses_per_s"] > 0
