"""`prompt-tuning`: one soft prompt of L virtual tokens over the frozen LM (Lester et al., 2021).

Implemented as SPT's code path with K = 1: the same prompt pool, the same batched prompted
forward and the same loss (token-level response cross-entropy), with no retriever and no
selection/fusion/contrastive terms. For the same seed its loss equals `spt --k 1` exactly
(tests/test_prompt_tuning.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spt_bench.methods import BenchEntry, PrefixOutput, register_method
from spt_bench.spt.method import SelectivePromptTuning
from spt_bench.spt.options import PromptTuningOptions, SptOptions

if TYPE_CHECKING:  # pragma: no cover
    from spt_bench.batches import GenBatch


@register_method
class PromptTuning(SelectivePromptTuning):
    name = "prompt-tuning"
    description = "One soft prompt of L virtual tokens over the frozen LM (SPT's code with K=1)."
    Options = PromptTuningOptions
    option_labels = {"prompt_len": "L"}
    row_fields = ()  # one prompt for everyone: nothing selected per row
    bench = BenchEntry(train_default=True, order=20)  # timed by default, after spt

    def core_options(self) -> SptOptions:
        return self.options.as_spt()

    def prefix_embeds(self, batch: GenBatch) -> PrefixOutput:
        # One prompt for everyone: no selection to report in predictions.jsonl.
        out = super().prefix_embeds(batch)
        return PrefixOutput(embeds=out.embeds, row_info=[{} for _ in range(len(batch))])
