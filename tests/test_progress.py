"""The progress bar's throughput stays readable when a run is slow."""

from __future__ import annotations

from spt_bench.progress import format_rate


def test_rate_reads_in_examples_per_second_when_fast_and_seconds_per_example_when_slow():
    assert format_rate(8, 2.0) == "4.0 ex/s"
    assert format_rate(1, 1.0) == "1.0 ex/s"
    assert format_rate(2, 80.0) == "40.0 s/ex"  # 0.025 ex/s used to read "0.0 ex/s"
    assert format_rate(0, 1.0) == "-"
