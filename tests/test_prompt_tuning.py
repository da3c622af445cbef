"""`prompt-tuning` is SPT's code path with K = 1: the same loss, state and prefix, exactly."""

from __future__ import annotations

import random

import pytest
import torch
from synthetic_helpers import (
    PAD,
    collate,
    make_example,
    tiny_backbone,
)

from spt_bench.baselines.prompt_tuning import PromptTuning, PromptTuningOptions
from spt_bench.errors import ConfigError
from spt_bench.spt import SelectivePromptTuning, SptOptions

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def backbone():
    return tiny_backbone(layers=2, init_range=0.3, seed=2)


def batches(n: int = 3):
    rng = random.Random(0)
    return [collate([make_example(i % 2, rng, 4 * s + i) for i in range(4)]) for s in range(n)]


def train_steps(method, data) -> list[float]:
    opt = torch.optim.AdamW(method.trainable_parameters(), lr=1e-2)
    losses = []
    for batch in data:
        loss, _ = method.training_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return losses


@pytest.mark.parametrize(
    "spt_options",
    [
        {"k": 1, "prompt_len": 4},  # default switches: with K = 1 there is no retriever
        {"k": 1, "prompt_len": 4, "selection_loss": False, "fusion": False, "contrastive": False},
    ],
)
def test_spt_with_one_prompt_and_no_retriever_is_exactly_prompt_tuning(
    backbone, spt_options
) -> None:
    data = batches()
    torch.manual_seed(7)
    spt = SelectivePromptTuning(backbone, SptOptions(**spt_options))
    torch.manual_seed(7)
    single = PromptTuning(backbone, PromptTuningOptions(prompt_len=4))
    spt_losses, single_losses = train_steps(spt, data), train_steps(single, data)
    for a, b in zip(spt_losses, single_losses, strict=True):
        assert torch.equal(a, b)  # bit-identical, step after step
    state_a, state_b = spt.trained_state(), single.trained_state()
    assert state_a.keys() == state_b.keys() == {"prompt_pool.prompts"}
    assert torch.equal(state_a["prompt_pool.prompts"], state_b["prompt_pool.prompts"])


def test_prompt_tuning_loss_is_the_response_cross_entropy_of_the_prompted_lm(backbone) -> None:
    torch.manual_seed(0)
    method = PromptTuning(backbone, PromptTuningOptions(prompt_len=4))
    batch = batches(1)[0]
    loss, logs = method.training_loss(batch)
    prompt = method.trained_state()["prompt_pool.prompts"][0]
    b = len(batch)
    embeds = torch.cat([prompt.expand(b, -1, -1), backbone.embed(batch.input_ids)], dim=1)
    mask = torch.cat([torch.ones(b, 4, dtype=torch.long), batch.attention_mask], dim=1)
    labels = torch.cat([torch.full((b, 4), -100), batch.labels], dim=1)
    reference = backbone.model(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss
    # Tolerance 1e-5 (fp32; full-vocabulary logits vs response-only logits).
    assert float(loss.detach()) == pytest.approx(float(reference), abs=1e-5)
    assert set(logs) == {"nll"}


def test_prompt_tuning_prepends_its_one_prompt_and_reports_no_selection(backbone) -> None:
    torch.manual_seed(0)
    method = PromptTuning(backbone, PromptTuningOptions(prompt_len=4, prompt_init="normal"))
    gen = batches(1)[0].to_gen_batch(PAD)
    out = method.prefix_embeds(gen)
    prompt = method.trained_state()["prompt_pool.prompts"][0]
    assert out.embeds.shape == (4, 4, 64)
    assert all(torch.equal(row, prompt) for row in out.embeds)
    assert out.row_info == [{}, {}, {}, {}]
    assert method.summary()["trainable_params"] == 4 * 64


def test_a_prompt_tuning_checkpoint_loads_into_spt_with_one_prompt(backbone) -> None:
    torch.manual_seed(0)
    single = PromptTuning(backbone, PromptTuningOptions(prompt_len=4))
    torch.manual_seed(1)
    spt = SelectivePromptTuning(backbone, SptOptions(k=1, prompt_len=4))
    spt.load_trained_state(single.trained_state())
    gen = batches(1)[0].to_gen_batch(PAD)
    assert torch.equal(spt.prefix_embeds(gen).embeds, single.prefix_embeds(gen).embeds)


def test_prompt_tuning_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="--prompt-len"):
        PromptTuningOptions(prompt_len=0)
    with pytest.raises(ConfigError, match="--prompt-init"):
        PromptTuningOptions(prompt_init="zeros")
