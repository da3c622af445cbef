"""Synthetic persona-dialogue world for SPT tests (shared by test_spt_synthetic, test_spt_core
and test_prompt_tuning): ids-only tokenizer, a tiny backbone, examples, collation, training."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from spt_bench.batches import TrainBatch
from spt_bench.data.example import Example
from spt_bench.models import Backbone

VOCAB = 64
PAD, EOS = 0, 1
CONTROL = {0: 2, 1: 3}
FAMILY_WORDS = {0: [f"a{i}" for i in range(10)], 1: [f"b{i}" for i in range(10)]}
WORD_IDS = {w: 10 + i for i, w in enumerate(FAMILY_WORDS[0] + FAMILY_WORDS[1])}
PATTERN = {0: [50, 51, 52, 53], 1: [53, 52, 51, 50]}


class SyntheticTokenizer:
    """The few tokenizer attributes methods and Backbone read (ids only, no text)."""

    pad_token_id = PAD
    eos_token_id = EOS
    all_special_ids = [PAD, EOS, *CONTROL.values()]

    def __len__(self) -> int:
        return VOCAB


def tiny_backbone(
    *, layers: int = 2, init_range: float = 0.02, seed: int = 0, vocab: int = VOCAB
) -> Backbone:
    """A frozen in-memory Llama (hidden 64) wrapped as a Backbone."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=128,
        vocab_size=vocab,
        tie_word_embeddings=True,
        initializer_range=init_range,
        attn_implementation="sdpa",
    )
    model = LlamaForCausalLM(config).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return Backbone(
        model=model,
        tokenizer=SyntheticTokenizer(),
        name="tiny-synthetic",
        device=torch.device("cpu"),
        dtype=torch.float32,
    )


def make_example(
    family: int, rng: random.Random, index: int, pattern_family: int | None = None
) -> Example:
    """A persona of 3 sentences from the family's 4 (so same-family personas overlap, BLEU > 20,
    and different families share no word), 2-5 history tokens, the pattern as response."""
    words = FAMILY_WORDS[family]
    sentences = [" ".join(words[i : i + 3]) for i in range(0, 8, 2)]
    history = " ".join(str(rng.randint(30, 45)) for _ in range(rng.randint(2, 5)))
    pattern = PATTERN[family if pattern_family is None else pattern_family]
    return Example(
        dialog_id=f"f{family}-{index}",
        turn=0,
        persona=tuple(rng.sample(sentences, 3)),
        history=(history,),
        response=" ".join(map(str, pattern)),
        meta={"family": family},
    )


def encode(example: Example) -> tuple[list[int], list[int]]:
    prompt = [WORD_IDS[w] for s in example.persona for w in s.split()]
    prompt += [int(t) for h in example.history for t in h.split()]
    return prompt, [int(t) for t in example.response.split()] + [EOS]


def collate(examples: list[Example], controls: list[int] | None = None) -> TrainBatch:
    """Right-padded TrainBatch (optionally with a control token in front of each prompt)."""
    encoded = [encode(e) for e in examples]
    if controls is not None:
        encoded = [([CONTROL[c], *p], r) for (p, r), c in zip(encoded, controls, strict=True)]
    width = max(len(p) + len(r) for p, r in encoded)
    ids = torch.full((len(examples), width), PAD)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    prompt_mask = torch.zeros_like(ids)
    for b, (p, r) in enumerate(encoded):
        n = len(p) + len(r)
        ids[b, :n] = torch.tensor(p + r)
        mask[b, :n] = 1
        labels[b, len(p) : n] = torch.tensor(r)
        prompt_mask[b, : len(p)] = 1
    return TrainBatch(ids, mask, labels, prompt_mask, list(examples))


def control_pretrained_backbone(steps: int = 200) -> Backbone:
    """The world's frozen LM: trained so that only the control token decides the response."""
    backbone = tiny_backbone(layers=1, init_range=0.3, seed=0)
    model = backbone.model
    for p in model.parameters():
        p.requires_grad_(True)
    model.train()
    rng = random.Random(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        controls = [rng.randint(0, 1) for _ in range(32)]
        examples = [make_example(rng.randint(0, 1), rng, 0, pattern_family=c) for c in controls]
        batch = collate(examples, controls)
        loss = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels
        ).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return backbone


@dataclass
class Trained:
    method: object
    per_family_nll: list[float]
    selected: torch.Tensor
    family: torch.Tensor
    per_prompt_family_nll: torch.Tensor  # [K, 2]


def train_and_evaluate(
    method, backbone: Backbone, *, steps: int = 500, lr: float = 1e-2
) -> Trained:
    """Adam with linear decay on a 50/50 family mix; held-out evaluation on 64 new examples."""
    from spt_bench.spt.soft_prompt import prompted_response_nll

    rng = random.Random(0)
    train = [make_example(i % 2, rng, i) for i in range(256)]
    params = method.trainable_parameters()
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / steps)
    for _ in range(steps):
        loss, _ = method.training_loss(collate(rng.sample(train, 8)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    test = collate([make_example(i % 2, random.Random(1000 + i), 10_000 + i) for i in range(64)])
    family = torch.tensor([e.meta["family"] for e in test.examples])
    with torch.no_grad():
        gen = test.to_gen_batch(PAD)
        selected = torch.tensor(
            [r.get("selected_prompt", 0) for r in method.prefix_embeds(gen).row_info]
        )
        nll = method.inference_nll(test).mean_per_sequence()
        per_prompt = prompted_response_nll(
            backbone,
            method.core.prompt_pool.prompts,
            test.input_ids,
            test.attention_mask,
            test.labels,
        ).example_nll
    return Trained(
        method=method,
        per_family_nll=[float(nll[family == f].mean()) for f in (0, 1)],
        selected=selected,
        family=family,
        per_prompt_family_nll=torch.stack([per_prompt[:, family == f].mean(1) for f in (0, 1)], 1),
    )
