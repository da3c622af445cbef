"""Decoding batch sizes: 'auto' resolved to the largest batch that should fit, and the longest
prompts a configuration warms up on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spt_bench.batches import longest_first
from spt_bench.bench.settings import AUTO, CPU_DEFAULT_DECODE_BATCH

if TYPE_CHECKING:  # pragma: no cover
    from spt_bench.data.example import Example
    from spt_bench.models import Backbone


def kv_bytes_per_token(backbone: Backbone) -> int:
    """Bytes of KV cache one token costs across all layers (K and V)."""
    import torch

    cfg = backbone.model.config
    cfg = getattr(cfg, "get_text_config", lambda: cfg)()
    heads = int(cfg.num_attention_heads)
    kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
    elem = torch.finfo(backbone.dtype).bits // 8
    return 2 * int(cfg.num_hidden_layers) * kv_heads * head_dim * elem


def largest_decode_batch(
    backbone: Backbone,
    max_prompt_len: int,
    n_prompts: int,
    *,
    prefix_len: int = 0,
    max_new_tokens: int = 32,
    memory_fraction: float = 0.8,
    cpu_default: int = CPU_DEFAULT_DECODE_BATCH,
) -> int:
    """The largest decoding batch that should fit: on CUDA from free memory and the per-row cost
    of the longest prompt (KV cache for prompt + prefix + new tokens, the prefill's transient
    activations, the last-position logits); the decoder still halves on an out-of-memory. On CPU
    (compute-bound: bigger batches buy nothing) `cpu_default`."""
    import torch

    n_prompts = max(1, n_prompts)
    if backbone.device.type != "cuda":
        return min(cpu_default, n_prompts)
    cfg = backbone.model.config
    cfg = getattr(cfg, "get_text_config", lambda: cfg)()
    elem = torch.finfo(backbone.dtype).bits // 8
    seq = max_prompt_len + prefix_len
    inter = int(getattr(cfg, "intermediate_size", 4 * cfg.hidden_size))
    kv = kv_bytes_per_token(backbone) * (seq + max_new_tokens)
    prefill = seq * elem * (3 * inter + 8 * int(cfg.hidden_size))
    logits = 3 * 4 * int(cfg.vocab_size)
    per_row = kv + prefill + logits
    free, _ = torch.cuda.mem_get_info(backbone.device)
    return int(max(1, min(n_prompts, memory_fraction * free // per_row)))


def resolve_batch(
    requested: int | str, backbone: Backbone, formatter: Any, examples: list[Example],
    prefix_len: int, max_new_tokens: int,
) -> int:  # fmt: skip
    """A requested batch size as run: 'auto' -> `largest_decode_batch` for the longest prompt,
    a number -> at most the number of examples."""
    if requested != AUTO:
        return min(int(requested), max(1, len(examples)))
    longest = max(len(formatter.prompt_ids(ex)) for ex in examples)
    return largest_decode_batch(
        backbone, longest, len(examples), prefix_len=prefix_len, max_new_tokens=max_new_tokens
    )


def longest_examples(examples: list[Example], formatter: Any, n: int) -> list[Example]:
    """The `n` examples with the longest prompts, in their original order (the warm-up batch)."""
    lengths = [len(formatter.prompt_ids(ex)) for ex in examples]
    order = longest_first(lengths)[:n]
    return [examples[i] for i in sorted(order)]
