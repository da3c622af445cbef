"""`spt-bench chat`: the loop keeps the dialogue and persona, shows the SPT prompt per turn, and
replies come from the harness's generation path."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from spt_bench.chat import Reply, chat_loop, describe_reply_info, load_responder
from spt_bench.errors import ConfigError


class EchoResponder:
    """Records what it was asked; replies with the turn number and a fake SPT choice."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], tuple[str, ...]]] = []

    def respond(self, persona, history):
        self.calls.append((persona, history))
        n = len(self.calls)
        return Reply(f"reply {n}", {"selected_prompt": n % 2, "prompt_scores": [0.25, 0.75]})


def test_chat_loop_passes_persona_and_growing_history_and_shows_the_prompt():
    bot, out = EchoResponder(), []
    turns = chat_loop(
        bot, ["i love cats.", " i am a nurse. "], ["hello", "", "how are you?"], out.append
    )
    assert [t.reply.text for t in turns] == ["reply 1", "reply 2"]
    assert bot.calls[0] == (("i love cats.", "i am a nurse."), ("hello",))
    assert bot.calls[1][1] == ("hello", "reply 1", "how are you?")  # last = the user's turn
    assert "[SPT prompt 1 of 2; retriever scores 0: 0.250, 1: 0.750]" in out
    assert "[SPT prompt 0 of 2; retriever scores 0: 0.250, 1: 0.750]" in out
    assert out.index("bot: reply 1") < out.index("bot: reply 2")


def test_chat_commands_reset_quit_and_unknown():
    bot, out = EchoResponder(), []
    turns = chat_loop(
        bot, ["i like tea."], ["hi", "/reset", "again", "/persona", "/nope", "/quit", "after"],
        out.append,
    )  # fmt: skip
    assert [t.user for t in turns] == ["again"]  # the dialogue after /reset
    assert bot.calls[1][1] == ("again",)  # history restarted
    assert len(bot.calls) == 2  # nothing after /quit
    assert "(new dialogue)" in out and out.count("persona: i like tea.") == 2
    assert any(line.startswith("unknown command /nope") for line in out)


def test_reply_info_line_is_empty_for_methods_without_prompt_selection():
    assert describe_reply_info({}) == ""
    assert describe_reply_info({"selected_prompt": 2}) == "[SPT prompt 2]"


def test_text_prompt_chat_without_a_run_uses_the_harness_decoder(tmp_path):
    out = tmp_path / "p.jsonl"
    from spt_bench.data.example import Example
    from spt_bench.decode import DecodeSettings, decode

    setup = load_responder(None, model="tiny-random", method="text-prompt", max_new_tokens=6)
    responder = setup.responder
    assert "text-prompt on tiny-random" == setup.description
    reply = responder.respond(("i love cats.",), ("hi there, what do you like?",))
    assert reply.stop in ("eos", "newline", "turn", "length")
    # the same persona + history through the batch decoder gives the same prediction
    ex = Example("chat", 0, ("i love cats.",), ("hi there, what do you like?",), "")
    rows, _ = decode(
        responder.method, responder.formatter, [ex], DecodeSettings(max_new_tokens=6), out
    )
    assert rows[0]["raw_prediction"] == reply.raw and rows[0]["prediction"] == reply.text


def test_methods_that_train_need_a_run_folder_and_persona_is_required():
    with pytest.raises(ConfigError, match="needs training"):
        load_responder(None, model="tiny-random", method="full-ft")
    from cli import app

    res = CliRunner().invoke(app, ["chat", "--model", "tiny-random", "--method", "text-prompt"])
    assert res.exit_code == 2 and "persona" in res.output


def test_chat_with_a_trained_spt_run_shows_the_selected_prompt(finished_spt):
    run_dir = finished_spt
    setup = load_responder(run_dir, max_new_tokens=3)
    assert setup.description.startswith("spt on tiny-random (checkpoint step-")
    out: list[str] = []
    turns = chat_loop(setup.responder, ["i love cats."], ["hi!", "do you have pets?"], out.append)
    assert len(turns) == 2
    for turn in turns:
        info = turn.reply.info
        assert 0 <= info["selected_prompt"] < 4 and len(info["prompt_scores"]) == 4
        assert describe_reply_info(info) in out


def test_chat_reports_a_missing_run_folder_before_asking_for_a_persona(tmp_path):
    from cli import app

    res = CliRunner().invoke(app, ["chat", str(tmp_path / "nope")])
    assert res.exit_code == 2
    assert "no such run folder" in res.output and "persona" not in res.output


@pytest.mark.parametrize("bad", ["0", "-5"])
def test_chat_refuses_a_non_positive_max_new_tokens(bad):
    from cli import app

    res = CliRunner().invoke(
        app, ["chat", "--model", "tiny-random", "--method", "text-prompt", "-p", "x.",
              "--max-new-tokens", bad],
    )  # fmt: skip
    assert res.exit_code == 2
    assert f"--max-new-tokens must be >= 1, got {bad}" in res.output
    assert "batch size" not in res.output
