"""Any PEFT adapter as a benchmarked method: the shared base of `peft` and its presets.

A `PeftMethod` turns a PEFT config (PEFT's own dict/JSON format) into a method of the harness:

- adapters that change the LM's weights (LoRA, DoRA, (IA)3, LoHa, ...): PEFT injects them into
  the backbone in place, so the shared loss and every decode engine run them unchanged;
- `PREFIX_TUNING` (prefix tuning, P-tuning v2): PEFT's prompt encoder gives a per-layer
  key/value prefix, handed to the harness as a `methods.KVPrefix` (training, the hf engine,
  perplexity and Hits@1 pre-fill the KV cache with it); only the `hf` engine serves it;
- `PROMPT_TUNING` / `P_TUNING`: PEFT's virtual-token embeddings go through the harness's
  input-embedding prefix (`PrefixOutput.embeds`).

Prompt-learning types that need more than that (task ids, CPT's masks, cartridges) are refused
with a one-line error. The harness never calls PEFT's own forward: it runs the LM body and the
LM head on response positions as for every method, with the prefix PEFT's `get_prompt`
computes, so positions follow PEFT's (the input starts at position P after a P-token prefix).

Checkpoints hold `trained_state()` (every trainable tensor, e.g. prefix tuning's
reparameterisation MLP, so `--resume` continues exactly) and, next to it, `adapter/` written by
PEFT's `save_pretrained` - loadable with `PeftModel.from_pretrained` outside the toolkit (tested
to give the same logits).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spt_bench.errors import ConfigError, InputError
from spt_bench.methods import (
    KVPrefix,
    Method,
    PrefixOutput,
    load_named_parameter_state,
    named_parameter_state,
    prepend_prefix,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from spt_bench.batches import GenBatch, TrainBatch
    from spt_bench.models import Backbone, ResponseNLL

KV_PREFIX_TYPES = frozenset({"PREFIX_TUNING"})
EMBED_PREFIX_TYPES = frozenset({"PROMPT_TUNING", "P_TUNING"})
REFUSED_TYPES = {
    "MULTITASK_PROMPT_TUNING": "it needs per-example task ids",
    "CPT": "it needs CPT's token-type masks and its own loss",
    "CARTRIDGE": "cartridges are pre-computed KV caches, not a trainable method here",
}


def read_peft_config_file(path: str | Path) -> dict[str, Any]:
    """A PEFT config file (adapter_config.json or the same keys in YAML) as a dict."""
    p = Path(path)
    if p.is_dir():
        p = p / "adapter_config.json"
    if not p.is_file():
        raise ConfigError(f"PEFT config file not found: {path}")
    import yaml

    text = p.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) if p.suffix in (".yaml", ".yml") else json.loads(text)
    except (ValueError, yaml.YAMLError) as e:
        raise InputError(p, getattr(e, "lineno", None), f"not a valid PEFT config: {e}") from None
    if not isinstance(data, dict):
        raise InputError(p, None, "a PEFT config must be a mapping of PeftConfig fields")
    return data


def build_peft_config(values: dict[str, Any], where: str) -> Any:
    """A PEFT `PeftConfig` for a causal LM from a dict in PEFT's format (`peft_type` + that
    type's fields). Unknown fields and types raise ConfigError naming `where`."""
    from peft import PeftType
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    values = dict(values)
    raw_type = values.pop("peft_type", None)
    if not raw_type:
        raise ConfigError(f"{where}: no peft_type (e.g. LORA, IA3, PREFIX_TUNING)")
    peft_type = str(raw_type).upper().replace("-", "_")
    known = sorted(PeftType.__members__)
    if peft_type not in PeftType.__members__:
        raise ConfigError(f"{where}: unknown peft_type {raw_type!r} (PEFT's: {', '.join(known)})")
    if peft_type in REFUSED_TYPES:
        raise ConfigError(f"{where}: peft_type {peft_type} is not supported: "
                          f"{REFUSED_TYPES[peft_type]}")  # fmt: skip
    task = values.pop("task_type", None)
    if task not in (None, "CAUSAL_LM"):
        raise ConfigError(f"{where}: task_type must be CAUSAL_LM, got {task!r}")
    # Fields PEFT writes into adapter_config.json that describe a saved adapter, not a setting.
    for key in ("base_model_name_or_path", "revision", "inference_mode", "auto_mapping"):
        values.pop(key, None)
    cls = PEFT_TYPE_TO_CONFIG_MAPPING[peft_type]
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"{where}: {cls.__name__} has no field {unknown[0]!r}")
    if "num_virtual_tokens" in fields and values.get("num_virtual_tokens") is None:
        # PEFT leaves it None and fails deep inside get_peft_model with a TypeError
        raise ConfigError(
            f"{where}: {cls.__name__} needs num_virtual_tokens (peft_args: "
            "'{\"num_virtual_tokens\": 8}' on the command line)"
        )
    try:
        return cls(**values, task_type="CAUSAL_LM", inference_mode=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: invalid {cls.__name__}: {e}") from None


class PeftMethod(Method):
    """Base of the PEFT-backed methods: subclasses return their PEFT config dict from
    `peft_config_dict()`."""

    template = "authors"

    def peft_config_dict(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __init__(self, backbone: Backbone, options: Any = None) -> None:
        from peft import get_peft_model

        super().__init__(backbone, options)
        config = build_peft_config(self.peft_config_dict(), f"method {self.name!r}")
        self.peft_type = str(getattr(config.peft_type, "value", config.peft_type))
        # get_peft_model injects weight adapters into backbone.model in place (the harness's
        # forward then runs them); prompt-learning types live in the wrapper's prompt encoder.
        try:
            self.peft_model = get_peft_model(backbone.model, config)
        except (TypeError, ValueError, AttributeError) as e:  # a field PEFT needs, unset or bad
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(
                f"method {self.name!r}: PEFT cannot build {type(config).__name__}: {first}"
            ) from None
        if self.peft_type in KV_PREFIX_TYPES:
            self.supports_engines = ("hf",)
            self.engine_note = "its per-layer key/value prefix runs in the hf engine only"
        self._trained_names = {n for n, p in self.peft_model.named_parameters() if p.requires_grad}

    # ---- what trains and how

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.peft_model.parameters() if p.requires_grad]

    def uses_kv_prefix(self) -> bool:
        return self.peft_type in KV_PREFIX_TYPES

    def _prefix(self, batch_size: int) -> PrefixOutput:
        """PEFT's prompt for `batch_size` rows, computed once and expanded (every row gets the
        same prefix; the prompt encoder, e.g. prefix tuning's MLP, runs once per call)."""
        rows = [{} for _ in range(batch_size)]
        if self.peft_type in KV_PREFIX_TYPES:
            cache = self.peft_model.get_prompt(1)
            if hasattr(cache, "layers"):
                pairs = [(layer.keys, layer.values) for layer in cache.layers]
            else:  # legacy tuple-of-(k, v) format (older transformers)
                pairs = [(k, v) for k, v in cache]
            layers = [
                (k.expand(batch_size, -1, -1, -1), v.expand(batch_size, -1, -1, -1))
                for k, v in pairs
            ]
            return PrefixOutput(row_info=rows, kv=KVPrefix(layers))
        if self.peft_type in EMBED_PREFIX_TYPES:
            prompt = self.peft_model.get_prompt(batch_size=1)
            return PrefixOutput(embeds=prompt.expand(batch_size, -1, -1), row_info=rows)
        return PrefixOutput(row_info=rows)

    def prefix_embeds(self, batch: GenBatch) -> PrefixOutput:
        return self._prefix(len(batch))

    def inference_nll(self, batch: TrainBatch) -> ResponseNLL:
        from spt_bench.models import response_nll

        out = self._prefix(batch.input_ids.shape[0])
        embeds, mask, labels = prepend_prefix(
            out.embeds, self.backbone.embed(batch.input_ids), batch.attention_mask, batch.labels
        )
        return response_nll(self.backbone, embeds, mask, labels, kv_prefix=out.kv)

    def training_loss(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, float]]:
        # The prefix does not depend on the row, so training sees exactly what generation sees.
        loss = self.inference_nll(batch).mean_over_tokens()
        return loss, {"nll": float(loss.detach())}

    def set_train_mode(self, training: bool) -> None:
        super().set_train_mode(training)
        encoders = getattr(self.peft_model, "prompt_encoder", None)
        if encoders is not None:
            encoders.train(training)

    # ---- checkpoints

    def trained_state(self) -> dict[str, torch.Tensor]:
        return named_parameter_state(self.peft_model, self._trained_names)

    def load_trained_state(self, state: dict[str, torch.Tensor]) -> None:
        load_named_parameter_state(self.peft_model, self._trained_names, state, self.name)

    def save_adapter(self, folder: Path) -> None:
        """PEFT's own adapter folder (adapter_config.json + adapter_model.safetensors)."""
        self.peft_model.save_pretrained(str(folder), safe_serialization=True)

    def summary(self) -> dict:
        from peft import get_peft_model_state_dict

        out = super().summary()
        out["peft_type"] = self.peft_type
        # What save_pretrained writes: for prefix tuning with the reparameterisation MLP, the
        # prefix the MLP computes (the MLP itself is a training-time device).
        state = get_peft_model_state_dict(self.peft_model)
        out["adapter_params"] = int(sum(t.numel() for t in state.values()))
        return out


