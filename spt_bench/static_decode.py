"""The `static` decoding engine: our own layer loop over the backbone's weights, a preallocated
KV cache, and on CUDA one CUDA graph per batch for the decoding step.

Why: the default engine (transformers' forward with a DynamicCache) pays, at every decoding
step, transformers' per-call host work (mask construction, kwargs plumbing, ~15 kernel launches
per layer issued from Python), a torch.cat of the whole KV cache per layer, a copy of the cache
whenever rows finish, and for grouped-query attention a repeat of K/V to all query heads. On a
GPU a 135M model's decoding step is bound by that host work, not by arithmetic (plain `generate`
on an H100: ~35 ms per step almost independent of batch size, ../shared/device.md). Here:

- the cache is one preallocated [B, kv_heads, T0 + max_new, head_dim] buffer pair per layer,
  written in place; the attention mask over it is a [B, T0 + max_new] additive float buffer
  (0 / dtype min), so attention does not convert a bool mask in every layer of every step;
- in decoding steps grouped-query attention folds the query heads of a group into the
  query-length axis, so the cache is never repeated: q [B, kv_heads, groups, d] against
  K [B, kv_heads, S, d] (the prefill repeats K/V once, as transformers does);
- the decoding step (embed, all layers, final norm, LM head, argmax, advancing the position and
  mask) has fixed shapes and no host synchronisation, so on CUDA it is captured once per batch as
  a CUDA graph and replayed (greedy decoding); the host reads one [B] token vector per step;
- finished rows stay in the batch (shapes must not change under a graph); in eager mode (CPU, or
  CUDA without graphs) the buffers are compacted to the live rows whenever half of them have
  finished, since there compute, not launches, is the bound.

It covers Llama-family bodies (Llama, SmolLM, Mistral without a sliding window, Qwen2, Qwen3):
`unsupported_reason` says why another model cannot use it, and the caller reports that instead
of silently switching engines. Outputs match the default engine's (greedy; tested token for
token on CPU in fp32).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from spt_bench.models import Backbone

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


def unsupported_reason(backbone: Backbone) -> str | None:
    """None when the static engine can run this backbone, else a one-line reason."""
    config = backbone.model.config
    model_type = getattr(config, "model_type", "?")
    if model_type not in SUPPORTED_MODEL_TYPES:
        return (
            f"the static decoding engine supports {', '.join(SUPPORTED_MODEL_TYPES)} bodies, "
            f"not {model_type!r}; use --decode-engine hf"
        )
    if getattr(config, "use_sliding_window", False) or (
        model_type == "mistral" and getattr(config, "sliding_window", None)
    ):
        return "the static decoding engine does not implement sliding-window attention"
    rope = getattr(config, "rope_scaling", None) or getattr(config, "rope_parameters", None) or {}
    if isinstance(rope, dict) and rope.get("rope_type", rope.get("type")) == "dynamic":
        return "the static decoding engine does not implement dynamic RoPE scaling"
    base = backbone.base
    for attr in ("layers", "norm", "rotary_emb"):
        if not hasattr(base, attr):
            return f"the model body has no {attr!r}; use --decode-engine hf"
    return None


def static_decoder(backbone: Backbone) -> StaticDecoder:
    """The backbone's StaticDecoder, built once (raises ConfigError for an unsupported model)."""
    if backbone._static_decoder is None:
        backbone._static_decoder = StaticDecoder(backbone)
    return backbone._static_decoder


class StaticKV:
    """Per-layer K/V buffers [B, kv_heads, S, d] plus the additive key mask [B, S]
    (0 on keys a row attends to, the dtype's minimum elsewhere)."""

    def __init__(self, keys: list, values: list, key_bias: torch.Tensor) -> None:
        self.keys = keys
        self.values = values
        self.key_bias = key_bias

    def select_rows(self, rows: torch.Tensor) -> None:
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]
        self.key_bias = self.key_bias.index_select(0, rows)


