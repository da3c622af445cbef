"""Lean activations: same forward, same gradients, less kept for backward."""

from __future__ import annotations

import pytest
import torch
from tiny_model import tiny_random

from spt_bench.lean_autograd import lean_modules, saved_activation_bytes, set_lean_activations
from spt_bench.models import build_tiny_random


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_random().tokenizer


def _model(tokenizer, dtype=torch.float32, frozen=True):
    model = build_tiny_random(tokenizer).to(dtype)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():  # non-trivial norms and weights
            scale = 0.3 if "norm" in name else 0.15
            p.copy_((1.0 if "norm" in name else 0.0) + torch.randn(p.shape, generator=g) * scale)
    model.requires_grad_(not frozen)
    return model.eval()


def _inputs(model, dtype):
    g = torch.Generator().manual_seed(1)
    embeds = (torch.randn(3, 11, model.config.hidden_size, generator=g) * 0.5).to(dtype)
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[0, :4] = 0  # left padding, as in our batches
    return embeds.requires_grad_(True), mask


def _loss_and_grads(model, embeds, mask, lean: bool):
    set_lean_activations(model, lean)
    try:
        embeds = embeds.detach().clone().requires_grad_(True)
        out = model(inputs_embeds=embeds, attention_mask=mask).logits
        loss = out.float().logsumexp(-1).mean()
        params = [p for p in model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, [embeds, *params])
    finally:
        set_lean_activations(model, False)
    return out.detach(), grads


@pytest.mark.parametrize("frozen", [True, False], ids=["frozen-lm", "full-ft"])
def test_lean_forward_is_identical_and_gradients_agree_in_fp32(tokenizer, frozen) -> None:
    model = _model(tokenizer, frozen=frozen)
    embeds, mask = _inputs(model, torch.float32)
    out_plain, grads_plain = _loss_and_grads(model, embeds, mask, lean=False)
    out_lean, grads_lean = _loss_and_grads(model, embeds, mask, lean=True)
    assert torch.equal(out_plain, out_lean)
    assert len(grads_plain) == (1 if frozen else 1 + len(list(model.parameters())))
    for a, b in zip(grads_plain, grads_lean, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)
    assert grads_plain[0].abs().sum() > 0


@pytest.mark.parametrize("frozen", [True, False], ids=["frozen-lm", "full-ft"])
def test_lean_gradients_are_bit_identical_in_bf16(tokenizer, frozen) -> None:
    """The backward replays autograd's own ops: in bf16 (the GPU dtype) every gradient is
    bit-for-bit transformers' (fp32 differs by reduction order only, ~5e-9)."""
    model = _model(tokenizer, dtype=torch.bfloat16, frozen=frozen)
    embeds, mask = _inputs(model, torch.bfloat16)
    out_plain, grads_plain = _loss_and_grads(model, embeds, mask, lean=False)
    out_lean, grads_lean = _loss_and_grads(model, embeds, mask, lean=True)
    assert torch.equal(out_plain, out_lean)
    for a, b in zip(grads_plain, grads_lean, strict=True):
        assert torch.equal(a, b)


def test_lean_activations_keep_less_for_backward(tokenizer) -> None:
    model = _model(tokenizer)
    embeds, mask = _inputs(model, torch.float32)

    def saved_bytes(lean: bool) -> int:
        return saved_activation_bytes(model, embeds, mask, lean)

    plain, lean = saved_bytes(False), saved_bytes(True)
    # tiny-random: hidden 64, MLP 128; both norms drop their fp32 copy (same dtype here, so only
    # the SiLU output disappears): strictly less, about a sixth
    assert lean < 0.9 * plain


def test_lean_forward_is_swapped_in_and_out_and_skipped_without_grad(
    tokenizer, monkeypatch
) -> None:
    from spt_bench import lean_autograd

    model = _model(tokenizer)
    n = len(lean_modules(model))
    assert n == 2 * 2 + 1 + 2  # 2 layers x 2 norms + final norm + 2 MLPs
    assert set_lean_activations(model, True) == n
    assert all("forward" in vars(m) for m, _ in lean_modules(model))

    applied: list[str] = []
    for fn in (lean_autograd._RMSNorm, lean_autograd._SwiGLU):
        monkeypatch.setattr(
            fn, "apply", lambda *a, fn=fn, orig=fn.apply: applied.append(fn.__name__) or orig(*a)
        )
    embeds, mask = _inputs(model, torch.float32)
    with torch.no_grad():  # decoding / dev loss: transformers' own forward, nothing kept
        model(inputs_embeds=embeds, attention_mask=mask)
    assert applied == []
    model(inputs_embeds=embeds, attention_mask=mask)
    assert applied.count("_RMSNorm") == 5 and applied.count("_SwiGLU") == 2

    set_lean_activations(model, False)
    assert not any("forward" in vars(m) for m, _ in lean_modules(model))
