"""Issue 23 items 10-12: what the commands print and write is never silently cut or wrong -
plot file modes, concise presets, tables that keep every name when piped, progress lines
without a terminal, the run folder printed first, --dry-run checking assets, help texts."""

from __future__ import annotations

import io
import os
import stat

import pytest
from typer.testing import CliRunner

from cli import app


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_plot_files_get_the_umask_mode_like_every_other_output(tmp_path, umask_022) -> None:
    from spt_bench.io import atomic_write_json
    from spt_bench.plots.common import _figure, save_figure

    fig = _figure(2, 2)
    fig.add_subplot().plot([0, 1], [0, 1])
    png = save_figure(fig, tmp_path / "p.png")
    atomic_write_json(tmp_path / "m.json", {"a": 1})
    assert _mode(png) == 0o644  # was 0600 (mkstemp's mode)
    assert _mode(tmp_path / "m.json") == 0o644


def test_presets_default_is_one_line_per_preset_with_details_on_request() -> None:
    from spt_bench.config_files import list_presets

    res = CliRunner().invoke(app, ["presets"])
    assert res.exit_code == 0, res.output
    lines = [x for x in res.output.splitlines() if x.strip()]
    names = list_presets()
    assert len(lines) <= len(names) + 3  # was ~330 lines at 80 columns
    for name in names:
        (line,) = [x for x in lines if x.split()[0] == name]
        assert "smollm2-135m" in line
    full = CliRunner().invoke(app, ["presets", "--full"])
    assert full.exit_code == 0 and "Huang et al. 2024" in full.output
    one = CliRunner().invoke(app, ["presets", "smoke"])
    assert one.exit_code == 0 and "max_steps: 4" in one.output and "bundled" in one.output
    bad = CliRunner().invoke(app, ["presets", "nope"])
    assert bad.exit_code == 2 and "unknown preset 'nope'" in bad.output


def test_methods_table_keeps_every_name_when_piped(monkeypatch) -> None:
    """Not a terminal (CliRunner, like `| grep`): no name or value is cut or wrapped."""
    import spt_bench.peft_method as pm

    monkeypatch.setattr(pm, "trainable_counts_on_meta", lambda name: {"prefix-tuning": 2261952})
    monkeypatch.delenv("COLUMNS", raising=False)
    res = CliRunner().invoke(app, ["methods"])
    assert res.exit_code == 0, res.output
    stdout = res.stdout
    rows = [x for x in stdout.splitlines() if "prefix-tuning" in x]
    assert rows and "2,261,952" in rows[0]
    assert "…" not in stdout
    assert "counting each method's trainable parameters" in res.stderr  # said at once


def test_tables_fold_instead_of_cutting_on_a_narrow_terminal() -> None:
    from rich.console import Console

    from spt_bench.tables import fold_table

    console = Console(file=io.StringIO(), width=30, force_terminal=True)
    table = fold_table(["name", "description"])
    table.add_row("prefix-tuning-no-mlp-long-name", "x")
    console.print(table)
    text = console.file.getvalue()
    assert "…" not in text


def test_progress_prints_lines_at_a_steady_rate_without_a_terminal() -> None:
    import time

    from rich.console import Console

    from spt_bench.progress import ProgressBar

    out = io.StringIO()
    console = Console(file=out, width=200)  # not a terminal
    bar = ProgressBar(console, "decode", 100, fields={"loss": "loss {}"}, every_s=0.1)
    bar.update(10, loss="2.500")
    time.sleep(0.35)
    bar.advance(40)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("decode 0/100 (0%)")
    assert len(lines) >= 4  # start, >= 2 timed lines, end
    assert any("decode 10/100 (10%)" in x and "ETA" in x and "loss 2.500" in x for x in lines)
    assert lines[-1].startswith("decode 50/100 (50%)") and "ex/s" in lines[-1]
    steps = io.StringIO()
    bar = ProgressBar(Console(file=steps), "train", 10, unit="step", every_s=60)
    bar.update(5)
    bar.close()
    assert "step/s" in steps.getvalue().splitlines()[-1]


def test_run_prints_its_folder_before_loading_anything(tmp_path) -> None:
    from rich.console import Console

    from spt_bench.config import config_from_dict
    from spt_bench.errors import SptBenchError
    from spt_bench.runner import run

    layers = {"data": {"source": str(tmp_path / "missing.txt")}, "method": {"name": "text-prompt"},
              "model": {"name": "tiny-random"}, "output": {"out": str(tmp_path / "r")}}  # fmt: skip
    out = io.StringIO()
    with pytest.raises(SptBenchError, match="file not found"):
        run(config_from_dict(layers), console=Console(file=out, width=200))
    assert out.getvalue().splitlines()[0] == f"run folder: {tmp_path / 'r'}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "/nonexistent/x.txt"], "/nonexistent/x.txt: file not found"),
        (["--model", "/nonexistent/model"], "model '/nonexistent/model' is neither"),
        (["--train-data", "/nonexistent/t.txt", "--test-data", "/nonexistent/v.txt"],
         "/nonexistent/t.txt: file not found"),
    ],
)  # fmt: skip
def test_dry_run_fails_on_a_missing_data_file_or_model_like_the_run(args, message) -> None:
    res = CliRunner().invoke(app, ["run", "--dry-run", *args])
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines() == [f"error: {message}"] or (
        res.stderr.strip().startswith(f"error: {message}") and len(res.stderr.splitlines()) == 1
    )
    assert "run folder" not in res.stdout


def test_set_hint_shows_a_usable_key_value_form() -> None:
    res = CliRunner().invoke(app, ["run", "--set", "foo", "--dry-run"])
    assert res.exit_code == 2
    assert "e.g. train.eval_every=50" in res.stderr
    assert "(train.eval_every)=50" not in res.stderr


def test_score_help_and_wrote_line_name_the_real_places(tmp_path) -> None:
    from test_metrics_cli import write_predictions

    preds = tmp_path / "predictions.jsonl"
    write_predictions(preds, n=12)
    res = CliRunner().invoke(
        app, ["score", str(preds), "--no-bertscore", "--resamples", "0", "--out", str(tmp_path)]
    )
    assert res.exit_code == 0, res.output
    (wrote,) = [x for x in res.stdout.splitlines() if x.startswith("wrote ")]
    for name in ("metrics.json", "example_scores.jsonl", "example_stats.jsonl"):
        assert name in wrote and (tmp_path / name).is_file()
    help_text = " ".join(CliRunner().invoke(app, ["score", "--help"]).output.split())
    assert "RUN/scores/<time>/" in help_text
