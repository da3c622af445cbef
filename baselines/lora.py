"""`lora`: LoRA adapters (peft) on the frozen backbone, authors' template.

Adapters go on peft's default target modules for the architecture (attention projections for
Llama), or on every linear layer when peft has no default (`target_modules="all-linear"`).
Checkpoints hold only the adapter weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spt_bench.config import setting
from spt_bench.errors import ConfigError
from spt_bench.methods import BackboneWeightsMethod, register_method


@dataclass
class LoraOptions:
    lora_r: int = setting(8, "rank r of the LoRA update matrices")
    lora_alpha: float = setting(16.0, "LoRA scaling alpha (the update is scaled by alpha / r)")
    lora_dropout: float = setting(0.05, "dropout on the LoRA branch's input")
    target_modules: str | None = setting(
        None, "comma-separated module names; None = peft's default"
    )

    def __post_init__(self) -> None:
        if self.lora_r < 1:
            raise ConfigError(f"--lora-r must be >= 1, got {self.lora_r}")
        if self.lora_alpha <= 0:
            raise ConfigError(f"--lora-alpha must be > 0, got {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")


@register_method
class Lora(BackboneWeightsMethod):
    name = "lora"
    description = "LoRA adapters (peft) on the frozen LM, trained on response tokens."
    Options = LoraOptions
    option_labels = {"lora_r": "r"}
    default_lr = 2e-4

    def __init__(self, backbone: Any, options: LoraOptions | None = None) -> None:
        from peft import LoraConfig, get_peft_model
        from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

        super().__init__(backbone, options)
        o = self.options
        if o.target_modules:
            targets: Any = [t.strip() for t in o.target_modules.split(",") if t.strip()]
        elif backbone.model.config.model_type in DEFAULTS:
            targets = None
        else:
            targets = "all-linear"
        config = LoraConfig(
            r=o.lora_r,
            lora_alpha=o.lora_alpha,
            lora_dropout=o.lora_dropout,
            target_modules=targets,
            task_type="CAUSAL_LM",
        )
        # get_peft_model injects the adapter layers into backbone.model in place; the wrapper is
        # kept only for peft's state-dict helpers.
        self.peft_model = get_peft_model(backbone.model, config)
        self._trained_names = {n for n, p in backbone.model.named_parameters() if p.requires_grad}
