"""`spt-bench score PREDICTIONS.jsonl`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli import app
from spt_bench.metrics import paired_bootstrap, score_predictions

runner = CliRunner()


def write_predictions(path, n: int = 60) -> list[dict]:
    rows = []
    for i in range(n):
        rows.append(
            {
                "id": f"dlg{i // 6}:{i % 6}",
                "dialog_id": f"dlg{i // 6}",
                "turn": i // 30,
                "persona": ["i have two dogs .", "i like to cook ."],
                "history": ["hi , how are you ?"],
                "reference": f"i am good , my {i % 4} dogs are sleeping .",
                "prediction": f"i am fine , i cook pasta {i % 3} times a week .",
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return rows


def test_json_output_has_the_contract_keys_and_metrics_file_is_written(tmp_path):
    preds = tmp_path / "preds.jsonl"
    write_predictions(preds)
    result = runner.invoke(
        app, ["score", str(preds), "--json", "--no-bertscore", "--resamples", "100"]
    )
    assert result.exit_code == 0, result.output
    js = json.loads(result.stdout)
    for key in ("overall", "ci95", "by_turn", "bertscore_model", "n"):
        assert key in js
    assert js["n"] == 60 and js["bertscore_model"] is None
    assert list(js["by_turn"]) == ["0", "1"] and js["by_turn"]["1"]["n"] == 30
    on_disk = json.loads((tmp_path / "preds.metrics.json").read_text())
    assert on_disk["overall"] == js["overall"]
    assert on_disk["predictions_file"] == str(preds)
    lines = (tmp_path / "preds.example_scores.jsonl").read_text().splitlines()
    assert len(lines) == 60 and json.loads(lines[0])["id"] == "dlg0:0"


def test_example_scores_are_enough_to_rerun_the_paired_test(tmp_path):
    preds = tmp_path / "preds.jsonl"
    rows = write_predictions(preds)
    assert (
        runner.invoke(app, ["score", str(preds), "--no-bertscore", "--resamples", "0"]).exit_code
        == 0
    )
    saved = [
        json.loads(x) for x in (tmp_path / "preds.example_scores.jsonl").read_text().splitlines()
    ]
    other = [{**r, "prediction": r["reference"]} for r in rows]
    better = score_predictions(other, bertscore=None, n_resamples=0)
    result = paired_bootstrap(better.per_example, saved, n_resamples=200)
    assert result["f1"]["delta"] > 0 and result["dist1"]["delta"] != 0


def test_out_option_and_table_output(tmp_path):
    preds = tmp_path / "preds.jsonl"
    write_predictions(preds)
    out = tmp_path / "elsewhere" / "scores.json"
    result = runner.invoke(
        app, ["score", str(preds), "--no-bertscore", "--out", str(out), "--resamples", "50"]
    )
    assert result.exit_code == 0, result.output
    assert out.is_file() and (out.parent / "scores.example_scores.jsonl").is_file()
    assert not (tmp_path / "metrics.json").exists()
    for text in ("f1_raw", "95% CI", "By dialogue turn", "BERTScore: skipped", "persona_f1"):
        assert text in result.stdout


@pytest.mark.parametrize("as_folder", ["new/", "existing"])
def test_out_naming_a_folder_writes_metrics_json_inside_it(tmp_path, as_folder):
    preds = tmp_path / "preds.jsonl"
    write_predictions(preds, n=12)
    (tmp_path / "existing").mkdir()
    result = runner.invoke(
        app,
        ["score", str(preds), "--no-bertscore", "--resamples", "0", "--out", f"{tmp_path}/{as_folder}"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    folder = tmp_path / as_folder.rstrip("/")
    assert folder.is_dir() and (folder / "metrics.json").is_file()
    assert (folder / "example_scores.jsonl").is_file()


@pytest.mark.parametrize(
    ("content", "where"),
    [
        ('{"id": "a", "reference": "x", "prediction": "y"}\nnot json\n', ":2:"),
        ('{"id": "a", "prediction": "y"}\n', ":1:"),
        ("", "empty file"),
    ],
)
def test_bad_input_is_a_one_line_error_with_exit_code_2(tmp_path, content, where):
    preds = tmp_path / "preds.jsonl"
    preds.write_text(content)
    result = runner.invoke(app, ["score", str(preds), "--no-bertscore"])
    assert result.exit_code == 2
    err = result.stderr.strip()
    assert err.startswith("error: ") and str(preds) in err and where in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "metrics.json").exists()


def test_missing_file_and_bad_bertscore_layer_exit_2(tmp_path):
    result = runner.invoke(app, ["score", str(tmp_path / "nope.jsonl"), "--no-bertscore"])
    assert result.exit_code == 2 and "file not found" in result.stderr
    preds = tmp_path / "preds.jsonl"
    write_predictions(preds, 3)
    result = runner.invoke(app, ["score", str(preds), "--bertscore-layer", "9"])
    assert result.exit_code == 2 and "out of range" in result.stderr


def test_bertscore_encoder_and_layer_are_written_next_to_the_numbers(tmp_path):
    preds = tmp_path / "preds.jsonl"
    write_predictions(preds, 6)
    result = runner.invoke(app, ["score", str(preds), "--json", "--resamples", "20"])
    assert result.exit_code == 0, result.output
    js = json.loads(result.stdout)
    assert js["bertscore_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert js["bertscore_layer"] == 5 and js["bertscore_idf"] is False
    assert 0 < js["overall"]["bertscore_f1"] <= 100
    assert js["ci95"]["bertscore_f1"][0] <= js["overall"]["bertscore_f1"]
