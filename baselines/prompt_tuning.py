"""`prompt-tuning`: one soft prompt of L virtual tokens over the frozen LM (Lester et al., 2021).

Implemented as SPT's code path with K = 1: the same prompt pool, the same batched prompted
forward and the same loss (token-level response cross-entropy), with no retriever and no
selection/fusion/contrastive terms. For the same seed its loss equals `spt --k 1` exactly
(tests/test_prompt_tuning.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from spt_bench.methods import PrefixOutput, register_method
from spt_bench.spt import SelectivePromptTuning, SptOptions

if TYPE_CHECKING:  # pragma: no cover
    from spt_bench.batches import GenBatch


@dataclass
class PromptTuningOptions:
    prompt_len: int = 8
    prompt_init: str = "vocab"

    def __post_init__(self) -> None:
        # Same validation (and messages) as SPT's options.
        self.as_spt()

    def as_spt(self) -> SptOptions:
        """The SPT configuration that is exactly this method: K = 1, no retriever terms."""
        return SptOptions(
            k=1,
            prompt_len=self.prompt_len,
            prompt_init=self.prompt_init,
            selection_loss=False,
            fusion=False,
            contrastive=False,
        )


@register_method
class PromptTuning(SelectivePromptTuning):
    name = "prompt-tuning"
    description = "One soft prompt of L virtual tokens over the frozen LM (SPT's code with K=1)."
    Options = PromptTuningOptions

    def core_options(self) -> SptOptions:
        return self.options.as_spt()

    def prefix_embeds(self, batch: GenBatch) -> PrefixOutput:
        # One prompt for everyone: no selection to report in predictions.jsonl.
        out = super().prefix_embeds(batch)
        return PrefixOutput(embeds=out.embeds, row_info=[{} for _ in range(len(batch))])
