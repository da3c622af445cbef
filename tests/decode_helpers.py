"""Helpers shared by the decoding tests: a perturbed tiny model, toy examples, and a stand-in
method with a per-row soft prompt."""

from __future__ import annotations

import torch
from tiny_model import tiny_random

from spt_bench.data.example import Example
from spt_bench.methods import PrefixOutput


def perturbed_tiny(scale: float = 0.15, seed: int = 0):
    """tiny-random with larger weights, so greedy outputs differ between prompts."""
    bb = tiny_random()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in bb.model.named_parameters():
            if "norm" not in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    return bb


def toy_examples(n: int = 7, turn_cycle: int = 4) -> list[Example]:
    return [
        Example(
            f"d{i}",
            i % 4,
            (f"i am person {i}.", "i like tea."),
            tuple(f"turn {j} says {i * j}" for j in range(1 + i % turn_cycle)),
            f"reply {i}",
        )  # fmt: skip
        for i in range(n)
    ]


class FixedPrefix:
    """A stand-in method with a per-row soft prompt (a different one for odd and even rows)."""

    def __init__(self, backbone, length: int = 3) -> None:
        self.backbone = backbone
        g = torch.Generator().manual_seed(1)
        self.table = torch.randn(2, length, backbone.hidden_size, generator=g) * 0.5

    def prefix_embeds(self, batch):
        which = [int(ex.dialog_id[1:]) % 2 for ex in batch.examples]
        return PrefixOutput(self.table[which], [{"selected_prompt": w} for w in which])

    def set_train_mode(self, training: bool) -> None:
        pass
