"""ParlAI/ConvAI2 reader: the real validation file and every variant on small files."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import pytest

from spt_bench.data import Example, format_parlai, load_examples, parse_parlai, write_parlai
from spt_bench.errors import SptBenchError


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the real file


@pytest.fixture(scope="module")
def valid_examples(convai2_valid: Path) -> list[Example]:
    return parse_parlai(convai2_valid)


def test_real_valid_file_has_1000_dialogues_and_7801_examples(valid_examples):
    assert len(valid_examples) == 7801
    assert len({ex.dialog_id for ex in valid_examples}) == 1000


def test_real_valid_first_example_persona_history_and_response(valid_examples):
    first = valid_examples[0]
    assert first.dialog_id == "valid_self_original_no_cands:0"
    assert first.id == "valid_self_original_no_cands:0:0"
    assert first.turn == 0
    assert first.persona == (
        "i read twenty books a year.",
        "i'm a stunt double as my second job.",
        "i only eat kosher.",
        "i was raised in a single parent household.",
    )
    assert first.history == ("hello what are doing today ?",)
    assert first.response == "i am good , i just got off work and tired , i have two jobs ."
    assert first.partner_persona == () and first.candidates == ()


def test_real_valid_turns_are_contiguous_and_histories_grow_by_two(valid_examples):
    by_dialog: dict[str, list[Example]] = defaultdict(list)
    for ex in valid_examples:
        by_dialog[ex.dialog_id].append(ex)
    for dialogue in by_dialog.values():
        assert [ex.turn for ex in dialogue] == list(range(len(dialogue)))
        for prev, ex in zip(dialogue, dialogue[1:], strict=False):
            assert ex.history[:-1] == prev.history + (prev.response,)
            assert ex.persona == prev.persona
        assert all(len(ex.history) == 2 * ex.turn + 1 for ex in dialogue)
    persona_counts = {len(d[0].persona) for d in by_dialog.values()}
    assert persona_counts == {4, 5}


def test_real_valid_file_round_trips_byte_for_byte(convai2_valid, valid_examples):
    assert format_parlai(valid_examples) == convai2_valid.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- variants

SELF = """\
1 your persona: i knit scarves for my cats.
2 your persona: i live by the sea.
3 hello ! how are you ?\ti am well . i just finished a scarf for my cat .
4 a scarf for a cat ?\tyes , she gets cold by the sea .
"""

OTHER = """\
1 partner's persona: i fly small planes.
2 partner's persona: i hate mornings.
3 hi there .\thello ! do you like mornings ?
4 no , i hate them .\tme too . coffee helps .
"""

BOTH = """\
1 your persona: i grow peppers.
2 partner's persona: i am a pilot.
3 partner's persona: i own a boat.
4 what do you grow ?\tpeppers , very hot ones .
5 i could never eat those .\tmost people cannot .
1 partner's persona: i paint houses.
2 your persona: i play the drums.
3 hey .\thi , do you play music ?
"""

NONE = """\
1 good morning .\tmorning ! sleep well ?
2 not really , the dog snored .\tha , mine does too .
1 what is your name ?\ti would rather not say .
"""

CANDS = """\
1 your persona: i repair clocks.
2 hello .\thi , i fix old clocks .\t\tthe sky is green .|i like soup .|hi , i fix old clocks .
3 fun !\tit is quiet work .\t\tno .|it is quiet work .
"""


def test_self_variant_keeps_your_persona_and_full_history(tmp_path):
    exs = parse_parlai(write(tmp_path, "valid_self_original.txt", SELF))
    assert [ex.id for ex in exs] == ["valid_self_original:0:0", "valid_self_original:0:1"]
    assert exs[0].persona == ("i knit scarves for my cats.", "i live by the sea.")
    assert exs[1].history == (
        "hello ! how are you ?",
        "i am well . i just finished a scarf for my cat .",
        "a scarf for a cat ?",
    )
    assert exs[1].response == "yes , she gets cold by the sea ."


def test_revised_variant_reads_like_original(tmp_path):
    original = parse_parlai(write(tmp_path, "valid_self_original.txt", SELF))
    revised_text = SELF.replace("i knit scarves for my cats.", "my cats wear wool i make.")
    revised = parse_parlai(write(tmp_path, "valid_self_revised.txt", revised_text))
    assert revised[0].persona == ("my cats wear wool i make.", "i live by the sea.")
    assert [ex.history for ex in revised] == [ex.history for ex in original]


def test_other_variant_puts_partner_lines_in_partner_persona(tmp_path):
    exs = parse_parlai(write(tmp_path, "valid_other_original.txt", OTHER))
    assert all(ex.persona == () for ex in exs)
    assert exs[1].partner_persona == ("i fly small planes.", "i hate mornings.")


def test_both_variant_splits_personas_in_either_order(tmp_path):
    exs = parse_parlai(write(tmp_path, "train_both_original.txt", BOTH))
    assert [ex.dialog_id for ex in exs] == ["train_both_original:0"] * 2 + ["train_both_original:1"]
    assert exs[0].persona == ("i grow peppers.",)
    assert exs[0].partner_persona == ("i am a pilot.", "i own a boat.")
    assert exs[2].persona == ("i play the drums.",)
    assert exs[2].partner_persona == ("i paint houses.",)


def test_none_variant_has_empty_persona(tmp_path):
    exs = parse_parlai(write(tmp_path, "valid_none_original.txt", NONE))
    assert len(exs) == 3
    assert all(ex.persona == () and ex.partner_persona == () for ex in exs)
    assert exs[2].dialog_id == "valid_none_original:1" and exs[2].turn == 0


def test_candidates_field_is_split_on_pipe_and_kept_in_order(tmp_path):
    exs = parse_parlai(write(tmp_path, "valid_self_original.txt", CANDS))
    assert exs[0].candidates == ("the sky is green .", "i like soup .", "hi , i fix old clocks .")
    assert exs[0].candidates[-1] == exs[0].response
    assert exs[1].candidates == ("no .", "it is quiet work .")


def test_silence_opening_keeps_the_example_and_drops_the_placeholder(tmp_path):
    text = (
        "1 your persona: i bake pies.\n"
        "2 __SILENCE__\thi ! want some pie ?\n"
        "3 yes please .\tapple or cherry ?\n"
    )
    exs = parse_parlai(write(tmp_path, "s.txt", text))
    assert exs[0].turn == 0 and exs[0].history == () and exs[0].response == "hi ! want some pie ?"
    assert exs[1].history == ("hi ! want some pie ?", "yes please .")
    # and it is written back as a silence opening
    assert format_parlai(exs) == text


def test_missing_final_newline_crlf_and_bom_are_accepted(tmp_path):
    plain = parse_parlai(write(tmp_path, "a.txt", SELF))
    no_newline = parse_parlai(write(tmp_path, "b.txt", SELF.rstrip("\n")))
    crlf_bom = parse_parlai(
        write(tmp_path, "c.txt", b"\xef\xbb\xbf" + SELF.replace("\n", "\r\n").encode())
    )
    strip = [(ex.turn, ex.persona, ex.history, ex.response) for ex in plain]
    assert [(ex.turn, ex.persona, ex.history, ex.response) for ex in no_newline] == strip
    assert [(ex.turn, ex.persona, ex.history, ex.response) for ex in crlf_bom] == strip


def test_every_variant_round_trips_through_the_writer(tmp_path):
    for name, text in [("self", SELF), ("other", OTHER), ("none", NONE), ("cands", CANDS)]:
        exs = parse_parlai(write(tmp_path, f"{name}.txt", text))
        out = tmp_path / f"{name}.out.txt"
        write_parlai(exs, out)
        assert out.read_text(encoding="utf-8") == text
    both = parse_parlai(write(tmp_path, "both.txt", BOTH))
    write_parlai(both, tmp_path / "both.out.txt")
    again = parse_parlai(tmp_path / "both.out.txt")
    assert [(e.persona, e.partner_persona, e.history) for e in again] == [
        (e.persona, e.partner_persona, e.history) for e in both
    ]


def test_writer_rejects_truncated_histories(tmp_path):
    exs = parse_parlai(write(tmp_path, "a.txt", SELF))
    truncated = [exs[0], replace(exs[1], history=exs[1].history[-1:])]
    with pytest.raises(SptBenchError, match="history"):
        format_parlai(truncated)


def test_sample_is_bundled_original_persona_dialogues():
    exs = load_examples("sample")
    dialogues = {ex.dialog_id for ex in exs}
    assert 35 <= len(dialogues) <= 45
    assert len(exs) == 219
    assert all(4 <= len(ex.persona) <= 5 for ex in exs)
    assert exs[0].dialog_id == "sample_dialogues:0"
    assert sum(1 for ex in exs if not ex.history) == 2  # two silence openings


def test_a_file_cut_inside_the_last_persona_block_keeps_the_complete_dialogues(
    convai2_valid, tmp_path, capsys
):
    lines = convai2_valid.read_text(encoding="utf-8").splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith("1 ")]
    cut = tmp_path / "head.txt"  # like `head -N`: two dialogues and 2 persona lines of the third
    cut.write_text("".join(lines[: starts[2] + 2]), encoding="utf-8")
    examples = parse_parlai(cut)
    assert len({ex.dialog_id for ex in examples}) == 2
    full = [ex for ex in parse_parlai(convai2_valid) if ex.dialog_id.endswith((":0", ":1"))]
    assert [(ex.turn, ex.response) for ex in examples] == [(ex.turn, ex.response) for ex in full]
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {cut}: the last dialogue (from line {starts[2] + 1})")
    assert "read 2 complete dialogue(s)" in err
