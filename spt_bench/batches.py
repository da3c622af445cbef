"""Batch types shared by the training loop, the decoder and every method.

Tensors are created by the collators in `spt_bench.data.formatting`; `.to(device)` moves them.
Padding is dynamic (to the longest row of the batch), right-side for training and left-side for
generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from spt_bench.data.example import Example


@dataclass
class TrainBatch:
    """Right-padded training rows: [persona+history prompt, response, EOS, pad...].

    input_ids [B,T]; attention_mask [B,T] (1 on real tokens); labels [B,T] (token id on the
    response tokens + EOS, -100 elsewhere; aligned with input_ids, so the model's output at t-1
    is scored against labels[:, t]); prompt_mask [B,T] (1 on persona+history tokens only: what a
    retriever may look at); examples: the source examples, in row order.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    prompt_mask: torch.Tensor
    examples: list[Example] = field(default_factory=list)

    def to(self, device: torch.device | str) -> TrainBatch:
        return replace(
            self,
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            labels=self.labels.to(device),
            prompt_mask=self.prompt_mask.to(device),
        )

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def n_response_tokens(self) -> int:
        return int((self.labels != -100).sum())

    def to_gen_batch(self, pad_id: int) -> GenBatch:
        """The prompt part of each row (prompt_mask), left-padded: what generation would see."""
        lengths = self.prompt_mask.sum(dim=1)
        width = int(lengths.max()) if len(self) else 0
        ids = self.input_ids.new_full((len(self), width), pad_id)
        mask = self.attention_mask.new_zeros((len(self), width))
        for i in range(len(self)):
            n = int(lengths[i])
            row = self.input_ids[i][self.prompt_mask[i].bool()]
            if n:
                ids[i, width - n :] = row
                mask[i, width - n :] = 1
        return GenBatch(input_ids=ids, attention_mask=mask, examples=list(self.examples))


@dataclass
class GenBatch:
    """Left-padded generation prompts: [pad..., persona+history prompt].

    input_ids [B,T]; attention_mask [B,T]; examples in row order. The decoder puts a method's
    soft-prompt prefix between the padding and the prompt.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    examples: list[Example] = field(default_factory=list)

    def to(self, device: torch.device | str) -> GenBatch:
        return replace(
            self,
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
        )

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def prompt_mask(self) -> torch.Tensor:
        """Same meaning as TrainBatch.prompt_mask: 1 on persona+history tokens."""
        return self.attention_mask


def longest_first(lengths: Sequence[int]) -> list[int]:
    """Indices by length, longest first (stable): the one order in which decoding, sharded
    decoding, perplexity/hits@k and the benchmark batch prompts, so they form the same batches
    for the same prompts."""
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """`longest_first` cut into batches of `batch_size`."""
    order = longest_first(lengths)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
