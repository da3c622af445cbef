"""Plot commands write valid images of sensible size from run folders; the numbers they draw
come from the run files (per-turn values, selection counts, loss logs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from run_helpers import make_run
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


def test_plots_from_a_real_spt_run_of_the_harness(finished_spt, tmp_path):
    run_dir = finished_spt
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


def _log_run(root: Path, rows: list[dict]) -> Path:
    run = root / "logged"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"method": "spt", "method_options": {"k": 4}}))
    (run / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


SPT_LOG = [
    {"step": s, "loss": 3.0 - 0.1 * s, "nll": 2.5 - 0.1 * s, "sel": 0.2, "fusion": 2.4,
     "ctr": 0.1, "retriever_entropy": 1.2, "score_sum": 40.0 + s, "lr": 1e-3}
    for s in range(1, 6)
] + [{"step": 5, "dev_loss": 2.1, "prompt_usage": [7, 1, 0, 0]}]  # fmt: skip


def test_single_dev_evaluation_draws_its_prompt_usage_as_a_stacked_bar(tmp_path):
    from spt_bench.compare import RunRecord
    from spt_bench.plots import training_figure

    run = RunRecord(path=_log_run(tmp_path, SPT_LOG), config={}, metrics={}, label="spt")
    (ax,) = training_figure(run, panels=["usage"]).axes
    heights = [p.get_height() for p in ax.patches]
    assert heights == [87.5, 12.5, 0.0, 0.0]  # 7 and 1 of 8 dev examples
    assert "[7, 1, 0, 0] at step 5" in ax.get_title()


def test_diagnostics_such_as_score_sum_stay_out_of_the_loss_terms(tmp_path):
    rows = [{**r, "my_gauge": 0.5} for r in SPT_LOG[:-1]] + SPT_LOG[-1:]
    curves = training_curves(_log_run(tmp_path, rows))
    assert set(curves.losses) == {"loss", "nll", "sel", "fusion", "ctr"}
    assert set(curves.diagnostics) == {"lr", "retriever_entropy", "score_sum", "my_gauge"}


def test_panels_option_picks_panels_in_order_and_names_the_available_ones(tmp_path):
    from cli import app
    from spt_bench.compare import RunRecord
    from spt_bench.plots import training_figure

    run_dir = _log_run(tmp_path, SPT_LOG)
    run = RunRecord(path=run_dir, config={}, metrics={}, label="spt")
    fig = training_figure(run, panels=["score_sum,loss"])
    assert [ax.get_title().split(":")[0] for ax in fig.axes] == [
        "SPT retriever",
        "Training and dev loss (response tokens)",
    ]
    runner = CliRunner()
    out = tmp_path / "figs" / ""
    res = runner.invoke(
        app, ["plot", "training", str(run_dir), "--panels", "loss", "-o", f"{out}/"]
    )
    assert res.exit_code == 0, res.output
    _assert_sensible_png(tmp_path / "figs" / "loss.png")  # a folder: the default name
    res = runner.invoke(app, ["plot", "training", str(run_dir), "--panels", "grad_norm"])
    assert res.exit_code == 2
    assert "no panel 'grad_norm'" in res.output and "available: loss, terms, lr," in res.output


def test_turn_plot_of_a_run_too_small_for_two_buckets_warns_and_says_what_size_is_needed(
    tmp_path,
):
    from cli import app

    small = make_run(tmp_path, "small", method="prompt-tuning", keep=24)
    (run,) = load_runs([small])
    series = turn_series(run, "f1")
    assert len(series.buckets) == 1 and series.counts == [24]
    res = CliRunner().invoke(app, ["plot", "turns", str(small), "-o", str(tmp_path / "t.png")])
    assert res.exit_code == 0, res.output
    assert "warning: " in res.stderr and "its 24 examples make one turn bucket" in res.stderr
    assert "at least 30 examples per turn" in res.stderr
    _assert_sensible_png(tmp_path / "t.png")
    big = load_runs([make_run(tmp_path, "big", method="prompt-tuning")])[0]
    from spt_bench.plots import degenerate_turns_note

    assert degenerate_turns_note(turn_series(big, "f1"), big.metrics["n"]) is None
