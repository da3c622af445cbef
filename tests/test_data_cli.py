"""`spt-bench data stats|show|split|convert` on the real file and the bundled sample."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from cli import app
from spt_bench.data import load_examples, read_examples_jsonl

runner = CliRunner()


def test_stats_json_on_real_file(convai2_valid):
    result = runner.invoke(app, ["data", "stats", str(convai2_valid), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["dialogues"] == 1000 and stats["examples"] == 7801
    assert stats["persona_lines_per_dialogue"]["min"] == 4
    assert stats["persona_lines_per_dialogue"]["max"] == 5
    assert stats["turns_per_dialogue"]["mean"] == 7.801
    assert stats["tokenization"] == "whitespace"
    assert stats["tokens"]["response"]["max"] == 24


def test_stats_tables_on_sample():
    result = runner.invoke(app, ["data", "stats", "sample"])
    assert result.exit_code == 0, result.output
    assert "219" in result.output and "41" in result.output
    assert "whitespace" in result.output


def test_show_prints_persona_history_and_response():
    result = runner.invoke(app, ["data", "show", "sample", "--n", "2", "--start", "1"])
    assert result.exit_code == 0, result.output
    first, second = load_examples("sample")[1:3]
    for ex in (first, second):
        assert ex.id in result.output
        assert ex.persona[0] in result.output
    assert "partner: hey there ! how is your week going ?" in result.output
    assert "response" in result.output and "history" in result.output
    assert load_examples("sample")[3].id not in result.output


def test_split_writes_three_files_and_manifest(tmp_path, convai2_valid):
    out = tmp_path / "split"
    result = runner.invoke(app, ["data", "split", str(convai2_valid), "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "split.json").read_text())
    assert manifest["counts"]["train"]["dialogues"] == 800
    assert manifest["counts"]["test"]["examples"] == 783
    assert manifest["sources"]["all"] == str(convai2_valid)
    test = read_examples_jsonl(out / "test.jsonl")
    assert len({ex.dialog_id for ex in test}) == 100
    assert not list(out.glob(".*.tmp"))


def test_convert_to_jsonl_and_back_to_text(tmp_path):
    jsonl = tmp_path / "sample.jsonl"
    text = tmp_path / "sample.txt"
    assert runner.invoke(app, ["data", "convert", "sample", str(jsonl)]).exit_code == 0
    assert runner.invoke(app, ["data", "convert", str(jsonl), str(text)]).exit_code == 0
    from spt_bench.data import sample_path

    assert text.read_text() == sample_path().read_text()
    bad = runner.invoke(app, ["data", "convert", "sample", str(tmp_path / "x.csv")])
    assert bad.exit_code == 2 and "must end in .jsonl or .txt" in bad.output


def test_help_does_not_import_datasets_or_torch():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from cli import app\n"
        "r = CliRunner().invoke(app, ['data', '--help'])\n"
        "import spt_bench.data\n"
        "assert r.exit_code == 0\n"
        "print(sorted(m for m in ('datasets', 'torch') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
