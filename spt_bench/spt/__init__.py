"""Selective Prompt Tuning (Huang et al., ACL Findings 2024), registered as method "spt".

One package for everything SPT:
- `method`: the registered method class and its class-level hooks (torch-free to import);
- `core`: the prompt pool + retriever and the four training losses (torch);
- `soft_prompt`: the prompt pool and K-batched prompted forward (shared with prompt-tuning);
- `persona_sim`: cached persona similarity for the contrastive loss;
- `options`: SptOptions / PromptTuningOptions (torch-free, checked before any heavy import);
- `analysis`: prompt usage from prediction rows (report.md, `plot prompts`, diagnostics).

Importing the package stays torch-free.
"""

from spt_bench.spt.method import SelectivePromptTuning
from spt_bench.spt.options import PromptTuningOptions, SptOptions

__all__ = ["PromptTuningOptions", "SelectivePromptTuning", "SptOptions"]
