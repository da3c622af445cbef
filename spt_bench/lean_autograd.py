"""Memory-lean autograd for the LM's RMSNorm and SwiGLU MLP: the same forward, an analytic
backward that keeps less.

What plain autograd keeps for backward, per token and decoder layer of SmolLM2-135M (bf16,
hidden 576, MLP 1536; measured with saved-tensor hooks, `scripts/saved_activations.py`):

- each of the 2 RMSNorms keeps its input upcast to fp32 (2 x 2304 bytes); the lean version keeps
  the bf16 input and the fp32 1/rms (1152 + 4 bytes) and recomputes the normalisation;
- the MLP keeps the gate projection (SiLU's input), SiLU's output and the up projection (3 x 3072
  bytes); the lean version keeps gate and up (2 x 3072) and recomputes SiLU.

That is 18.4 -> 13.1 KB per token and layer (-29%), whatever the method: a frozen LM still
back-propagates through every layer to reach a soft prompt, so SPT's K x B sequences pay it
K times. Projections stay ordinary modules (LoRA layers inside them keep working); weights that
require grad (full fine-tuning) get their gradient too. Without grad (decoding, dev loss under
no_grad) the original forward runs. Forward outputs are bit-identical to transformers'; the
backward replays autograd's own gradient ops, so gradients match too (tests: fp32 and bf16).
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F

RMSNORM_CLASSES = ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm")
MLP_CLASSES = ("LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP")


class _RMSNorm(torch.autograd.Function):
    """transformers' LlamaRMSNorm with only (x, weight, 1/rms) kept; backward replays the
    gradient ops autograd would run, in the same order and dtypes (so the same numbers)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        xf = x.to(torch.float32)
        rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        out = weight * (xf * rstd).to(x.dtype)
        ctx.save_for_backward(x, weight, rstd)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        x, weight, rstd = ctx.saved_tensors
        xf = x.to(torch.float32)
        grad_w = grad_x = None
        if ctx.needs_input_grad[1]:
            normed = (xf * rstd).to(x.dtype)
            grad_w = (grad_out * normed).sum_to_size(weight.shape).to(weight.dtype)
        if ctx.needs_input_grad[0]:
            grad_n = (grad_out * weight).to(x.dtype).to(torch.float32)  # mul, then the casts
            grad_xf = grad_n * rstd  # n = xf * rstd, towards xf
            grad_rstd = (grad_n * xf).sum(-1, keepdim=True)  # ... and towards rstd
            grad_var = -0.5 * grad_rstd * rstd.pow(3)  # rsqrt
            grad_sq = grad_var.expand_as(xf) / xf.shape[-1]  # mean
            grad_x = (grad_xf + grad_sq * (2.0 * xf)).to(x.dtype)  # pow(2), then the cast
        return grad_x, grad_w, None


class _SwiGLU(torch.autograd.Function):
    """silu(gate) * up keeping only gate and up; backward recomputes silu(gate) and runs the
    same gradient kernels as autograd (mul, silu_backward), in the activations' dtype."""

    @staticmethod
    def forward(ctx: Any, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        gate, up = ctx.saved_tensors
        grad_gate = grad_up = None
        if ctx.needs_input_grad[1]:
            grad_up = grad_out * F.silu(gate)
        if ctx.needs_input_grad[0]:
            grad_gate = torch.ops.aten.silu_backward(grad_out * up, gate)
        return grad_gate, grad_up


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _lean_rmsnorm_forward(self: Any, hidden_states: torch.Tensor) -> torch.Tensor:
    if _needs_grad(hidden_states, self.weight):
        return _RMSNorm.apply(hidden_states, self.weight, self.variance_epsilon)
    return type(self).forward(self, hidden_states)


def _lean_mlp_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    gate = self.gate_proj(x)
    up = self.up_proj(x)
    if _needs_grad(gate, up):
        return self.down_proj(_SwiGLU.apply(gate, up))
    return self.down_proj(self.act_fn(gate) * up)


def _is_silu_mlp(module: Any) -> bool:
    config = getattr(module, "config", None)
    act = getattr(config, "hidden_act", None) or getattr(config, "hidden_activation", None)
    return act in ("silu", "swish") and all(
        hasattr(module, n) for n in ("gate_proj", "up_proj", "down_proj", "act_fn")
    )


def lean_modules(model: Any) -> list[tuple[Any, Any]]:
    """(module, lean forward) for every RMSNorm and SwiGLU MLP this module knows how to slim."""
    found = []
    for m in model.modules():
        name = type(m).__name__
        if name in RMSNORM_CLASSES and hasattr(m, "variance_epsilon") and hasattr(m, "weight"):
            found.append((m, _lean_rmsnorm_forward))
        elif name in MLP_CLASSES and _is_silu_mlp(m):
            found.append((m, _lean_mlp_forward))
    return found


def set_lean_activations(model: Any, on: bool) -> int:
    """Swap the lean forwards in (on) or restore transformers' (off). Returns how many modules
    use the lean forward afterwards (0 for an architecture it does not know: nothing changes)."""
    n = 0
    for module, forward in lean_modules(model):
        if on:
            module.forward = types.MethodType(forward, module)
            n += 1
        elif "forward" in vars(module):
            del module.forward  # the class's forward again
    return n


def saved_activation_bytes(model: Any, embeds: torch.Tensor, mask: torch.Tensor, lean: bool) -> int:
    """Bytes autograd keeps for backward in one forward of `model`'s body (each storage once,
    parameters excluded - they are kept anyway), with or without lean activations."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            kept[ptr] = t.untyped_storage().nbytes()
        return t

    body = getattr(model, model.base_model_prefix, model)
    set_lean_activations(model, lean)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            body(inputs_embeds=embeds, attention_mask=mask)
    finally:
        set_lean_activations(model, False)
    return sum(kept.values())
