"""Old flat configs: the keys of the schema before it was nested, and their upgrade (config.json
files written before it, e.g. the run folders under docs/results/, still load)."""

from __future__ import annotations

from typing import Any

SECTION_NAMES = ("data", "model", "method", "train", "decode", "score", "output")


def set_dotted(values: dict, key: str, value: Any) -> None:
    """values["a"]["b"] = value for key "a.b" (missing or non-dict levels become dicts)."""
    node = values
    for p in key.split(".")[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[key.split(".")[-1]] = value


# flat key (the schema before the nested one) -> dotted key
FLAT_KEYS: dict[str, str] = {
    "data": "data.source", "train_data": "data.train_data", "test_data": "data.test_data",
    "split_protocol": "data.split_protocol", "split_seed": "data.split_seed",
    "train_limit": "data.train_limit", "dev_limit": "data.dev_limit",
    "eval_limit": "data.eval_limit", "max_input_tokens": "data.max_input_tokens",
    "max_history_turns": "data.max_history_turns",
    "max_response_tokens": "data.max_response_tokens",
    "model": "model.name", "device": "model.device", "dtype": "model.dtype",
    "trust_remote_code": "model.trust_remote_code",
    "method": "method.name", "method_options": "method.options", "methods": "method.by_method",
    "epochs": "train.epochs", "max_steps": "train.max_steps", "batch_size": "train.batch_size",
    "grad_accum": "train.grad_accum", "lr": "train.lr", "weight_decay": "train.weight_decay",
    "warmup_ratio": "train.warmup_ratio", "max_grad_norm": "train.max_grad_norm",
    "eval_every": "train.eval_every", "save_every": "train.save_every",
    "early_stopping_patience": "train.early_stopping_patience", "log_every": "train.log_every",
    "bucket_by_length": "train.bucket_by_length",
    "activation_checkpointing": "train.activation_checkpointing",
    "lean_activations": "train.lean_activations",
    "decoding": "decode.mode", "max_new_tokens": "decode.max_new_tokens",
    "vllm_kv_cache_gb": "decode.vllm_kv_cache_gb",
    "vllm_tensor_parallel_size": "decode.vllm_tensor_parallel_size",
    "vllm_data_parallel_size": "decode.vllm_data_parallel_size",
    "temperature": "decode.temperature", "top_p": "decode.top_p",
    "num_beams": "decode.num_beams", "eval_batch_size": "decode.batch_size",
    "decode_engine": "decode.engine", "clean": "decode.clean",
    "bertscore": "score.bertscore", "model_metrics": "score.model_metrics",
    "hits_k": "score.hits_k", "hits_candidates": "score.hits_candidates",
    "out": "output.out", "name": "output.name",
}  # fmt: skip


def is_flat(data: dict) -> bool:
    """A config in the flat schema: a flat key whose value is not a nested section."""
    return any(
        k in FLAT_KEYS and not (k in SECTION_NAMES and isinstance(v, dict)) for k, v in data.items()
    )


def upgrade_flat(data: dict) -> dict:
    """Move the keys of an old flat config to their nested place (nested keys kept)."""
    if not is_flat(data):
        return data
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTION_NAMES and isinstance(value, dict):
            for k, v in value.items():
                set_dotted(out, f"{key}.{k}", v)
        elif key in FLAT_KEYS:
            set_dotted(out, FLAT_KEYS[key], value)
        else:
            out[key] = value
    return out
