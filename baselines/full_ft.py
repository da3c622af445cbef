"""`full-ft`: every backbone weight trained on the response tokens (+ EOS), authors' template.

When the backbone was loaded in bf16/fp16 (the CUDA default), the weights are cast to fp32 so
AdamW updates are not lost to rounding; bf16 autocast still runs the matmuls in bf16.
Checkpoints hold every parameter (tied weights once).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spt_bench.methods import Method, PrefixOutput, register_method, token_loss

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from spt_bench.batches import GenBatch, TrainBatch


@dataclass
class FullFtOptions:
    pass


@register_method
class FullFineTuning(Method):
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

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.backbone.model.parameters() if p.requires_grad]

    def training_loss(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, float]]:
        return token_loss(self.backbone, batch)

    def prefix_embeds(self, batch: GenBatch) -> PrefixOutput:
        return PrefixOutput(embeds=None, row_info=[{} for _ in range(len(batch))])

    def trained_state(self) -> dict[str, torch.Tensor]:
        # named_parameters() lists a tied weight once, which safetensors needs
        return {n: p.detach() for n, p in self.backbone.model.named_parameters()}

    def load_trained_state(self, state: dict[str, torch.Tensor]) -> None:
        expected = {n for n, _ in self.backbone.model.named_parameters()}
        missing = sorted(expected - set(state))
        unexpected = sorted(set(state) - expected)
        if missing or unexpected:
            raise ValueError(
                f"full-ft checkpoint does not match the model: missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}"
            )
        self.backbone.model.load_state_dict(state, strict=False)
