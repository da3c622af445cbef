"""`spt-bench compare`: formats parse back to the run files' numbers, refusals, paper rows.

Run folders are built here from synthetic predictions scored by the real scorer
(metrics.score_predictions, BERTScore off), so metrics.json / example_scores.jsonl have exactly
the harness's format (tests/run_helpers.py, shared with the plot, chat and stats tests).
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from run_helpers import (  # noqa: F401
    FILLER,
    WORDS,
    make_predictions,
    make_run,
    md_table_cells,
)
from typer.testing import CliRunner

from spt_bench.compare import (
    ComparisonRefused,
    build_comparison,
    compare_command,
    discover_runs,
    load_runs,
    relative_gain,
    render,
)
from spt_bench.errors import SptBenchError
from spt_bench.io import atomic_write_json
from spt_bench.paper import PAPER_AVG_METRICS, load_paper_results


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {
        "pt": make_run(root, "pt", method="prompt-tuning", quality=0.35, seed=1),
        "spt": make_run(root, "spt", method="spt", quality=0.5, seed=2),
        "root": root,
    }


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_json_csv_md_latex_rich_show_the_run_files_numbers(runs):
    comparison = build_comparison(load_runs([runs["pt"], runs["spt"]]), baseline="prompt-tuning")
    files = {r.label: _metrics(Path(r.path)) for r in comparison.rows}
    assert set(comparison.metrics) >= {"f1", "f1_raw", "bleu", "rougeL", "dist1", "dist2"}
    assert "bertscore_f1" not in comparison.metrics  # not scored: no empty column

    parsed = json.loads(render(comparison, "json"))
    for row in parsed["rows"]:
        saved = files[row["label"]]
        for m in comparison.metrics:
            assert row["values"][m] == saved["overall"][m]
            assert row["ci95"][m] == saved["ci95"][m]

    table = list(csv.DictReader(io.StringIO(render(comparison, "csv"))))
    assert len(table) == 2
    for rec in table:
        saved = files[rec["label"]]
        for m in comparison.metrics:
            assert float(rec[m]) == saved["overall"][m]
            assert float(rec[f"{m}_ci_low"]) == saved["ci95"][m][0]
            assert float(rec[f"{m}_ci_high"]) == saved["ci95"][m][1]

    header, body = md_table_cells(render(comparison, "md"))
    assert len(body) == 2
    for cells in body:
        label = cells[0].removesuffix(" (baseline)")
        saved = files[label]
        for m, cell in zip(comparison.metrics, cells[1:], strict=True):
            value, lo, hi = (float(x) for x in re.findall(r"-?\d+\.\d+", cell))
            assert value == round(saved["overall"][m], 2)
            assert (lo, hi) == (round(saved["ci95"][m][0], 2), round(saved["ci95"][m][1], 2))

    latex = render(comparison, "latex")
    assert latex.count(r"\begin{tabular}") == 2  # values, gains
    for r in comparison.rows:
        assert f"{r.values['f1']:.2f}" in latex and r.label.split(" (")[0] in latex
    rich_text = render(comparison, "rich")
    for r in comparison.rows:
        assert r.label in rich_text
        assert f"{r.values['f1']:.2f}" in rich_text


def test_gains_avg_and_p_values_are_defined_as_documented(runs):
    from spt_bench.metrics import paired_bootstrap

    comparison = build_comparison(load_runs([runs["pt"], runs["spt"]]), baseline=str(runs["pt"]))
    base_row, spt_row = comparison.rows
    assert base_row.is_baseline and not base_row.gain
    pt, spt = _metrics(runs["pt"])["overall"], _metrics(runs["spt"])["overall"]
    for m in comparison.metrics:
        assert spt_row.gain[m] == pytest.approx(100 * (spt[m] - pt[m]) / pt[m])
    # AVG: the paper's ten metrics, F1 = our f1_raw; without BERTScore only 7 of them exist
    used = [m for m in PAPER_AVG_METRICS if m in spt]
    assert spt_row.avg_gain_metrics == used and len(used) == 7
    assert spt_row.avg_gain == pytest.approx(
        sum(100 * (spt[m] - pt[m]) / pt[m] for m in used) / len(used)
    )
    assert any("fewer than the paper's ten" in n for n in comparison.notes)

    def rows(run):
        return [json.loads(x) for x in (run / "example_scores.jsonl").read_text().splitlines()]

    direct = paired_bootstrap(rows(runs["spt"]), rows(runs["pt"]), seed=0)
    for m in comparison.metrics:
        assert spt_row.p_value[m] == direct[m]["p_value"]
    # quality 0.5 vs 0.35 on 200 examples: F1 clearly better, marked significant
    assert spt_row.gain["f1"] > 0 and spt_row.p_value["f1"] < 0.01
    md = render(comparison, "md")
    header, body = md_table_cells(md)
    gain_header, gain_body = md_table_cells(md.split("Relative gain")[1])
    f1_cell = gain_body[0][gain_header.index("F1")]
    assert f1_cell.startswith(f"{spt_row.gain['f1']:+.2f}**")


def test_best_value_per_column_follows_higher_is_better():
    from spt_bench.compare.stats import _higher_is_better

    assert _higher_is_better([], "f1") is True
    assert _higher_is_better([], "ppl") is False
    assert _higher_is_better([], "avg_len") is None  # descriptive: never highlighted
    assert relative_gain(8.0, 10.0, False) == pytest.approx(20.0)  # lower ppl = +20% better
    assert relative_gain(12.0, 10.0, True) == pytest.approx(20.0)
    assert relative_gain(1.0, 0.0, True) is None


def test_best_cells_are_bold_in_markdown(runs):
    comparison = build_comparison(load_runs([runs["pt"], runs["spt"]]))
    header, body = md_table_cells(render(comparison, "md"))
    for j, m in enumerate(comparison.metrics, start=1):
        values = {r.label: r.values[m] for r in comparison.rows}
        best = max(values.values())
        for cells in body:
            bold = cells[j].startswith("**")
            assert bold == (values[cells[0]] == best), (m, cells)
    assert comparison.baseline is None and not any(r.gain for r in comparison.rows)


def test_refuses_runs_scored_on_different_example_sets(runs, tmp_path):
    short = make_run(tmp_path, "short", method="spt", quality=0.5, seed=3, keep=150)
    with pytest.raises(ComparisonRefused, match="different example sets.*--force"):
        build_comparison(load_runs([runs["pt"], short]))
    forced = build_comparison(load_runs([runs["pt"], short]), force=True, baseline="prompt-tuning")
    assert any(n.startswith("forced: runs were scored on different") for n in forced.notes)
    # p-values only over the shared examples: still defined
    assert forced.rows[1].p_value

    result = CliRunner().invoke(
        _cli_app(), ["compare", str(runs["pt"]), str(short), "--format", "json"]
    )
    assert result.exit_code == 2
    assert result.output.startswith("error: runs were scored on different example sets")
    assert len(result.output.strip().splitlines()) == 1


def test_refuses_runs_scored_with_different_bertscore_encoders(tmp_path):
    a = make_run(tmp_path, "a", method="prompt-tuning", quality=0.4)
    b = make_run(tmp_path, "b", method="spt", quality=0.4)
    for run, encoder in ((a, "all-MiniLM-L6-v2"), (b, "roberta-large")):
        m = _metrics(run)
        m["bertscore_model"], m["bertscore_layer"] = encoder, 6
        atomic_write_json(run / "metrics.json", m)
    with pytest.raises(ComparisonRefused, match="different BERTScore encoders"):
        build_comparison(load_runs([a, b]))
    assert build_comparison(load_runs([a, b]), force=True).notes


def test_paper_rows_are_present_labelled_and_use_the_authors_f1(runs):
    comparison = build_comparison(
        load_runs([runs["pt"], runs["spt"]]), baseline="prompt-tuning", paper=True
    )
    paper_rows = [r for r in comparison.rows if r.source == "paper"]
    published = load_paper_results()
    assert len(paper_rows) == len(published) == 8
    for row, rec in zip(paper_rows, published, strict=True):
        assert row.label == f"paper: {rec.model} {rec.method} (published)"
        assert row.values["f1_raw"] == rec.values["f1_raw"]  # paper "f1" is our f1_raw
        assert "f1" not in row.values  # the normalised F1 was never published
        assert row.bertscore_model == "microsoft/deberta-xlarge-mnli"
        assert not row.best and not row.ci95 and not row.p_value
    # all ten paper metrics are columns, even though our runs have no BERTScore
    assert set(PAPER_AVG_METRICS) <= set(comparison.metrics)
    spt125 = next(r for r in paper_rows if r.label.startswith("paper: OPT-125M SPT"))
    assert spt125.baseline == "paper: OPT-125M PT (published)"
    assert spt125.gain["bleu"] == pytest.approx(100 * (2.22 - 1.61) / 1.61)
    assert len(spt125.avg_gain_metrics) == 10
    note = " ".join(comparison.notes)
    assert "published" in note and "f1_raw" in note and "deberta-xlarge-mnli" in note

    md = render(comparison, "md")
    assert "paper: Llama2-7B SPT (published)" in md
    csv_rows = list(csv.DictReader(io.StringIO(render(comparison, "csv"))))
    assert [r["source"] for r in csv_rows].count("paper") == 8
    assert float(csv_rows[2]["f1_raw"]) == 10.79 and csv_rows[2]["f1"] == ""


def test_globs_and_folders_of_runs_skip_incomplete_runs_with_a_warning(runs, tmp_path):
    incomplete = runs["root"] / "killed"
    incomplete.mkdir(exist_ok=True)
    atomic_write_json(incomplete / "config.json", {"method": "spt"})
    paths, notes = discover_runs([runs["root"]])
    assert set(paths) == {runs["pt"].resolve(), runs["spt"].resolve()}
    assert notes == [f"{incomplete}: incomplete run (no metrics.json), ignored"]
    paths, _ = discover_runs([str(runs["root"] / "*")])
    assert len(paths) == 2
    with pytest.raises(SptBenchError, match="no files or folders match"):
        discover_runs([str(tmp_path / "nothing-*")])
    with pytest.raises(SptBenchError, match="no complete runs"):
        load_runs([incomplete], warn=lambda m: None)

    warnings: list[str] = []
    out = tmp_path / "table.csv"
    compare_command([str(runs["root"] / "*")], out=out, err=warnings.append)
    assert out.is_file() and len(list(csv.DictReader(out.open()))) == 2
    assert any("incomplete run" in w for w in warnings)


def test_labels_name_method_key_settings_and_what_differs(tmp_path):
    a = make_run(tmp_path, "a", method="spt", seed=1, method_options={"k": 2, "prompt_len": 4})
    b = make_run(tmp_path, "b", method="spt", seed=2, method_options={"k": 2, "prompt_len": 4})
    c = make_run(tmp_path, "c", method="prompt-tuning", seed=2)
    labels = [r.label for r in load_runs([a, b, c])]
    assert labels == ["spt (K=2, L=4, seed=1)", "spt (K=2, L=4, seed=2)", "prompt-tuning"]
    with pytest.raises(SptBenchError, match="matches 2 runs"):
        build_comparison(load_runs([a, b, c]), baseline="spt", group_seeds=False)
    # grouped (the default): the two seeds are one row, and "spt" names it
    grouped = build_comparison(load_runs([a, b, c]), baseline="spt")
    assert [r.label for r in grouped.rows] == ["spt (K=2, L=4) [2 seeds]", "prompt-tuning"]


def test_cli_compare_prints_machine_formats_to_stdout(runs, tmp_path):
    app = _cli_app()
    result = CliRunner().invoke(
        app,
        [
            "compare",
            str(runs["root"]),
            "--baseline",
            "prompt-tuning",
            "--format",
            "json",
            "--paper",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["baseline"] == "prompt-tuning"
    assert {r["source"] for r in data["rows"]} == {"run", "paper"}
    out = tmp_path / "t.tex"
    result = CliRunner().invoke(app, ["compare", str(runs["root"]), "--out", str(out)])
    assert result.exit_code == 0 and out.read_text().count(r"\begin{tabular}") == 1
    result = CliRunner().invoke(app, ["compare", str(runs["root"]), "--format", "yaml"])
    assert result.exit_code == 2 and "unknown --format" in result.output


def test_cli_and_report_modules_import_without_matplotlib_or_torch():
    code = (
        "import sys, cli, spt_bench.compare, spt_bench.plots, spt_bench.paper, spt_bench.chat\n"
        "heavy = [m for m in ('matplotlib', 'torch', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def _cli_app():
    from cli import app

    return app


def test_real_harness_runs_compare_and_report(finished_full_ft, tmp_path):
    """Two tiny `spt-bench run`s through the harness: compare reads their files unchanged, a
    different eval set (the session's full-ft run: 3 examples) is refused, and each report.md
    carries the metric table."""
    from spt_bench.config import config_from_dict
    from spt_bench.runner import run

    def harness_run(name: str, eval_limit: int, seed: int) -> Path:
        config = config_from_dict(
            dict(
                method="text-prompt",
                model="tiny-random",
                seed=seed,
                eval_limit=eval_limit,
                max_new_tokens=4,
                bertscore=False,
                out=str(tmp_path),
                name=name,
            )
        )
        return run(config, progress=False).run_dir

    a, b = harness_run("a", 6, 0), harness_run("b", 6, 1)
    comparison = build_comparison(load_runs([a, b]), baseline=str(a), group_seeds=False)
    parsed = json.loads(render(comparison, "json"))
    for row in parsed["rows"]:
        saved = _metrics(Path(row["path"]))
        assert row["n"] == saved["n"] == 6
        assert row["values"] == {m: saved["overall"][m] for m in parsed["metrics"]}
    assert [r["label"] for r in parsed["rows"]] == [
        "text-prompt (shots=0, seed=0)",
        "text-prompt (shots=0, seed=1)",
    ]
    # by default the two seeds are one row: the mean of the files' values, both per seed
    (row,) = build_comparison(load_runs([a, b])).rows
    for m, value in row.values.items():
        per_seed = [_metrics(p)["overall"][m] for p in (a, b)]
        assert row.per_seed[m] == per_seed and value == pytest.approx(sum(per_seed) / 2)
    with pytest.raises(ComparisonRefused, match="different example sets"):
        build_comparison(load_runs([a, finished_full_ft]))
    # the run wrote the text-free score file beside example_scores.jsonl, one row per example
    stats = [json.loads(x) for x in (a / "example_stats.jsonl").read_text().splitlines()]
    assert len(stats) == 6 and not {"prediction", "reference"} & set(stats[0])
    report = (a / "report.md").read_text()
    assert "| metric | value | 95% CI |" in report
    f1 = _metrics(a)["overall"]["f1"]
    assert re.search(rf"\| f1 ↑ \| {f1:.2f} \|", report)


def test_report_md_has_metric_table_per_turn_cis_prompt_usage_and_samples(runs, tmp_path):
    from spt_bench.report import write_report

    run = runs["spt"]
    config = json.loads((run / "config.json").read_text())
    metrics = _metrics(run)
    rows = [json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()]
    out = tmp_path / "r"
    out.mkdir()
    (out / "example_scores.jsonl").write_text((run / "example_scores.jsonl").read_text())
    from spt_bench.methods import get_method

    text = write_report(out, config, metrics, rows, get_method("spt")).read_text()
    assert "| metric | value | 95% CI |" in text
    lo, hi = metrics["ci95"]["f1"]
    assert f"| f1 ↑ | {metrics['overall']['f1']:.2f} | [{lo:.2f}, {hi:.2f}] |" in text
    b0, ci0 = metrics["by_turn"]["0"], metrics["by_turn_ci95"]["0"]["f1"]
    assert f"| 0 | 40 | {b0['f1']:.2f} [{ci0[0]:.2f}, {ci0[1]:.2f}] |" in text
    assert "## Prompt usage (SPT)" in text
    usage = metrics["prompt_usage"]
    for j, count in enumerate(usage):
        assert f"| {j} | {count} | {100 * count / sum(usage):.1f}% |" in text
    assert "## Samples" in text and "- prediction: " in text


def test_trainable_parameter_counts_are_a_column_of_every_format(tmp_path):
    a = make_run(tmp_path, "pt", method="prompt-tuning", quality=0.3, n_dialogues=6)
    b = make_run(tmp_path, "pfx", method="prefix-tuning", quality=0.4, n_dialogues=6)
    for run, n in ((a, 4608), (b, 2_261_952)):
        m = json.loads((run / "metrics.json").read_text())
        m["method"] = {"method": "x", "trainable_params": n}
        atomic_write_json(run / "metrics.json", m)
    c = build_comparison(load_runs([a, b]))
    assert [r.trainable_params for r in c.rows] == [4608, 2_261_952]
    md = render(c, "md")
    assert "| Trainable |" in md and "| 4.6K |" in md and "| 2.26M |" in md
    assert "4608" in render(c, "csv").splitlines()[1]
    assert "Trainable" in render(c, "latex") and "2.26M" in render(c, "latex")
    assert '"trainable_params": 2261952' in render(c, "json")
