"""The shared decoder: batching, soft-prompt layout, stopping, post-processing, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from decode_helpers import FixedPrefix, perturbed_tiny, toy_examples
from tiny_model import tiny_random

from spt_bench.data.formatting import collate_generate
from spt_bench.decode import (
    DecodeSettings,
    build_prefixed_inputs,
    clean_response,
    decode,
    generate_batch,
)
from spt_bench.errors import ConfigError
from spt_bench.methods import get_method


@pytest.fixture(scope="module")
def backbone():
    return perturbed_tiny()


_examples = toy_examples
_FixedPrefix = FixedPrefix


def _single(method, prompts, examples, settings):
    outs = []
    for p, ex in zip(prompts, examples, strict=True):
        batch = collate_generate([p], method.backbone.pad_token_id, [ex])
        outs.append(generate_batch(method, batch, settings)[0][0])
    return outs


@pytest.mark.parametrize("with_prefix", [False, True])
def test_batched_left_padded_decoding_equals_one_row_at_a_time(backbone, with_prefix) -> None:
    method = _FixedPrefix(backbone) if with_prefix else get_method("full-ft")(backbone)
    from spt_bench.data.formatting import PromptFormatter

    formatter = PromptFormatter(backbone.tokenizer)
    exs = _examples()
    prompts = [formatter.prompt_ids(ex) for ex in exs]
    s = DecodeSettings(max_new_tokens=10)
    with torch.inference_mode():
        batched = generate_batch(method, collate_generate(prompts, 0, exs), s)[0]
        single = _single(method, prompts, exs, s)
    assert batched == single
    assert len({tuple(x) for x in batched}) > 1  # outputs really differ between rows


def test_greedy_matches_transformers_generate_with_a_soft_prompt(backbone) -> None:
    method = _FixedPrefix(backbone)
    from spt_bench.data.formatting import PromptFormatter

    ex = _examples(2)[1]
    prompt = PromptFormatter(backbone.tokenizer).prompt_ids(ex)
    s = DecodeSettings(max_new_tokens=8)
    with torch.inference_mode():
        ours = generate_batch(method, collate_generate([prompt], 0, [ex]), s)[0][0]
        embeds = torch.cat([method.table[1:2], backbone.embed(torch.tensor([prompt]))], dim=1)
        ref = backbone.model.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
            max_new_tokens=8,
            do_sample=False,
            eos_token_id=backbone.stop_token_ids(),
            pad_token_id=backbone.pad_token_id,
        )[0].tolist()
    newline = backbone.newline_token_mask()
    cut = next((i + 1 for i, t in enumerate(ref) if newline[t]), len(ref))
    assert ours == ref[:cut]


def test_prefix_rows_are_laid_out_pad_prefix_prompt(backbone) -> None:
    method = _FixedPrefix(backbone, length=2)
    batch = collate_generate([[5, 6, 7], [8]], 0, _examples(2))
    embeds, mask, info = build_prefixed_inputs(method, batch)
    assert mask.tolist() == [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]]
    assert torch.equal(embeds[1, 2:4], method.table[1])  # row 1 (odd id) gets prompt 1
    assert torch.equal(embeds[1, 4], backbone.embed(torch.tensor(8)))
    assert torch.equal(embeds[0, :2], method.table[0])
    assert info == [{"selected_prompt": 0}, {"selected_prompt": 1}]


def test_rows_stop_at_eos_or_newline_and_finished_rows_leave_the_batch(monkeypatch) -> None:
    bb = tiny_random()
    method = get_method("full-ft")(bb)
    eos, nl = bb.eos_token_id, bb.tokenizer.convert_tokens_to_ids("Ċ")
    # scripted next tokens per call of the LM head: row 0 says 42 then EOS; row 1 says 43, 44
    # then a newline; row 2 never stops. Rows that finished must not be fed to the model again.
    script = [[42, 43, 45], [eos, 44, 46], [nl, 47], [48], [49]]
    widths = []

    def scripted_head(hidden):
        step = len(widths)
        widths.append(hidden.shape[0])
        logits = torch.zeros(hidden.shape[0], bb.model.config.vocab_size)
        for row, token in enumerate(script[step]):
            logits[row, token] = 1.0
        return logits

    monkeypatch.setattr(bb, "lm_head", scripted_head)
    batch = collate_generate([[5, 6, 7], [9, 10], [11]], 0, _examples(3))
    with torch.inference_mode():
        toks, reasons, _ = generate_batch(method, batch, DecodeSettings(max_new_tokens=5))
    assert toks == [[42], [43, 44, nl], [45, 46, 47, 48, 49]]
    assert reasons == ["eos", "newline", "length"]
    assert widths == [3, 3, 2, 1, 1]


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (" i like dogs.\nQ: and you?", "i like dogs."),
        ("R: sure thing! Q: what?", "sure thing!"),
        ("<|im_start|>assistant\nHello there", "Hello there"),
        ("assistant: hi", "hi"),
        ("   yes  ", "yes"),
        ("ok User: next", "ok"),
        ("", ""),
    ],
)
def test_clean_response_strips_role_markers_and_cuts_at_newline(raw: str, clean: str) -> None:
    assert clean_response(raw) == clean
    assert clean_response(clean) == clean


@pytest.mark.parametrize(
    ("raw", "authors", "default"),
    [
        (" we meet at 6:30 pm", "we meet at 6", "we meet at 6:30 pm"),  # any colon cuts
        (" R: hello", "", "hello"),  # a leading role marker empties the response
        (" i like dogs.\nQ: and you?", "i like dogs.", "i like dogs."),
        ("sure thing! Q: what?", "sure thing!", "sure thing!"),
        ("Summary: none", "", "Summary: none"),
        ("note: yes", "note", "note: yes"),
        ("   yes  ", "yes", "yes"),
    ],
)
def test_authors_clean_rule_cuts_at_the_first_marker_or_any_colon(
    raw: str, authors: str, default: str
) -> None:
    assert clean_response(raw, "authors") == authors
    assert clean_response(authors, "authors") == authors
    assert clean_response(raw) == clean_response(raw, "default") == default


def test_unknown_clean_rule_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="clean rule must be one of default, authors"):
        clean_response("x", "parlai")
    with pytest.raises(ConfigError, match="decode.clean must be one of default, authors"):
        DecodeSettings(clean="parlai")


def test_killed_decode_resumes_without_redoing_or_duplicating(backbone, tmp_path: Path) -> None:
    from spt_bench.data.formatting import PromptFormatter

    method = get_method("full-ft")(backbone)
    formatter = PromptFormatter(backbone.tokenizer)
    exs = _examples(7)
    s = DecodeSettings(max_new_tokens=6, batch_size=2)
    full, _ = decode(method, formatter, exs, s, tmp_path / "full.jsonl")

    class Killed(Exception):
        pass

    calls = {"n": 0}
    real = method.prefix_embeds

    def dying(batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Killed
        return real(batch)

    method.prefix_embeds = dying
    path = tmp_path / "killed.jsonl"
    with pytest.raises(Killed):
        decode(method, formatter, exs, s, path)
    method.prefix_embeds = real
    written = path.read_text().splitlines()
    assert len(written) == 4  # two batches made it
    with path.open("a") as f:  # a kill in the middle of a write leaves half a line
        f.write('{"id": "d9:0", "pred')
    calls["n"] = 0
    rows, stats = decode(method, formatter, exs, s, path)
    assert stats.n_skipped == 4 and stats.n_decoded == 3
    ids = [json.loads(line)["id"] for line in path.read_text().splitlines()]
    assert ids == [ex.id for ex in exs]  # each exactly once, in dataset order
    assert [r["prediction"] for r in rows] == [r["prediction"] for r in full]
    # a complete file is not decoded again
    _, again = decode(method, formatter, exs, s, path)
    assert again.n_decoded == 0


def test_prediction_rows_carry_the_scorer_fields_and_row_info(backbone, tmp_path: Path) -> None:
    from spt_bench.data.formatting import PromptFormatter

    method = _FixedPrefix(backbone)
    exs = _examples(3)
    rows, _ = decode(method, PromptFormatter(backbone.tokenizer), exs, DecodeSettings(max_new_tokens=4),
                     tmp_path / "p.jsonl")  # fmt: skip
    for r, ex in zip(rows, exs, strict=True):
        assert r["id"] == ex.id and r["reference"] == ex.response and r["turn"] == ex.turn
        assert r["persona"] == list(ex.persona) and r["history"] == list(ex.history)
        assert r["selected_prompt"] == int(ex.dialog_id[1:]) % 2
        assert r["stop"] in ("eos", "newline", "turn", "length") and "raw_prediction" in r


def test_sampling_is_seeded_and_beam_search_runs(backbone, tmp_path: Path) -> None:
    from spt_bench.data.formatting import PromptFormatter

    method = get_method("full-ft")(backbone)
    f = PromptFormatter(backbone.tokenizer)
    exs = _examples(3)
    s = DecodeSettings(mode="sample", max_new_tokens=6, temperature=1.0, top_p=0.9, seed=4)
    a, _ = decode(method, f, exs, s, tmp_path / "a.jsonl")
    b, _ = decode(method, f, exs, s, tmp_path / "b.jsonl")
    assert [r["raw_prediction"] for r in a] == [r["raw_prediction"] for r in b]
    beam, _ = decode(method, f, exs, DecodeSettings(mode="beam", num_beams=2, max_new_tokens=5),
                     tmp_path / "c.jsonl")  # fmt: skip
    assert len(beam) == 3 and all(r["n_new_tokens"] <= 5 for r in beam)


def test_max_new_tokens_is_bounded_by_the_model_context_and_large_caps_warn():
    from transformers import LlamaConfig

    from spt_bench.decode import check_max_new_tokens, model_context_length
    from spt_bench.errors import ConfigError

    backbone = tiny_random()
    assert model_context_length(backbone) == 2048 == model_context_length(backbone.model.config)
    assert check_max_new_tokens(backbone, 448, 32) is None
    with pytest.raises(ConfigError, match=r"reach 100456 tokens, over the model's context of "
                       r"2048; use at most 1592"):  # fmt: skip
        check_max_new_tokens(backbone, 448, 100000, prefix_tokens=8)
    with pytest.raises(ConfigError, match="must be >= 1, got 0"):
        check_max_new_tokens(8192, 448, 0)
    note = check_max_new_tokens(LlamaConfig(max_position_embeddings=8192), 448, 1000, n_examples=24)
    assert note is not None and "24,000 generated tokens (24 examples x 1000)" in note
    assert check_max_new_tokens(object(), 448, 100) is None  # context unknown: not bounded
