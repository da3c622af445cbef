"""The method registry and contract: every registered method trains and decodes on the harness."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from tiny_model import tiny_random

from spt_bench.data.example import Example
from spt_bench.data.formatting import collate_train
from spt_bench.decode import DecodeSettings, decode
from spt_bench.errors import ConfigError
from spt_bench.methods import (
    Method,
    get_method,
    list_methods,
    make_options,
    prepend_prefix,
    register_method,
)
from spt_bench.train import TrainSettings, load_trained_weights, train

METHODS = [cls.name for cls in list_methods()]
# Options for methods that have no usable default (the generic `peft` needs a PEFT type).
TEST_OPTIONS = {"peft": {"peft_type": "IA3"}}


def _examples(n: int) -> list[Example]:
    return [
        Example(
            f"d{i}",
            i % 3,
            (f"i have {i} cats.", "i love music."),
            tuple(f"utterance {j} of {i}" for j in range(1 + i % 3)),
            f"answer {i} here.",
        )  # fmt: skip
        for i in range(n)
    ]


def test_the_paper_baselines_are_registered() -> None:
    assert {"text-prompt", "full-ft", "lora"} <= set(METHODS)
    assert METHODS == sorted(METHODS)


def test_registry_rejects_a_second_method_with_the_same_name() -> None:
    @dataclass
    class Opts:
        pass

    class Impostor(Method):
        name = "full-ft"
        description = "x"
        Options = Opts

    with pytest.raises(ValueError, match="'full-ft' already registered"):
        register_method(Impostor)


def test_unknown_method_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown method 'gpt-magic'; known methods: .*full-ft"):
        get_method("gpt-magic")


@pytest.mark.parametrize("name", METHODS)
def test_every_registered_method_trains_a_few_steps_and_decodes(name: str, tmp_path: Path) -> None:
    cls = get_method(name)
    backbone = tiny_random()
    torch.manual_seed(0)
    method = cls(backbone, make_options(cls, TEST_OPTIONS.get(name, {})))
    method.setup(_examples(8), seed=0)
    formatter = method.build_formatter(max_input_tokens=128, max_response_tokens=16)
    frozen_before = {
        n: p.detach().clone() for n, p in backbone.model.named_parameters() if not p.requires_grad
    }
    trainable_before = [p.detach().clone() for p in method.trainable_parameters()]
    if cls.trains:
        assert trainable_before, f"{name} trains but reports no trainable parameters"
        enc = [formatter.encode_train(ex) for ex in _examples(8)]
        dev = [collate_train([formatter.encode_train(ex) for ex in _examples(3)], 0)]
        settings = TrainSettings(max_steps=2, batch_size=4, lr=1e-2, seed=0)
        result = train(method, enc, dev, settings, tmp_path, pad_id=0, progress=False)
        assert result.steps == 2 and result.best_dev_loss is not None
        after = method.trainable_parameters()
        assert any(not torch.equal(a, b) for a, b in zip(trainable_before, after, strict=True))
        # a fresh instance restores exactly the trained state from the checkpoint
        fresh_bb = tiny_random()
        torch.manual_seed(1)
        fresh = cls(fresh_bb, make_options(cls, TEST_OPTIONS.get(name, {})))
        assert load_trained_weights(fresh, tmp_path, "last") is not None
        for k, v in method.trained_state().items():
            assert torch.equal(v, fresh.trained_state()[k]), k
    else:
        assert not trainable_before
    # weights a method does not train stay bit-identical (the whole LM for prompt methods)
    for n, p in backbone.model.named_parameters():
        if n in frozen_before:
            assert torch.equal(p, frozen_before[n]), n
    rows, stats = decode(method, formatter, _examples(3), DecodeSettings(max_new_tokens=4),
                         tmp_path / "predictions.jsonl")  # fmt: skip
    assert [r["id"] for r in rows] == [ex.id for ex in _examples(3)]
    assert all(isinstance(r["prediction"], str) for r in rows)
    summary = method.summary()
    assert summary["method"] == name
    assert (summary["trainable_params"] > 0) == get_method(name).trains


def test_prompt_methods_leave_every_lm_weight_untouched(tmp_path: Path) -> None:
    for name in ("prompt-tuning", "spt", "prefix-tuning", "p-tuning-v2"):
        backbone = tiny_random()
        before = {n: p.detach().clone() for n, p in backbone.model.state_dict().items()}
        cls = get_method(name)
        method = cls(backbone, make_options(cls, {}))
        f = method.build_formatter(max_input_tokens=96, max_response_tokens=16)
        enc = [f.encode_train(ex) for ex in _examples(8)]
        train(method, enc, [], TrainSettings(max_steps=3, batch_size=4, lr=0.1), tmp_path / name,
              pad_id=0, progress=False)  # fmt: skip
        assert not any(p.requires_grad for p in backbone.model.parameters())
        for n, p in backbone.model.state_dict().items():
            assert torch.equal(p, before[n]), (name, n)


def test_full_ft_changes_the_lm_and_lora_only_its_adapters(tmp_path: Path) -> None:
    for name in ("full-ft", "lora"):
        backbone = tiny_random()
        method = get_method(name)(backbone)
        before = {n: p.detach().clone() for n, p in backbone.model.named_parameters()}
        f = method.build_formatter()
        enc = [f.encode_train(ex) for ex in _examples(4)]
        train(method, enc, [], TrainSettings(max_steps=2, batch_size=4, lr=1e-2), tmp_path / name,
              pad_id=0, progress=False)  # fmt: skip
        changed = {n for n, p in backbone.model.named_parameters()
                   if n in before and not torch.equal(p, before[n])}  # fmt: skip
        if name == "full-ft":
            assert "model.layers.0.self_attn.q_proj.weight" in changed
        else:
            assert changed and all("lora_" in n for n in changed)
            assert set(method.trained_state()) == {
                n for n, p in backbone.model.named_parameters() if "lora_" in n
            }


def test_text_prompt_draws_its_shots_from_train_with_the_seed() -> None:
    backbone = tiny_random()
    cls = get_method("text-prompt")
    a = cls(backbone, make_options(cls, {"shots": 2}))
    a.setup(_examples(10), seed=3)
    b = cls(backbone, make_options(cls, {"shots": 2}))
    b.setup(_examples(10), seed=3)
    assert [e.id for e in a.shot_examples] == [e.id for e in b.shot_examples]
    assert len(a.shot_examples) == 2
    text = backbone.tokenizer.decode(a.build_formatter().prompt_ids(_examples(1)[0]))
    assert a.shot_examples[0].response in text
    with pytest.raises(ConfigError, match="--shots 20 needs at least 20 train examples"):
        cls(backbone, make_options(cls, {"shots": 20})).setup(_examples(3))


def test_inference_nll_uses_the_prefix_chosen_from_the_prompt_alone() -> None:
    backbone = tiny_random()
    method = get_method("full-ft")(backbone)
    f = method.build_formatter()
    batch = collate_train([f.encode_train(ex) for ex in _examples(3)], 0)
    direct = method.inference_nll(batch)
    embeds, mask, labels = prepend_prefix(None, backbone.embed(batch.input_ids),
                                          batch.attention_mask, batch.labels)  # fmt: skip
    assert labels is batch.labels and embeds.shape[1] == batch.input_ids.shape[1]
    assert direct.n_tokens.tolist() == (batch.labels[:, 1:] != -100).sum(1).tolist()
    prefix = torch.zeros(3, 2, backbone.hidden_size)
    e2, m2, l2 = prepend_prefix(prefix, backbone.embed(batch.input_ids), batch.attention_mask,
                                batch.labels)  # fmt: skip
    assert e2.shape[1] == batch.input_ids.shape[1] + 2
    assert (l2[:, :2] == -100).all() and (m2[:, :2] == 1).all()
