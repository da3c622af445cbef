"""Bytes autograd keeps for backward, per token and decoder layer, with and without lean
activations (spt_bench.lean_autograd), for SmolLM2-135M's shapes (random weights, no download).

    python scripts/saved_activations.py [--dtype bfloat16] [--tokens 512] [--layers 2]

Weights are not counted (they are kept anyway); the frozen LM's weights do not require grad,
as in SPT and prompt tuning. Counting is exact (saved-tensor hooks, each storage once), so the
figure holds on any device whose attention kernel keeps the same tensors (CPU flash / CUDA
memory-efficient SDPA both keep q, k, v, output and the log-sum-exp).
"""

from __future__ import annotations

import argparse

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from spt_bench.lean_autograd import saved_activation_bytes


def saved_bytes_per_token_layer(model, tokens: int, dtype: torch.dtype, lean: bool) -> float:
    batch = 4
    length = tokens // batch
    embeds = torch.randn(batch, length, model.config.hidden_size, dtype=dtype, requires_grad=True)
    # all ones, as the training step passes it (right padding: causal attention alone hides the
    # trailing pads), so SDPA takes its causal kernel without a mask and without repeating K/V
    mask = torch.ones(batch, length, dtype=torch.long)
    kept = saved_activation_bytes(model, embeds, mask, lean)
    return kept / (batch * length) / model.config.num_hidden_layers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2)
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    config = LlamaConfig(  # SmolLM2-135M's shapes
        vocab_size=49152, hidden_size=576, intermediate_size=1536,
        num_hidden_layers=args.layers, num_attention_heads=9, num_key_value_heads=3,
        tie_word_embeddings=True, attn_implementation="sdpa",
    )  # fmt: skip
    model = LlamaForCausalLM(config).to(dtype).eval().requires_grad_(False)
    plain = saved_bytes_per_token_layer(model, args.tokens, dtype, lean=False)
    lean = saved_bytes_per_token_layer(model, args.tokens, dtype, lean=True)
    print(f"SmolLM2-135M shapes, {args.dtype}, {args.tokens} tokens, {args.layers} layers")
    print(f"kept for backward per token and layer: plain {plain:.0f} B, lean {lean:.0f} B "
          f"({lean / plain:.2f}x)")  # fmt: skip
    per_30 = 30 * 32 * 4 * 250  # 30 layers, SPT batch 32 x K=4 sequences of ~250 tokens
    print(f"x 30 layers x 32k tokens (SPT K=4, batch 32): plain {plain * per_30 / 2**30:.1f} GiB, "
          f"lean {lean * per_30 / 2**30:.1f} GiB")  # fmt: skip


if __name__ == "__main__":
    main()