class StaticDecoder:
    """Prefill + fixed-shape decoding steps over one batch (see module doc)."""

    def __init__(self, backbone: Backbone) -> None:
        reason = unsupported_reason(backbone)
        if reason is not None:
            from spt_bench.errors import ConfigError

            raise ConfigError(reason)
        self.backbone = backbone
        self.base = backbone.base
        self.layers = list(self.base.layers)
        attn = self.layers[0].self_attn
        self.head_dim = int(attn.head_dim)
        self.scaling = float(attn.scaling)
        config = backbone.model.config
        self.n_heads = int(config.num_attention_heads)
        self.n_kv = int(getattr(config, "num_key_value_heads", None) or self.n_heads)
        self.groups = self.n_heads // self.n_kv
        self.qk_norm = hasattr(attn, "q_norm") and hasattr(attn, "k_norm")
        module = importlib.import_module(type(backbone.model).__module__)
        self._apply_rope = module.apply_rotary_pos_emb
        self._rope_table: tuple[Any, Any] | None = None
        self.graphs_captured = 0  # CUDA graphs captured (one per greedy batch on CUDA)
        self.capture_error: str | None = None  # the first capture failure (then eager steps)

    # ------------------------------------------------------------------ pieces

    def ensure_rope(self, length: int, like: torch.Tensor) -> None:
        """Build the cos/sin table for positions 0..length-1 (once; grown when needed), so the
        decoding step only gathers from it (no host sync, capturable)."""
        import torch

        table = self._rope_table
        if table is None or table[0].shape[0] < length or table[0].dtype != like.dtype:
            n = max(length, 1024)
            ids = torch.arange(n, device=like.device).unsqueeze(0)
            cos, sin = self.base.rotary_emb(like, ids)
            self._rope_table = (cos[0], sin[0])

    def _rope(self, positions: torch.Tensor) -> tuple[Any, Any]:
        """cos, sin [B, T, d] for integer positions [B, T]."""
        assert self._rope_table is not None
        cos, sin = self._rope_table
        return cos[positions], sin[positions]

    def _attention(
        self,
        layer: Any,
        x: torch.Tensor,
        cos: Any,
        sin: Any,
        kv: StaticKV,
        i: int,
        write: torch.Tensor,
        mask: torch.Tensor,
        n_keys: int | None,
    ) -> torch.Tensor:
        """Self-attention of x [B,T,h] writing K/V at buffer columns `write` [T] and attending
        with the additive `mask` (broadcastable to [B, 1, T, n_keys]) to the first `n_keys`
        buffer columns (None: all - the fixed shape a CUDA graph needs)."""
        import torch.nn.functional as F

        attn = layer.self_attn
        b, t, _ = x.shape
        shape = (b, t, -1, self.head_dim)
        q = attn.q_proj(x).view(shape)
        k = attn.k_proj(x).view(shape)
        v = attn.v_proj(x).view(shape)
        if self.qk_norm:
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k = self._apply_rope(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
        kv.keys[i].index_copy_(2, write, k.to(kv.keys[i].dtype))
        kv.values[i].index_copy_(2, write, v.transpose(1, 2).to(kv.values[i].dtype))
        keys, values = kv.keys[i], kv.values[i]
        if n_keys is not None:
            keys, values = keys[:, :, :n_keys], values[:, :, :n_keys]
        if t == 1:
            # decoding: query head h uses kv head h // groups, so fold the group into the query
            # axis and attend to the cache as it is (no repeated copy of K/V per step)
            q = q.reshape(b, self.n_kv, self.groups, self.head_dim)
        elif self.groups > 1:
            # prefill: repeat K/V to every query head (as transformers does), so one [B,1,T,S]
            # mask serves all heads
            keys = keys.repeat_interleave(self.groups, dim=1)
            values = values.repeat_interleave(self.groups, dim=1)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scaling)
        out = out.reshape(b, self.n_heads, t, self.head_dim).transpose(1, 2).reshape(b, t, -1)
        return attn.o_proj(out)

    def _body(
        self,
        h: torch.Tensor,
        positions: torch.Tensor,
        kv: StaticKV,
        write: torch.Tensor,
        mask: torch.Tensor,
        n_keys: int | None,
    ) -> torch.Tensor:
        cos, sin = self._rope(positions)
        for i, layer in enumerate(self.layers):
            x = layer.input_layernorm(h)
            h = h + self._attention(layer, x, cos, sin, kv, i, write, mask, n_keys)
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return self.base.norm(h)

    # ------------------------------------------------------------------ public

    def prefill(
        self, embeds: torch.Tensor, mask: torch.Tensor, max_new_tokens: int
    ) -> tuple[torch.Tensor, StaticKV, torch.Tensor]:
        """Run the left-padded prompts [B,T0,h] (mask [B,T0]) into fresh buffers of length
        T0 + max_new_tokens. Returns (last-position logits [B,V], cache, next positions [B])."""
        import torch

        b, t0, _ = embeds.shape
        s = t0 + max_new_tokens
        dev = embeds.device
        dtype = embeds.dtype
        # zeros, not empty: a masked key's weight is exactly 0, but 0 * NaN garbage is NaN
        keys = [
            torch.zeros(b, self.n_kv, s, self.head_dim, device=dev, dtype=dtype)
            for _ in self.layers
        ]
        values = [torch.zeros_like(k) for k in keys]
        masked = torch.finfo(dtype).min
        key_bias = torch.full((b, s), masked, dtype=dtype, device=dev)
        key_bias[:, :t0].masked_fill_(mask.bool(), 0.0)
        kv = StaticKV(keys, values, key_bias)
        self.ensure_rope(s, embeds)
        positions = (mask.long().cumsum(-1) - 1).clamp_min(0)
        row = torch.arange(t0, device=dev)
        causal = row.unsqueeze(0) <= row.unsqueeze(1)  # [T0 queries, T0 keys]
        attend = causal.unsqueeze(0) & mask.bool().unsqueeze(1)  # [B, T0, T0]
        # a padding query sees no key; let it see itself so its (unused) state stays finite
        attend = attend | torch.eye(t0, dtype=torch.bool, device=dev).unsqueeze(0)
        bias = torch.zeros(attend.shape, dtype=dtype, device=dev).masked_fill_(~attend, masked)
        bias = bias.unsqueeze(1)  # [B, 1, T0, T0], shared by all heads
        hidden = self._body(embeds, positions, kv, row, bias, t0)
        logits = self.backbone.lm_head(hidden[:, -1])
        next_pos = mask.long().sum(dim=1)
        return logits, kv, next_pos


