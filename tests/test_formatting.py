"""Model-input formatting: the authors' template, chat template, truncation, labels, collators."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from spt_bench.data.example import Example
from spt_bench.data.formatting import (
    PromptFormatter,
    collate_generate,
    collate_train,
)
from spt_bench.errors import ConfigError
from spt_bench.models import _fix_pad_token, smollm2_tokenizer_dir


@pytest.fixture(scope="module")
def tok():
    t = AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir()))
    _fix_pad_token(t, None)
    return t


EX = Example(
    "d1", 3, ("i like cats.", "i am a nurse."),
    ("hi there!", "hello, how are you?", "good. do you have pets?"), "yes, two cats.",
)  # fmt: skip


def test_authors_template_is_exact(tok) -> None:
    f = PromptFormatter(tok)
    assert tok.decode(f.prompt_ids(EX)) == (
        "given persona: i like cats. i am a nurse.; context: Q: hi there! "
        "R: hello, how are you? Q: good. do you have pets? R:"
    )
    assert tok.decode(f.response_ids(EX)) == " yes, two cats.<|im_end|>"
    # pieces are tokenised separately, but the ids equal tokenising the whole text at once
    whole = tok(tok.decode(f.prompt_ids(EX)) + " yes, two cats.", add_special_tokens=False)
    assert f.encode_train(EX).input_ids[:-1] == whole["input_ids"]


def test_roles_count_back_from_the_partners_last_turn() -> None:
    assert PromptFormatter.roles(1) == ["Q"]
    assert PromptFormatter.roles(4) == ["R", "Q", "R", "Q"]


def test_labels_cover_only_the_response_and_eos(tok) -> None:
    enc = PromptFormatter(tok).encode_train(EX)
    n_resp = len(PromptFormatter(tok).response_ids(EX))
    assert enc.labels[: enc.prompt_len] == [-100] * enc.prompt_len
    assert enc.labels[enc.prompt_len :] == enc.input_ids[enc.prompt_len :]
    assert len(enc.input_ids) - enc.prompt_len == n_resp
    assert enc.labels[-1] == tok.eos_token_id


def test_truncation_drops_oldest_turns_and_keeps_the_persona(tok) -> None:
    full = len(PromptFormatter(tok).prompt_ids(EX))
    f = PromptFormatter(tok, max_input_tokens=full - 3)
    text = tok.decode(f.prompt_ids(EX))
    assert text == (
        "given persona: i like cats. i am a nurse.; context: R: hello, how are you? "
        "Q: good. do you have pets? R:"
    )
    assert len(f.prompt_ids(EX)) <= full - 3
    turns = PromptFormatter(tok, max_history_turns=1)
    assert tok.decode(turns.prompt_ids(EX)).endswith("context: Q: good. do you have pets? R:")


def test_an_overlong_last_turn_is_cut_from_the_left(tok) -> None:
    long = Example("d", 0, ("i am a nurse.",), ("word " * 200,), "ok")
    f = PromptFormatter(tok, max_input_tokens=40)
    ids = f.prompt_ids(long)
    assert len(ids) == 40
    assert tok.decode(ids).startswith("given persona: i am a nurse.; context:")
    assert tok.decode(ids).endswith("word R:")
    with pytest.raises(ConfigError, match="cannot hold the persona"):
        PromptFormatter(tok, max_input_tokens=8).prompt_ids(long)


def test_long_responses_are_cut_without_eos(tok) -> None:
    ex = Example("d", 0, ("p.",), ("hi",), "one two three four five six seven eight")
    ids = PromptFormatter(tok, max_response_tokens=4).response_ids(ex)
    assert len(ids) == 4 and tok.eos_token_id not in ids


def test_chat_template_puts_persona_in_system_and_history_as_turns(tok) -> None:
    f = PromptFormatter(tok, template="chat")
    assert f.template_used == "chat"
    text = tok.decode(f.prompt_ids(EX))
    assert text.startswith("<|im_start|>system\n")
    assert "i like cats. i am a nurse." in text.split("<|im_end|>")[0]
    assert text.index("<|im_start|>user\nhi there!") < text.index(
        "<|im_start|>assistant\nhello, how are you?"
    ) < text.index("<|im_start|>user\ngood. do you have pets?")  # fmt: skip
    assert text.endswith("<|im_start|>assistant\n")
    assert tok.decode(f.response_ids(EX)) == "yes, two cats.<|im_end|>"


def test_chat_truncation_keeps_the_system_persona(tok) -> None:
    full = len(PromptFormatter(tok, template="chat").prompt_ids(EX))
    f = PromptFormatter(tok, template="chat", max_input_tokens=full - 5)
    text = tok.decode(f.prompt_ids(EX))
    assert "i like cats." in text and "hi there!" not in text
    assert "good. do you have pets?" in text


def test_without_a_chat_template_the_authors_template_is_used(tok) -> None:
    saved = tok.chat_template
    tok.chat_template = None
    try:
        f = PromptFormatter(tok, template="chat")
        assert f.template_used == "authors"
        assert tok.decode(f.prompt_ids(EX)).startswith("given persona:")
    finally:
        tok.chat_template = saved


def test_shots_come_before_the_input(tok) -> None:
    shot = Example("s", 1, ("i surf.",), ("hey", "hi", "what do you do?"), "i surf all day.")
    text = tok.decode(PromptFormatter(tok, shots=[shot]).prompt_ids(EX))
    first, second = text.split("\n")
    assert first == "given persona: i surf.; context: R: hi Q: what do you do? R: i surf all day."
    assert second.startswith("given persona: i like cats.")


def test_collate_train_pads_right_and_marks_prompt_positions(tok) -> None:
    f = PromptFormatter(tok)
    short = Example("d2", 0, ("p.",), ("hi",), "yo")
    encs = [f.encode_train(EX), f.encode_train(short)]
    b = collate_train(encs, tok.pad_token_id)
    n0, n1 = len(encs[0].input_ids), len(encs[1].input_ids)
    assert b.input_ids.shape == (2, max(n0, n1))
    assert b.attention_mask[1].tolist() == [1] * n1 + [0] * (n0 - n1)
    assert (b.input_ids[1, n1:] == tok.pad_token_id).all()
    assert (b.labels[1, n1:] == -100).all()
    assert b.prompt_mask[1].sum() == encs[1].prompt_len
    assert b.examples == [EX, short]
    assert tok.pad_token_id != tok.eos_token_id


def test_collate_generate_pads_left_and_matches_the_train_rows_prompts(tok) -> None:
    f = PromptFormatter(tok)
    short = Example("d2", 0, ("p.",), ("hi",), "yo")
    prompts = [f.prompt_ids(EX), f.prompt_ids(short)]
    g = collate_generate(prompts, tok.pad_token_id, [EX, short])
    assert g.input_ids[1, -len(prompts[1]) :].tolist() == prompts[1]
    assert g.attention_mask[1].tolist() == [0] * (len(prompts[0]) - len(prompts[1])) + [1] * len(
        prompts[1]
    )
    train = collate_train([f.encode_train(EX), f.encode_train(short)], tok.pad_token_id)
    from_train = train.to_gen_batch(tok.pad_token_id)
    assert torch.equal(from_train.input_ids, g.input_ids)
    assert torch.equal(from_train.attention_mask, g.attention_mask)
