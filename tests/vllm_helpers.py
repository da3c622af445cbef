"""A tiny Llama that vLLM's CPU attention accepts (head size 32; tiny-random's 16 is not among
its kernels), saved as a model folder so both engines load the same weights."""

from __future__ import annotations

from pathlib import Path

import torch

from spt_bench.models import load_backbone, smollm2_tokenizer_dir


def tiny_llama_folder(folder: Path, scale: float = 0.15, seed: int = 0) -> Path:
    """2 layers, hidden 64, 2 heads of 32, one KV head, weights ~N(0, scale) so greedy outputs
    differ between prompts."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (folder / "config.json").is_file():
        return folder
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir()))
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_backbone(folder: Path):
    return load_backbone(str(tiny_llama_folder(folder)), dtype="float32")
