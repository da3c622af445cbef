"""`prefix-tuning` (Li & Liang, 2021) and `p-tuning-v2` (Liu et al., 2022) through PEFT.

Both learn a key/value prefix of P virtual tokens for every layer of the frozen LM (PEFT's
PREFIX_TUNING). `prefix-tuning` trains it through PEFT's reparameterisation MLP by default
(`prefix_projection`; Li & Liang's stabiliser, dropped after training: the saved adapter holds
the prefix it computes); `p-tuning-v2` trains the per-layer prompts directly (deep prompt
tuning, no MLP). The prefix reaches the harness as a `methods.KVPrefix`; only the hf decode
engine serves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spt_bench.config import setting
from spt_bench.errors import ConfigError
from spt_bench.methods import register_method
from spt_bench.peft_method import PeftMethod


def _check_tokens(n: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"num_virtual_tokens must be an integer >= 1, got {n!r}")


@dataclass
class PrefixTuningOptions:
    num_virtual_tokens: int = setting(8, "P, the same length as prompt-tuning's default prompt")
    prefix_projection: bool = setting(True, "train through PEFT's reparameterisation MLP")
    encoder_hidden_size: int | None = setting(
        None, "the MLP's hidden size (None: PEFT's, = token dim)"
    )

    def __post_init__(self) -> None:
        _check_tokens(self.num_virtual_tokens)
        if self.encoder_hidden_size is not None and self.encoder_hidden_size < 1:
            raise ConfigError(f"encoder_hidden_size must be >= 1, got {self.encoder_hidden_size}")


@register_method
class PrefixTuning(PeftMethod):
    name = "prefix-tuning"
    description = "Per-layer key/value prefix (Li & Liang 2021; PEFT), MLP reparameterised."
    Options = PrefixTuningOptions
    option_labels = {"num_virtual_tokens": "P", "prefix_projection": "mlp"}
    default_lr = 1e-3

    def peft_config_dict(self) -> dict[str, Any]:
        o = self.options
        values: dict[str, Any] = {
            "peft_type": "PREFIX_TUNING",
            "num_virtual_tokens": o.num_virtual_tokens,
            "prefix_projection": o.prefix_projection,
        }
        if o.encoder_hidden_size is not None:
            values["encoder_hidden_size"] = o.encoder_hidden_size
        return values


@dataclass
class PTuningV2Options:
    num_virtual_tokens: int = setting(8, "P, the prefix length per layer")

    def __post_init__(self) -> None:
        _check_tokens(self.num_virtual_tokens)


@register_method
class PTuningV2(PeftMethod):
    name = "p-tuning-v2"
    description = "Deep prompts: a trained key/value prefix in every layer (PEFT, no MLP)."
    Options = PTuningV2Options
    option_labels = {"num_virtual_tokens": "P"}
    default_lr = 1e-3

    def peft_config_dict(self) -> dict[str, Any]:
        return {
            "peft_type": "PREFIX_TUNING",
            "num_virtual_tokens": self.options.num_virtual_tokens,
            "prefix_projection": False,
        }
