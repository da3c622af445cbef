"""Plot commands write valid images of sensible size from run folders; the numbers they draw
come from the run files (per-turn values, selection counts, loss logs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from test_compare import make_run, real_spt_run
from typer.testing import CliRunner

from spt_bench.compare import load_runs
from spt_bench.errors import SptBenchError
from spt_bench.plots import (
    plot_prompts,
    plot_training,
    plot_turns,
    prompt_usage,
    training_curves,
    turn_bucket_of,
    turn_series,
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("plotruns")
    return {
        "pt": make_run(root, "pt", method="prompt-tuning", quality=0.35, seed=1),
        "spt": make_run(root, "spt", method="spt", quality=0.5, seed=2),
    }


def _assert_sensible_png(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = im.size
    assert 800 <= w <= 3000 and 500 <= h <= 3000, (w, h)
    return w, h


def test_turn_plot_is_a_readable_png_with_one_panel_per_metric(runs, tmp_path):
    loaded = load_runs([runs["pt"], runs["spt"]])
    one = _assert_sensible_png(plot_turns(loaded, ["f1"], tmp_path / "turns.png"))
    grid = _assert_sensible_png(plot_turns(loaded, ["f1", "bleu", "dist2"], tmp_path / "g.png"))
    assert grid[1] > one[1]  # a 2x2 grid is taller than one panel


def test_turn_series_values_counts_and_bands_come_from_the_run_files(runs):
    (run,) = load_runs([runs["spt"]])
    saved = json.loads((runs["spt"] / "metrics.json").read_text())
    series = turn_series(run, "f1")
    assert series.buckets == ["0", "1", "2", "3", "4"]  # 40 dialogues x 5 turns
    assert series.values == [saved["by_turn"][b]["f1"] for b in series.buckets]
    assert series.counts == [40] * 5
    for value, (lo, hi) in zip(series.values, series.ci, strict=True):
        assert lo <= value <= hi
    # without the scorer's stored per-turn intervals they are bootstrapped from example_scores
    run.metrics.pop("by_turn_ci95", None)
    recomputed = turn_series(run, "f1", n_resamples=300)
    for value, (lo, hi) in zip(recomputed.values, recomputed.ci, strict=True):
        assert lo <= value <= hi and hi - lo > 1.0
    with pytest.raises(SptBenchError, match="not in the per-turn table"):
        turn_series(run, "bertscore_f1")


def test_turn_bucket_labels_map_turns_like_the_scorer():
    buckets = ["0", "1", "2", "3+"]
    assert [turn_bucket_of(t, buckets) for t in range(6)] == ["0", "1", "2", "3+", "3+", "3+"]
    assert turn_bucket_of(7, ["0", "1"]) is None


def test_svg_and_pdf_by_extension_and_unknown_extensions_refused(runs, tmp_path):
    loaded = load_runs([runs["spt"]])
    svg = plot_turns(loaded, ["f1"], tmp_path / "t.svg")
    assert b"<svg" in svg.read_bytes()[:400]
    pdf = plot_training(loaded[0], tmp_path / "t.pdf")
    assert pdf.read_bytes().startswith(b"%PDF")
    with pytest.raises(SptBenchError, match="unsupported image type .jpg"):
        plot_turns(loaded, ["f1"], tmp_path / "t.jpg")
    assert not (tmp_path / "t.jpg").exists()


def test_prompt_usage_counts_selections_overall_and_per_turn(runs):
    (run,) = load_runs([runs["spt"]])
    preds = [json.loads(x) for x in (runs["spt"] / "predictions.jsonl").read_text().splitlines()]
    usage = prompt_usage(run)
    assert usage.k == 4
    assert usage.overall == [sum(p["selected_prompt"] == j for p in preds) for j in range(4)]
    assert usage.overall == json.loads((runs["spt"] / "metrics.json").read_text())["prompt_usage"]
    turn2 = [p for p in preds if p["turn"] == 2]
    assert [usage.per_bucket[j][2] for j in range(4)] == [
        sum(p["selected_prompt"] == j for p in turn2) for j in range(4)
    ]
    assert usage.bucket_totals == [40] * 5
    scores = {
        json.loads(x)["id"]: json.loads(x)
        for x in (runs["spt"] / "example_scores.jsonl").read_text().splitlines()
    }
    mine = [scores[p["id"]]["f1"] for p in preds if p["selected_prompt"] == 0]
    assert usage.metric_mean[0] == pytest.approx(sum(mine) / len(mine))


def test_prompt_plot_png_and_refusal_for_runs_without_prompt_selection(runs, tmp_path):
    spt, pt = load_runs([runs["spt"], runs["pt"]])
    _assert_sensible_png(plot_prompts(spt, tmp_path / "prompts.png"))
    with pytest.raises(SptBenchError, match="no 'selected_prompt'.*prompt-tuning"):
        plot_prompts(pt, tmp_path / "no.png")


def test_training_curves_separate_losses_dev_loss_and_diagnostics(runs, tmp_path):
    curves = training_curves(runs["spt"])
    assert set(curves.losses) == {"loss", "nll", "sel", "fusion", "ctr"}
    assert set(curves.diagnostics) == {"lr", "retriever_entropy"}
    assert curves.dev[0] == [10, 20, 30]
    (run,) = load_runs([runs["spt"]])
    _assert_sensible_png(plot_training(run, tmp_path / "loss.png"))


def test_plot_cli_commands_write_images(runs, tmp_path):
    from cli import app

    runner = CliRunner()
    out = tmp_path / "cli-turns.png"
    res = runner.invoke(
        app, ["plot", "turns", str(runs["pt"]), str(runs["spt"]), "-m", "f1", "-m", "rougeL",
              "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    _assert_sensible_png(out)
    res = runner.invoke(
        app, ["plot", "prompts", str(runs["spt"]), "--out", str(tmp_path / "p.png")]
    )
    assert res.exit_code == 0, res.output
    _assert_sensible_png(tmp_path / "p.png")
    res = runner.invoke(app, ["plot", "training", str(runs["pt"]), "-o", str(tmp_path / "l.png")])
    assert res.exit_code == 0, res.output
    _assert_sensible_png(tmp_path / "l.png")
    res = runner.invoke(app, ["plot", "prompts", str(runs["pt"]), "--out", str(tmp_path / "x.png")])
    assert res.exit_code == 2 and res.output.startswith("error: ")


def test_plots_from_a_real_spt_run_of_the_harness(tmp_path_factory, tmp_path):
    run_dir = real_spt_run(tmp_path_factory)
    (run,) = load_runs([run_dir])
    curves = training_curves(run_dir)
    assert {"nll", "sel", "fusion", "ctr"} <= set(curves.losses)
    assert curves.dev[0] == [1, 2] and len(curves.dev_usage) == 2
    assert all(sum(u) == 2 for _, u in curves.dev_usage)  # dev_limit=2 examples
    _assert_sensible_png(plot_training(run, tmp_path / "loss.png"))
    usage = prompt_usage(run)
    assert usage.k == 4 and sum(usage.overall) == run.metrics["n"]
    _assert_sensible_png(plot_prompts(run, tmp_path / "prompts.png"))
    _assert_sensible_png(plot_turns([run], ["f1"], tmp_path / "turns.png"))
