"""The text-free per-example score file (example_stats.jsonl): no text, the same numbers."""

from __future__ import annotations

import json

import pytest
from run_helpers import make_predictions

from spt_bench.metrics import ScoreTable, bootstrap_ci, paired_bootstrap, score_predictions
from spt_bench.metrics.files import example_stats_rows, read_example_scores, write_example_stats


def _scoring_rows(quality: float, seed: int) -> list[dict]:
    rows = make_predictions(quality=quality, seed=seed, n_dialogues=12, k=4)
    return [{k: v for k, v in r.items() if k != "prompt_scores"} for r in rows]


@pytest.fixture(scope="module")
def reports():
    return [
        score_predictions(_scoring_rows(q, s), bertscore=None, n_resamples=0)
        for q, s in ((0.5, 1), (0.3, 2))
    ]


def test_example_stats_rows_carry_no_text(reports):
    rows = _scoring_rows(0.5, 1)
    stats = example_stats_rows(reports[0].per_example)
    texts = {r["prediction"] for r in rows} | {r["reference"] for r in rows}
    words = {w for t in texts for w in t.split()}
    for row in stats:
        assert not {"prediction", "reference", "persona", "history"} & set(row)
        dumped = json.dumps(row)
        # no word of any text survives (ids/dialog ids are synthetic 'd3:1', not words)
        assert not [w for w in words if f'"{w}"' in dumped]
        assert {"id", "turn", "dialog_id", "selected_prompt", "bleu_stats", "ngrams1"} <= set(row)


def test_text_free_rows_give_the_same_points_intervals_and_p_values(reports):
    full_a, full_b = reports[0].per_example, reports[1].per_example
    free_a, free_b = example_stats_rows(full_a), example_stats_rows(full_b)
    table_full, table_free = (
        ScoreTable.from_per_example(full_a),
        ScoreTable.from_per_example(free_a),
    )
    assert table_free.pred_tokens is None
    assert table_free.point() == pytest.approx(table_full.point(), abs=1e-12)
    assert bootstrap_ci(table_free, 200, 3) == bootstrap_ci(table_full, 200, 3)
    sub = [0, 3, 4, 9, 17, 30]
    assert table_free.take(sub).point() == pytest.approx(table_full.take(sub).point(), abs=1e-12)
    p_full = paired_bootstrap(full_a, full_b, n_resamples=200)
    p_free = paired_bootstrap(free_a, free_b, n_resamples=200)
    assert {m: v["p_value"] for m, v in p_free.items()} == {
        m: v["p_value"] for m, v in p_full.items()
    }


def test_read_example_scores_prefers_the_full_file_then_the_text_free_one(reports, tmp_path):
    assert read_example_scores(tmp_path) is None
    write_example_stats(reports[0].per_example, tmp_path / "example_stats.jsonl")
    rows, path = read_example_scores(tmp_path)
    assert path.name == "example_stats.jsonl" and "prediction" not in rows[0]
    assert len(rows) == len(reports[0].per_example)


def test_score_file_writes_the_text_free_file_beside_metrics_json(tmp_path):
    from spt_bench.io import append_jsonl
    from spt_bench.metrics.files import score_file

    preds = tmp_path / "predictions.jsonl"
    append_jsonl(preds, _scoring_rows(0.5, 1)[:20])
    scored = score_file(preds, out=tmp_path / "metrics.json", bertscore=None, n_resamples=0)
    rows, path = read_example_scores(tmp_path)
    assert path.name == "example_scores.jsonl"  # the full file wins when both exist
    stats = [json.loads(x) for x in (tmp_path / "example_stats.jsonl").read_text().splitlines()]
    assert [r["id"] for r in stats] == [r["id"] for r in scored.report.per_example]
    assert ScoreTable.from_per_example(stats).point() == pytest.approx(
        ScoreTable.from_per_example(rows).point(), abs=1e-12
    )
