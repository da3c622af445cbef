"""`peft`: any PEFT adapter from a config in PEFT's own format (spt_bench/peft_method.py).

The config is layered: `peft_config` (a JSON/YAML file with PeftConfig fields, e.g. a saved
adapter's adapter_config.json, or its folder) < `peft_type` < `peft_args` (extra fields: a YAML
mapping, or JSON object text on the command line). Examples, as method options:
`peft_type: IA3`; `peft_type: LORA, peft_args: {r: 4, use_dora: true}`;
`peft_config: my_prefix.json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spt_bench.config import setting
from spt_bench.errors import ConfigError
from spt_bench.methods import register_method
from spt_bench.peft_method import PeftMethod, parse_peft_args, read_peft_config_file


@dataclass
class PeftOptions:
    peft_config: str | None = setting(None, "PEFT-format JSON/YAML file (or adapter folder)")
    peft_type: str | None = setting(None, "e.g. LORA, IA3, PREFIX_TUNING, PROMPT_TUNING, LOHA")
    peft_args: dict | str | None = setting(None, "extra PeftConfig fields (mapping or JSON text)")

    def __post_init__(self) -> None:
        if not self.peft_config and not self.peft_type:
            raise ConfigError(
                "method 'peft' needs peft_type (e.g. IA3) or peft_config (a PEFT config file)"
            )
        parse_peft_args(self.peft_args, "method 'peft' option")


@register_method
class Peft(PeftMethod):
    name = "peft"
    description = "Any PEFT adapter from a config in PEFT's format (peft_type / peft_config)."
    Options = PeftOptions
    option_labels = {"peft_type": "type"}
    default_lr = 2e-4

    def peft_config_dict(self) -> dict[str, Any]:
        o = self.options
        values = read_peft_config_file(o.peft_config) if o.peft_config else {}
        if o.peft_type:
            values["peft_type"] = o.peft_type
        values.update(parse_peft_args(o.peft_args, "method 'peft' option"))
        return values
