"""`spt-bench plan`: per-process training memory of a method on a backbone, for DDP and FSDP,
on paper. The backbone is built from its config on the meta device (shapes and dtypes, no
weights) and the method is constructed over it exactly as `run` would, so parameter counts and
dtypes are the code's, not a formula's.

Per process, in bytes (N processes, B examples per micro-batch over all processes, S tokens):

- params: every parameter of the backbone and the method. DDP: all of them on every process.
  FSDP (spt_bench.fsdp): the decoder layers' parameters 1/N each; the embedding, final norm and
  output head whole. Plus, FSDP only, "gathered": two decoder layers' full weights, the one
  running and the one prefetched.
- grads: one gradient per trainable value, in its dtype (FSDP: the layers' share 1/N).
- optimizer: AdamW's two moments per trainable value, in the parameter's dtype (torch's AdamW
  keeps its state in the parameter's dtype).
- activations (an estimate, the one figure not read from the code): per decoder layer
  34 * b * s * h * (dtype bytes / 2) (Korthikanti et al. 2022, "Reducing Activation
  Recomputation in Large Transformer Models", without the attention-score term, which fused
  SDPA/flash attention does not store), for b = ceil(B / N) rows times the method's training
  rows per example (SPT: one per prompt of its pool) and s = S + the method's virtual tokens;
  a checkpointed layer keeps only its input (2 * b * s * h * bytes / 2); plus the fp32 logits
  and their gradient (2 * 4 * b * s * vocab).
- fits: the total is at most the GPU's memory less 10% (CUDA context, allocator fragmentation).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from spt_bench.errors import ConfigError

# The paper's backbones, by hub id: their public config.json values (architecture only), so
# the plan needs no download. Any other model: a config.json / model folder / cached hub id.
SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "facebook/opt-125m": ("opt", {"hidden_size": 768, "num_hidden_layers": 12,
                                  "ffn_dim": 3072, "num_attention_heads": 12}),
    "facebook/opt-1.3b": ("opt", {"hidden_size": 2048, "num_hidden_layers": 24,
                                  "ffn_dim": 8192, "num_attention_heads": 32}),
    "facebook/opt-2.7b": ("opt", {"hidden_size": 2560, "num_hidden_layers": 32,
                                  "ffn_dim": 10240, "num_attention_heads": 32}),
    "meta-llama/Llama-2-7b-hf": ("llama", {
        "hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 11008,
        "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
    }),
}  # fmt: skip
OPT_COMMON = {"vocab_size": 50272, "max_position_embeddings": 2048, "do_layer_norm_before": True}
HEADROOM = 0.9  # share of a GPU's memory a plan may use
GIB = 1024**3


@dataclass
class Footprint:
    """The method on the backbone: bytes of each kind of parameter (whole model)."""

    method: str
    model: str
    dtype: str
    layer_params: int  # bytes in decoder layers (FSDP shards these)
    other_params: int  # embedding, norm, head, method's own modules (kept whole)
    layer_trainable: int
    other_trainable: int
    n_trainable: int  # values, not bytes
    n_params: int
    max_layer: int  # bytes of the largest decoder layer
    n_layers: int
    hidden: int
    vocab: int
    rows_per_example: int
    virtual_tokens: int


@dataclass
class PlanRow:
    strategy: str
    processes: int
    params: int
    grads: int
    optimizer: int
    gathered: int
    activations: int
    total: int
    fits: bool


def model_config(model: str) -> Any:
    """A transformers config for `model`: a SHAPES hub id, a built-in name, a config.json or
    model folder, or a hub id already in the local cache (no network)."""
    from transformers import AutoConfig, LlamaConfig, OPTConfig

    if model in SHAPES:
        kind, kw = SHAPES[model]
        return OPTConfig(**OPT_COMMON, **kw) if kind == "opt" else LlamaConfig(**kw)
    if model in ("smollm2", "smollm2-135m"):
        from spt_bench.peft_method import _smollm2_config

        return _smollm2_config(AutoConfig)
    if model == "tiny-random":
        from spt_bench.models import tiny_random_config

        return tiny_random_config()
    path = Path(model)
    if path.is_file():
        return AutoConfig.from_pretrained(str(path.parent) if path.name == "config.json"
                                          else str(path))  # fmt: skip
    try:
        return AutoConfig.from_pretrained(model, local_files_only=True)
    except OSError:
        known = ", ".join(SHAPES)
        raise ConfigError(
            f"no config for model {model!r}: give a config.json or model folder, a hub id in "
            f"the local Hugging Face cache, or one of {known}"
        ) from None


def footprint(method_name: str, model: str, options: dict | None = None,
              dtype: str = "bfloat16") -> Footprint:  # fmt: skip
    """Build `model` on the meta device in `dtype` and `method_name` over it; count bytes."""
    import torch

    from spt_bench.fsdp import decoder_layers
    from spt_bench.methods import get_method, make_options
    from spt_bench.models import meta_backbone

    config = model_config(model)
    backbone = meta_backbone(config, model, getattr(torch, dtype))
    lm = backbone.model
    cls = get_method(method_name)
    method = cls(backbone, make_options(cls, options or {}))
    trainable = {id(p) for p in method.trainable_parameters() if p.requires_grad}
    layers = decoder_layers(lm)
    in_layers = {id(p) for m in layers for p in m.parameters()}
    everything = {id(p): p for p in lm.parameters()}
    everything.update({id(p): p for p in method.trainable_parameters()})

    def nbytes(pred: Any) -> int:
        return sum(p.numel() * p.element_size() for i, p in everything.items() if pred(i))

    prompts = method.soft_prompts()
    return Footprint(
        method=method_name, model=model, dtype=dtype,
        layer_params=nbytes(lambda i: i in in_layers),
        other_params=nbytes(lambda i: i not in in_layers),
        layer_trainable=nbytes(lambda i: i in in_layers and i in trainable),
        other_trainable=nbytes(lambda i: i not in in_layers and i in trainable),
        n_trainable=sum(everything[i].numel() for i in trainable),
        n_params=sum(p.numel() for p in everything.values()),
        max_layer=max(sum(p.numel() * p.element_size() for p in m.parameters()) for m in layers),
        n_layers=len(layers), hidden=int(config.hidden_size), vocab=int(config.vocab_size),
        rows_per_example=method.training_rows_per_example(),
        virtual_tokens=0 if prompts is None else int(prompts.shape[1]),
    )  # fmt: skip


def plan_rows(fp: Footprint, processes: int, *, batch_size: int, seq_len: int, gpu_gb: float,
              activation_checkpointing: float = 0.0) -> list[PlanRow]:  # fmt: skip
    """DDP and FSDP rows for `processes` processes (one process: a single DDP-free row)."""
    act_bytes = 2 if fp.dtype in ("bfloat16", "float16") else 4
    rows_out = []
    strategies = ("ddp", "fsdp") if processes > 1 else ("single",)
    b = math.ceil(batch_size / processes) * fp.rows_per_example
    s = seq_len + fp.virtual_tokens
    per_layer = 34 * b * s * fp.hidden * act_bytes // 2
    kept = 2 * b * s * fp.hidden * act_bytes // 2
    n_ckpt = round(activation_checkpointing * fp.n_layers)
    activations = (fp.n_layers - n_ckpt) * per_layer + n_ckpt * kept
    activations += (per_layer if n_ckpt else 0) + 2 * 4 * b * s * fp.vocab
    for strategy in strategies:
        shard = processes if strategy == "fsdp" else 1
        params = fp.layer_params // shard + fp.other_params
        grads = fp.layer_trainable // shard + fp.other_trainable
        gathered = 2 * fp.max_layer if strategy == "fsdp" else 0
        total = params + grads + 2 * grads + gathered + activations
        rows_out.append(PlanRow(
            strategy, processes, params, grads, 2 * grads, gathered, activations, total,
            fits=total <= HEADROOM * gpu_gb * GIB,
        ))  # fmt: skip
    return rows_out


def plan_json(fp: Footprint, rows: list[PlanRow], settings: dict[str, Any]) -> dict[str, Any]:
    return {"footprint": asdict(fp), "settings": settings, "rows": [asdict(r) for r in rows]}


def plan_table_rows(fp: Footprint, rows: list[PlanRow]) -> list[list[str]]:
    """The plan as text cells (GiB), one row per strategy and process count."""

    def gib(n: int) -> str:
        return f"{n / GIB:.2f}"

    return [
        [r.strategy, str(r.processes), gib(r.params), gib(r.grads), gib(r.optimizer),
         gib(r.gathered), gib(r.activations), gib(r.total), "yes" if r.fits else "NO"]
        for r in rows
    ]  # fmt: skip


PLAN_HEADER = ["strategy", "processes", "params", "grads", "AdamW", "gathered", "activations",
               "total GiB", "fits"]  # fmt: skip


def plan_markdown(fp: Footprint, rows: list[PlanRow], gpu_gb: float) -> str:
    lines = [
        f"{fp.method} on {fp.model} ({fp.dtype}): {fp.n_params:,} parameters, "
        f"{fp.n_trainable:,} trainable; per process, GiB; fits = total <= "
        f"{HEADROOM:.0%} of {gpu_gb:g} GiB",
        "",
        "| " + " | ".join(PLAN_HEADER) + " |",
        "|" + "---|" * len(PLAN_HEADER),
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in plan_table_rows(fp, rows)]
    return "\n".join(lines) + "\n"