def parse_peft_args(value: dict | str | None, where: str) -> dict[str, Any]:
    """`peft_args` as a dict: a YAML mapping, or JSON object text (from the command line)."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as e:
            raise ConfigError(f"{where} peft_args must be a JSON object: {e}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{where} peft_args must be a mapping, got {value!r}")
    return dict(value)


def comma_list(text: str | None) -> list[str] | None:
    """'q_proj, v_proj' -> ['q_proj', 'v_proj']; None/'' -> None."""
    if not text:
        return None
    return [t.strip() for t in text.split(",") if t.strip()] or None


# `peft` has no default adapter; its count in `spt-bench methods` is for this example config.
EXAMPLE_OPTIONS_FOR_COUNTS: dict[str, dict[str, Any]] = {"peft": {"peft_type": "IA3"}}


def trainable_counts_on_meta(model_name: str = "smollm2-135m") -> dict[str, int | str]:
    """Trainable-parameter count of every registered method on `model_name`, without loading
    its weights: the model is built from its config on the meta device (shapes only) and each
    method is constructed over it with its default options. A method that cannot be built
    that way maps to a short reason instead of a number."""
    from transformers import AutoConfig, AutoTokenizer

    from spt_bench.methods import list_methods, make_options
    from spt_bench.models import _fix_pad_token, meta_backbone, smollm2_tokenizer_dir

    if model_name != "smollm2-135m":
        raise ConfigError("trainable counts on the meta device are implemented for smollm2-135m")
    config = _smollm2_config(AutoConfig)
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir()))
    _fix_pad_token(tokenizer, None)
    counts: dict[str, int | str] = {}
    for cls in list_methods():
        options = EXAMPLE_OPTIONS_FOR_COUNTS.get(cls.name, {})
        backbone = meta_backbone(config, model_name, tokenizer=tokenizer)
        try:
            method = cls(backbone, make_options(cls, options))
            counts[cls.name] = int(sum(p.numel() for p in method.trainable_parameters()))
        except Exception as e:  # noqa: BLE001 - reported in the table, not raised
            counts[cls.name] = f"n/a ({type(e).__name__})"
    return counts


def _smollm2_config(auto_config: Any) -> Any:
    """SmolLM2-135M's model config: from the converted cache when present, else read from the
    GGUF's metadata (no weights de-quantised)."""
    from spt_bench.models import cache_root, smollm2_gguf_path

    cached = cache_root() / "models" / "smollm2-135m"
    if (cached / "config.json").is_file():
        return auto_config.from_pretrained(str(cached))
    gguf = smollm2_gguf_path()
    return auto_config.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
