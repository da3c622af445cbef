"""Malformed data files end in one line naming file, line and problem, exit code 2."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli import app

runner = CliRunner()

GOOD_HEAD = "1 your persona: i like tea.\n2 hi .\thello , want some tea ?\n"

# (file name, content, expected line, words in the problem)
BAD_FILES = [
    ("no_tab.txt", "1 your persona: i like tea.\n2 hi . hello , want some tea ?\n", 2, "TAB"),
    ("no_number.txt", GOOD_HEAD + "yes please .\there you go .\n", 3, "number"),
    ("starts_at_3.txt", "3 your persona: i like tea.\n4 hi .\thello .\n", 1, "starts at 3"),
    ("gap.txt", GOOD_HEAD + "4 thanks .\tyou are welcome .\n", 3, "expected 3"),
    ("bad_utf8.txt", GOOD_HEAD.encode() + b"3 caf\xe9 ?\tyes .\n", 3, "invalid UTF-8"),
    ("binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00", 3, "binary"),
    ("empty.txt", b"", 1, "empty"),
    ("blank.txt", "\n\n  \n", 1, "empty"),
    (
        "only_persona.txt",
        "1 your persona: i like tea.\n2 your persona: i hate rain.\n",
        2,
        "no examples",
    ),
    ("blank_line.txt", GOOD_HEAD + "\n3 more ?\tno .\n", 3, "blank line"),
    ("persona_late.txt", GOOD_HEAD + "3 your persona: i am tall.\n", 3, "persona line after"),
    ("fields.txt", "1 a\tb\tc\td\te\n", 1, "5 TAB-separated fields"),
    ("no_response.txt", "1 hi .\t \n", 1, "empty response"),
    (
        "empty_dialogue.txt",
        "1 your persona: i like tea.\n1 your persona: x.\n2 hi .\tyo .\n",
        2,
        "no dialogue lines",
    ),
    (
        "bad.jsonl",
        '{"dialog_id": "a", "turn": 0, "persona": [], "history": [], "response": "x"}\n{oops\n',
        2,
        "invalid JSON",
    ),
    (
        "missing.jsonl",
        '{"dialog_id": "a", "turn": 0, "persona": [], "history": []}\n',
        1,
        "response",
    ),
    (
        "badturn.jsonl",
        '{"dialog_id": "a", "turn": -1, "persona": [], "history": [], "response": "x"}\n',
        1,
        "turn",
    ),
    (
        "badid.jsonl",
        '{"id": "b:0", "dialog_id": "a", "turn": 0, "persona": [], "history": [], "response": "x"}\n',
        1,
        "'id'",
    ),
    (
        "extra.jsonl",
        '{"dialog_id": "a", "turn": 0, "persona": [], "history": [], "response": "x", "mood": 1}\n',
        1,
        "unknown field",
    ),
]


@pytest.mark.parametrize(
    ("name", "content", "line", "problem"), BAD_FILES, ids=[b[0] for b in BAD_FILES]
)
@pytest.mark.parametrize("command", ["stats", "show"])
def test_bad_file_is_one_line_error_with_file_and_line(
    tmp_path, name, content, line, problem, command
):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    result = runner.invoke(app, ["data", command, str(path)])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {path}:{line}: "), lines[0]
    assert problem in lines[0]
    assert "Traceback" not in result.output


def test_invalid_utf8_names_its_line_and_byte(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes(GOOD_HEAD.encode() + b"3 ok .\tfine .\n4 \xff\xfe .\tno .\n")
    result = runner.invoke(app, ["data", "stats", str(path)])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {path}:4: invalid UTF-8 (byte 0xff at column 3)"


def test_missing_file_and_folder_without_data_are_one_line_errors(tmp_path):
    for args, expected in [
        (["data", "stats", str(tmp_path / "nope.txt")], "file not found"),
        (["data", "stats", str(tmp_path)], "no data files"),
        (
            ["data", "split", "sample", "--out", str(tmp_path / "o"), "--protocol", "x"],
            "unknown split protocol",
        ),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert len(result.output.strip().splitlines()) == 1
        assert expected in result.output


def test_split_failure_leaves_existing_output_untouched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.jsonl").write_text("keep me\n")
    bad = tmp_path / "bad.txt"
    bad.write_text("1 hi\n")
    result = runner.invoke(app, ["data", "split", str(bad), "--out", str(out)])
    assert result.exit_code == 2
    assert (out / "train.jsonl").read_text() == "keep me\n"
    assert sorted(p.name for p in out.iterdir()) == ["train.jsonl"]
