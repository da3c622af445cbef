"""`ia3`: (IA)3 (Liu et al., 2022) through PEFT - learned vectors rescaling keys, values and the
MLP's inner activations of the frozen LM. PEFT's default targets for the architecture unless
`target_modules` / `feedforward_modules` are given (comma-separated module names)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spt_bench.config import setting
from spt_bench.errors import ConfigError
from spt_bench.methods import register_method
from spt_bench.peft_method import PeftMethod, comma_list


@dataclass
class Ia3Options:
    target_modules: str | None = setting(None, "None = PEFT's default for the architecture")
    feedforward_modules: str | None = setting(
        None, "subset of target_modules scaled at their input"
    )

    def __post_init__(self) -> None:
        if self.feedforward_modules and not self.target_modules:
            raise ConfigError("ia3: feedforward_modules needs target_modules too")


@register_method
class Ia3(PeftMethod):
    name = "ia3"
    description = "(IA)3 rescaling vectors on keys, values and MLP activations (PEFT)."
    Options = Ia3Options
    default_lr = 3e-3  # the (IA)3 paper's learning rate

    def peft_config_dict(self) -> dict[str, Any]:
        o = self.options
        values: dict[str, Any] = {"peft_type": "IA3"}
        targets = comma_list(o.target_modules)
        if targets is not None:
            values["target_modules"] = targets
            values["feedforward_modules"] = comma_list(o.feedforward_modules) or []
        return values
