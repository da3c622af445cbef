"""The model-based instruments through the commands: evaluate --rescore, score, compare, plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from run_helpers import make_run
from tiny_nli import build_marker_nli
from typer.testing import CliRunner


@pytest.fixture(scope="module")
def nli_dir(tmp_path_factory):
    return build_marker_nli(tmp_path_factory.mktemp("nli"))


@pytest.fixture(scope="module")
def app():
    from cli import app

    return app


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_rescore_adds_c_score_and_judge_keeps_other_results_and_archives(
    tmp_path, nli_dir, app, single_thread
):
    run = make_run(tmp_path, "a", n_dialogues=2)
    res = CliRunner().invoke(app, ["evaluate", str(run), "--rescore", "--no-bertscore"])
    assert res.exit_code == 0, res.output
    before = _metrics(run)
    args = ["evaluate", str(run), "--rescore", "--no-bertscore", "--consistency", "nli",
            "--nli-model", str(nli_dir), "--judge", "tiny-random",
            "--model-score-batch-size", "8"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    after = _metrics(run)
    for m in ("c_score", "c_entail_rate", "c_contradict_rate", "judge_consistency"):
        assert m in after["overall"] and m in after["ci95"]
        assert all(m in b for b in after["by_turn"].values())
    assert after["overall"]["f1"] == before["overall"]["f1"]
    assert after["instruments"]["judge"]["engine"] == "hf"
    assert len(after["instruments"]["judge"]["rubric_sha256"]["consistency"]) == 64
    assert after["calibration"]["c_score"]["status"] == "not discriminating"  # no markers
    archived = sorted((run / "history").glob("*/metrics.json"))
    assert json.loads(archived[-1].read_text()) == before  # the scores it replaced
    stats = (run / "example_stats.jsonl").read_text().splitlines()
    assert "judge_coherence" in json.loads(stats[0])
    report = (run / "report.md").read_text()
    assert "calibration of judge_consistency" in report
    cache = run / "model_scores.jsonl"
    n_cached = len(cache.read_text().splitlines())
    assert n_cached == 3 * 10 * 3  # (prediction, gold, shuffled) x 10 examples x 3 scores
    res = CliRunner().invoke(app, args)  # again: every score from the cache
    assert res.exit_code == 0, res.output
    assert len(cache.read_text().splitlines()) == n_cached
    assert _metrics(run)["overall"]["judge_consistency"] == after["overall"]["judge_consistency"]
    assert len(list((run / "history").glob("*/metrics.json"))) == len(archived) + 1


def test_compare_and_plots_show_the_new_columns_and_the_calibration_flag(tmp_path, nli_dir, app):
    from spt_bench.compare import build_comparison, load_runs
    from spt_bench.compare.calibration import CALIBRATION_FLAG

    runs = [
        make_run(tmp_path, name, quality=q, n_dialogues=4) for name, q in (("a", 0.3), ("b", 0.6))
    ]
    for run in runs:
        res = CliRunner().invoke(app, ["evaluate", str(run), "--rescore", "--no-bertscore",
                                       "--consistency", "nli", "--nli-model", str(nli_dir)])  # fmt: skip
        assert res.exit_code == 0, res.output
    comparison = build_comparison(load_runs(runs))
    assert {"c_score", "c_entail_rate", "c_contradict_rate"} <= set(comparison.metrics)
    assert all(r.flags.get("c_score") == CALIBRATION_FLAG for r in comparison.rows)
    assert any("does not tell a dialogue's own" in n for n in comparison.notes)
    for fmt in ("rich", "md", "csv", "json", "latex"):  # a column in every format
        out = CliRunner().invoke(app, ["compare", *map(str, runs), "--format", fmt])
        assert out.exit_code == 0, out.output
        assert "c_score" in out.output.replace("\\_", "_").replace("c\\_score", "c_score")
        assert CALIBRATION_FLAG in out.output, fmt
    png = tmp_path / "turns.png"
    res = CliRunner().invoke(app, ["plot", "turns", *map(str, runs), "--metric", "c_score",
                                   "--out", str(png)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert png.stat().st_size > 0


def test_score_with_consistency_but_no_nli_model_says_how_to_get_one(tmp_path, app):
    run = make_run(tmp_path, "a", n_dialogues=2)
    res = CliRunner().invoke(
        app, ["score", str(run / "predictions.jsonl"), "--no-bertscore", "--consistency", "nli"]
    )
    assert res.exit_code != 0
    assert "hf download cross-encoder/nli-deberta-v3-xsmall" in res.output
    assert not (run / "scores").exists() or not list((run / "scores").glob("*/metrics.json"))


def test_score_writes_model_scores_beside_a_standalone_file(tmp_path, nli_dir, app):
    run = make_run(tmp_path, "a", n_dialogues=3)
    pred = tmp_path / "preds.jsonl"
    pred.write_text((run / "predictions.jsonl").read_text())
    res = CliRunner().invoke(app, ["score", str(pred), "--no-bertscore", "--json",
                                   "--consistency", "nli", "--nli-model", str(nli_dir)])  # fmt: skip
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    assert got["overall"]["c_score"] == 0.0 and got["calibration"]["c_score"]["auc"] == 0.5
    assert (tmp_path / "preds.model_scores.jsonl").is_file()


@pytest.mark.slow
def test_convai2_runs_with_the_smollm2_judge_show_in_report_compare_and_plots(
    tmp_path, convai2_valid, app, single_thread
):
    """End to end on the shared ConvAI2 file: two tiny runs judged by SmolLM2-135M."""
    common = ["run", "--model", "tiny-random", "--data", str(convai2_valid), "--no-bertscore",
              "--no-model-metrics", "--max-steps", "1", "--dev-limit", "2", "--eval-limit", "8",
              "--max-new-tokens", "6", "--judge", "smollm2", "--out", str(tmp_path)]  # fmt: skip
    runs = []
    for method in ("text-prompt", "full-ft"):
        res = CliRunner().invoke(app, [*common, "--method", method, "--name", method])
        assert res.exit_code == 0, res.output
        assert (
            "judge_consistency" in res.output and "calibration of judge_consistency" in res.output
        )
        runs.append(tmp_path / method)
    metrics = _metrics(runs[0])
    assert metrics["instruments"]["judge"]["fingerprint"]  # SmolLM2's files hashed
    assert metrics["calibration"]["judge_consistency"]["n"] == 8
    assert "calibration of judge_consistency" in (runs[0] / "report.md").read_text()
    out = CliRunner().invoke(app, ["compare", *map(str, runs), "--format", "md"])
    assert out.exit_code == 0, out.output
    assert "judge_consistency" in out.output and "judge_coherence" in out.output
    png = tmp_path / "turns.png"
    res = CliRunner().invoke(app, ["plot", "turns", *map(str, runs), "--metric",
                                   "judge_consistency", "--out", str(png)])  # fmt: skip
    assert res.exit_code == 0, res.output


def test_run_without_an_nli_model_fails_before_anything_loads(tmp_path, app):
    for extra in (["--dry-run"], ["--out", str(tmp_path), "--name", "x"]):
        res = CliRunner().invoke(
            app, ["run", "--model", "tiny-random", "--consistency", "nli", *extra]
        )
        assert res.exit_code != 0
        assert "hf download cross-encoder/nli-deberta-v3-xsmall" in res.output
    assert not (tmp_path / "x" / "checkpoint").exists()