class DecodeSteps:
    """The fixed-shape decoding step over a prefilled batch: consumes `token` [B] at `position`
    [B] / buffer column `write` [1], leaves the step's logits in `logits` and their argmax in
    `token` (a sampling caller overwrites it). With `cuda_graph` (greedy callers) the step is
    captured once and replayed."""

    def __init__(
        self,
        decoder: StaticDecoder,
        kv: StaticKV,
        first_token: torch.Tensor,
        positions: torch.Tensor,
        write_col: int,
        cuda_graph: bool,
    ) -> None:
        import torch

        self.decoder = decoder
        self.kv = kv
        self.token = first_token.clone()
        self.position = positions.clone()
        self.write = torch.tensor([write_col], device=first_token.device)
        self.filled = write_col  # host copy of `write` for eager steps (no sync to read it)
        self.logits: Any = None
        self.graph = None
        self.capture_error: str | None = None
        if cuda_graph and first_token.device.type == "cuda":
            try:
                self._capture()
            except torch.OutOfMemoryError:
                raise  # the decode loop halves the batch
            except RuntimeError as e:  # an op this torch cannot capture: say so, run eagerly
                self.graph = None
                self.capture_error = str(e).splitlines()[0] if str(e) else type(e).__name__
                torch.cuda.synchronize()
                self._restore(self._state)

    def _step(self, full_width: bool) -> None:
        d = self.decoder
        kv = self.kv
        kv.key_bias.index_fill_(1, self.write, 0.0)
        h = d.backbone.embed(self.token.unsqueeze(1)).to(kv.keys[0].dtype)
        # eager: attend to the filled columns only; a graph needs the fixed full width
        n_keys = None if full_width else self.filled + 1
        mask = kv.key_bias[:, None, None, :n_keys]
        hidden = d._body(h, self.position.unsqueeze(1), kv, self.write, mask, n_keys)
        self.logits = d.backbone.lm_head(hidden[:, -1])
        self.token.copy_(self.logits.argmax(dim=-1))
        self.position.add_(1)
        self.write.add_(1)

    def _capture(self) -> None:
        import torch

        self._state = state = (
            self.token.clone(),
            self.position.clone(),
            self.write.clone(),
            self.kv.key_bias.clone(),
        )
        # the caller's autocast settings, minus its weight-cast cache (not capture-safe)
        amp = torch.autocast(
            device_type="cuda",
            dtype=torch.get_autocast_dtype("cuda"),
            enabled=torch.is_autocast_enabled("cuda"),
            cache_enabled=False,
        )
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), amp:
            for _ in range(2):  # warm-up: lazy kernel loads, cuBLAS workspaces (as torch advises)
                self._step(full_width=True)
                self._restore(state)
        torch.cuda.current_stream().wait_stream(side)
        self._restore(state)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), amp:
            self._step(full_width=True)
        self._restore(state)  # capture only records; restoring again keeps this obviously safe
        self.graph = graph

    def _restore(self, state: tuple) -> None:
        token, position, write, key_bias = state
        self.token.copy_(token)
        self.position.copy_(position)
        self.write.copy_(write)
        self.kv.key_bias.copy_(key_bias)

    def step(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self._step(full_width=False)
        self.filled += 1

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only `rows` (eager mode only: a captured graph has fixed shapes)."""
        assert self.graph is None
        self.kv.select_rows(rows)
        self.token = self.token.index_select(0, rows)
        self.position = self.position.index_select(0, rows)
