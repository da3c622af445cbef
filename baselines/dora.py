"""`dora`: weight-decomposed LoRA (Liu et al., 2024) through PEFT (`LoraConfig(use_dora=True)`):
LoRA's options and target modules (baselines/lora.py), plus a trained magnitude vector per
adapted weight."""

from __future__ import annotations

from typing import Any

from spt_bench.baselines.lora import LoraOptions
from spt_bench.methods import register_method
from spt_bench.peft_method import PeftMethod, comma_list


@register_method
class Dora(PeftMethod):
    name = "dora"
    description = "DoRA: LoRA with a learned magnitude per adapted weight (PEFT, use_dora)."
    Options = LoraOptions
    option_labels = {"lora_r": "r"}
    default_lr = 2e-4

    def peft_config_dict(self) -> dict[str, Any]:
        from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

        o = self.options
        targets: Any = comma_list(o.target_modules)
        if targets is None and self.backbone.model.config.model_type not in DEFAULTS:
            targets = "all-linear"
        return {
            "peft_type": "LORA",
            "r": o.lora_r,
            "lora_alpha": o.lora_alpha,
            "lora_dropout": o.lora_dropout,
            "target_modules": targets,
            "use_dora": True,
        }
