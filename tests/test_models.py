"""Backbones: loading, pad tokens, devices, and the response-only loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spt_bench.errors import ConfigError
from spt_bench.models import (
    _fix_pad_token,
    load_backbone,
    resolve_device,
    resolve_dtype,
    response_nll,
)


@pytest.fixture(scope="module")
def tiny():
    return load_backbone("tiny-random")


def test_tiny_random_is_small_seeded_and_pads_with_a_non_eos_token(tiny) -> None:
    cfg = tiny.model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (2, 64, 4)
    assert tiny.tokenizer.pad_token == "<|endoftext|>" and tiny.pad_token_id == 0
    assert tiny.pad_token_id != tiny.eos_token_id
    assert tiny.device.type == "cpu" and tiny.dtype == torch.float32
    other = load_backbone("tiny-random")
    for a, b in zip(tiny.model.parameters(), other.model.parameters(), strict=True):
        assert torch.equal(a, b)
    different = load_backbone("tiny-random", seed=1)
    assert not torch.equal(tiny.model.model.layers[0].mlp.up_proj.weight,
                           different.model.model.layers[0].mlp.up_proj.weight)  # fmt: skip


def test_the_tests_shared_tiny_random_copies_are_load_backbone_s_model(tiny) -> None:
    """tests/tiny_model.py hands the other tests copies of one loaded tiny-random: the same
    weights, tokenizer and stop tokens as `load_backbone`, and each copy its own weights."""
    from tiny_model import tiny_random

    from spt_bench.models import stop_tokens

    copy, other = tiny_random(), tiny_random()
    assert (copy.name, copy.device, copy.dtype) == (tiny.name, tiny.device, tiny.dtype)
    assert copy.tokenizer.get_vocab() == tiny.tokenizer.get_vocab()
    assert copy.pad_token_id == tiny.pad_token_id and copy.eos_token_id == tiny.eos_token_id
    assert stop_tokens(copy) == stop_tokens(load_backbone("tiny-random"))
    for (n, a), (m, b) in zip(copy.model.state_dict().items(), tiny.model.state_dict().items(),
                              strict=True):  # fmt: skip
        assert n == m and torch.equal(a, b), n
    with torch.no_grad():
        copy.model.model.embed_tokens.weight.add_(1.0)
    assert not torch.equal(copy.model.model.embed_tokens.weight,
                           other.model.model.embed_tokens.weight)  # fmt: skip
    seeded = load_backbone("tiny-random", seed=1).model.state_dict()
    for n, a in tiny_random(seed=1).model.state_dict().items():
        assert torch.equal(a, seeded[n]), n


def test_response_nll_equals_the_full_logits_loss_on_response_tokens(tiny) -> None:
    torch.manual_seed(0)
    ids = torch.randint(5, 1000, (3, 12))
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0  # right padding
    labels = ids.clone()
    labels[:, :6] = -100
    labels[mask == 0] = -100
    out = response_nll(tiny, tiny.embed(ids), mask, labels, return_logits=True)
    logits = tiny.model(input_ids=ids, attention_mask=mask).logits
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                          reduction="none").view(3, -1).sum(1)  # fmt: skip
    torch.testing.assert_close(out.nll_sum, ref, rtol=1e-5, atol=1e-5)
    assert out.n_tokens.tolist() == [6, 6, 3]
    # logits exist only at the 15 scored positions, not at all 3 x 12
    assert out.logits.shape == (15, tiny.model.config.vocab_size)
    assert float(out.mean_over_tokens().detach()) == pytest.approx(
        float(ref.detach().sum() / 15), rel=1e-5
    )


def test_left_and_right_padding_give_the_same_loss(tiny) -> None:
    ids = torch.tensor([[11, 12, 13, 14, 15, 16]])
    labels = torch.tensor([[-100, -100, -100, 14, 15, 16]])
    right = response_nll(
        tiny,
        tiny.embed(torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1)),
        torch.tensor([[1] * 6 + [0] * 3]),
        torch.cat([labels, torch.full((1, 3), -100)], 1),
    )
    left = response_nll(
        tiny,
        tiny.embed(torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], 1)),
        torch.tensor([[0] * 3 + [1] * 6]),
        torch.cat([torch.full((1, 3), -100), labels], 1),
    )
    torch.testing.assert_close(left.nll_sum, right.nll_sum, rtol=1e-5, atol=1e-5)


def test_response_nll_rejects_mismatched_shapes(tiny) -> None:
    ids = torch.ones(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="shape mismatch"):
        response_nll(tiny, tiny.embed(ids), torch.ones(2, 4), torch.ones(2, 5, dtype=torch.long))


def test_a_pad_equal_to_eos_is_replaced(tiny) -> None:
    tok = tiny.tokenizer
    tok.pad_token = tok.eos_token
    try:
        _fix_pad_token(tok, None)
        assert tok.pad_token_id != tok.eos_token_id
        assert tok.pad_token == "<|endoftext|>"
    finally:
        tok.pad_token = "<|endoftext|>"


def test_device_and_dtype_resolution() -> None:
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype(None, torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ConfigError, match="invalid dtype"):
        resolve_dtype("int8", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_an_unknown_model_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="neither a built-in name"):
        load_backbone("no-such-model")


def test_newline_tokens_are_found(tiny) -> None:
    mask = tiny.newline_token_mask()
    nl = tiny.tokenizer.convert_tokens_to_ids("Ċ")
    assert mask[nl] and not mask[tiny.tokenizer.convert_tokens_to_ids("Ġhello")]


def test_tokenizer_cache_honours_spt_bench_cache(tmp_path, monkeypatch) -> None:
    from spt_bench.models import smollm2_tokenizer_dir

    monkeypatch.setenv("SPT_BENCH_CACHE", str(tmp_path))
    folder = smollm2_tokenizer_dir()
    assert folder == tmp_path / "tokenizers" / "smollm2"
    assert (folder / "tokenizer_config.json").is_file()
    assert not list(folder.parent.glob(".*"))  # no temp folders left behind
    assert smollm2_tokenizer_dir() == folder  # second call reuses it


@pytest.mark.slow
def test_smollm2_loads_from_its_cache_with_the_real_tokenizer() -> None:
    bb = load_backbone("smollm2-135m")
    assert bb.hidden_size == 576 and bb.model.config.vocab_size == 49152
    assert bb.model.hf_quantizer is None
    assert bb.tokenizer.eos_token == "<|im_end|>" and bb.pad_token_id == 0
    assert bb.tokenizer.chat_template


def test_a_local_model_folder_loads_like_a_hub_model(tiny, tmp_path) -> None:
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.pad_token = tiny.tokenizer.eos_token  # as SmolLM2 ships it
    try:
        tiny.tokenizer.save_pretrained(tmp_path)
    finally:
        tiny.tokenizer.pad_token = "<|endoftext|>"
    bb = load_backbone(str(tmp_path))
    assert bb.pad_token_id != bb.eos_token_id
    assert bb.model.config._attn_implementation == "sdpa"
    for a, b in zip(tiny.model.parameters(), bb.model.parameters(), strict=True):
        assert torch.equal(a, b)
