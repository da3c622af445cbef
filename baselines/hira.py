"""`hira`: Hadamard high-rank adaptation (Huang et al., ICLR 2025) through PEFT (`HiraConfig`).

HiRA's update is the frozen weight times a low-rank product, element-wise: dW = W0 * (B A).
The Hadamard product with W0 makes the update high-rank while training LoRA's number of
parameters: r * (d_in + d_out) per adapted matrix, so `hira_r: 8` on LoRA's target modules
has exactly LoRA r=8's budget. There is no alpha (PEFT's HiRA has no scaling). Targets:
PEFT's default for the architecture (attention q/v projections for Llama, as for LoRA), or
`all-linear` when PEFT has none, or the comma-separated `target_modules`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spt_bench.config import setting
from spt_bench.errors import ConfigError
from spt_bench.methods import register_method
from spt_bench.peft_method import PeftMethod, comma_list


@dataclass
class HiraOptions:
    hira_r: int = setting(8, "rank r of HiRA's low-rank factors (A: r x d_in, B: d_out x r)")
    hira_dropout: float = setting(0.0, "dropout on the HiRA branch's input")
    target_modules: str | None = setting(
        None, "comma-separated module names; None = PEFT's default"
    )

    def __post_init__(self) -> None:
        if self.hira_r < 1:
            raise ConfigError(f"hira_r must be >= 1, got {self.hira_r}")
        if not 0 <= self.hira_dropout < 1:
            raise ConfigError(f"hira_dropout must be in [0, 1), got {self.hira_dropout}")


@register_method
class Hira(PeftMethod):
    name = "hira"
    description = "HiRA: Hadamard high-rank update W0 * (B A) on the frozen LM (PEFT)."
    Options = HiraOptions
    option_labels = {"hira_r": "r"}
    default_lr = 2e-4

    def peft_config_dict(self) -> dict[str, Any]:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_HIRA_TARGET_MODULES_MAPPING

        o = self.options
        targets: Any = comma_list(o.target_modules)
        model_type = self.backbone.model.config.model_type
        if targets is None and model_type not in TRANSFORMERS_MODELS_TO_HIRA_TARGET_MODULES_MAPPING:
            targets = "all-linear"
        return {
            "peft_type": "HIRA",
            "r": o.hira_r,
            "hira_dropout": o.hira_dropout,
            "target_modules": targets,
        }
