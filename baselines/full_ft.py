"""`full-ft`: every backbone weight trained on the response tokens (+ EOS), authors' template.

When the backbone was loaded in bf16/fp16 (the CUDA default), the weights are cast to fp32 so
AdamW updates are not lost to rounding; bf16 autocast still runs the matmuls in bf16.
Checkpoints hold every parameter (tied weights once).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spt_bench.methods import BackboneWeightsMethod, register_method


@dataclass
class FullFtOptions:
    pass


@register_method
class FullFineTuning(BackboneWeightsMethod):
    name = "full-ft"
    description = "Full fine-tuning: all LM weights trained on response tokens."
    Options = FullFtOptions
    default_lr = 5e-5

    def __init__(self, backbone: Any, options: FullFtOptions | None = None) -> None:
        import torch

        super().__init__(backbone, options)
        if backbone.dtype != torch.float32:
            backbone.model.to(torch.float32)
            backbone.dtype = torch.float32
        for p in backbone.model.parameters():
            p.requires_grad_(True)
        self._trained_names = {n for n, _ in backbone.model.named_parameters()}
