"""The method contract and registry: what a method must provide to the shared loop and decoder.

A method says which parameters train (`trainable_parameters`), how its training loss is computed
from a `TrainBatch` (`training_loss`, normally via `models.response_nll`), and what prefix (if
any) each generation row gets (`prefix_embeds`): soft-prompt input embeddings, and/or a per-layer
key/value prefix (`KVPrefix`: prefix tuning, P-tuning v2) that the LM attends to in every layer
without it passing through the input. Everything else - optimiser, schedule, checkpoints,
decoding, scoring - is shared (`spt_bench.train`, `spt_bench.decode`).

Capabilities: `supports_engines` names the decode engines that can serve the method (an engine
not listed refuses it before any training, with the reason in `engine_refusal`); a method with
a `KVPrefix` cannot be beam-searched (transformers' generate takes no per-layer prefix here).

Registry: `@register_method` (rejects a second class under an existing name), `get_method`,
`list_methods`. The built-in methods live in `baselines/` and `spt_bench/spt/`; they are
imported the first time the registry is read, so importing this module stays cheap. A built-in
module that does not exist (yet) is skipped; any other import error propagates.

Options: every method declares `Options`, a dataclass; `make_options(cls, dict)` validates a
run config's `method_options` against it (unknown keys and wrong types raise ConfigError naming
the method and key; a None value means "use the method's default").
"""

from __future__ import annotations

import dataclasses
import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from spt_bench.errors import ConfigError
from spt_bench.typed import coerce_dataclass

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from spt_bench.batches import GenBatch, TrainBatch
    from spt_bench.data.example import Example
    from spt_bench.data.formatting import PromptFormatter
    from spt_bench.models import Backbone, ResponseNLL

# Modules holding the built-in methods, imported lazily by the registry.
BUILTIN_METHOD_MODULES: tuple[str, ...] = (
    "spt_bench.baselines.text_prompt",
    "spt_bench.baselines.full_ft",
    "spt_bench.baselines.prompt_tuning",
    "spt_bench.baselines.lora",
    "spt_bench.baselines.peft_generic",
    "spt_bench.baselines.prefix_tuning",
    "spt_bench.baselines.ia3",
    "spt_bench.baselines.dora",
    "spt_bench.baselines.hira",
    "spt_bench.spt.method",
)


@dataclass
class NoOptions:
    """Options of a method that has none."""


@dataclass
class KVPrefix:
    """A per-layer key/value prefix: `layers[i] = (keys, values)`, each [B, H_kv, P, head_dim]
    (the layout of transformers' KV cache), one entry per decoder layer. The LM attends to the P
    prefix positions in every layer as if they were cached tokens before the input: the
    attention mask gets P leading ones and the input's positions start at P (PEFT's prefix
    tuning does the same)."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]

    @property
    def length(self) -> int:
        return int(self.layers[0][0].shape[2])

    @property
    def batch_size(self) -> int:
        return int(self.layers[0][0].shape[0])

    def to_cache(self, dtype: torch.dtype | None = None) -> Any:
        """A fresh transformers DynamicCache holding the prefix (the forward appends to it, so
        every forward needs its own). Gradients flow back to the prefix tensors."""
        from transformers import DynamicCache

        cache = DynamicCache()
        for i, (k, v) in enumerate(self.layers):
            if dtype is not None:
                k, v = k.to(dtype), v.to(dtype)
            cache.update(k, v, i)
        return cache

    def extend_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """The attention mask with the prefix's P leading ones."""
        import torch

        ones = attention_mask.new_ones(attention_mask.shape[0], self.length)
        return torch.cat([ones, attention_mask], dim=1)


@dataclass
class PrefixOutput:
    """What a method prepends at generation time.

    embeds: [B, L, d] soft-prompt embeddings, one row per batch row (None = no prefix);
    kv: a per-layer key/value prefix with B rows (None = none; see KVPrefix);
    row_info: one dict per row, merged into that row of predictions.jsonl (e.g. SPT's
    `selected_prompt` and `prompt_scores`). Must not depend on the other rows of the batch.
    """

    embeds: torch.Tensor | None = None
    row_info: list[dict] = field(default_factory=list)
    kv: KVPrefix | None = None


@dataclass(frozen=True)
class RowField:
    """A per-row field a method adds to predictions.jsonl (through `PrefixOutput.row_info`).

    carry: also copied into each example_scores.jsonl row (by the scorer); sample: shown with
    the samples of report.md."""

    name: str
    description: str
    carry: bool = False
    sample: bool = False


@dataclass(frozen=True)
class LogField:
    """A number a method adds to train_log.jsonl rows, for `plot training`.

    kind: "loss" (a loss term, drawn with the others), "diagnostic" (its own panel with `title`,
    `ylabel`, palette index `style`, placed by `order` among the diagnostics - the shared ones
    are the learning rate at 0 and the gradient norm at 30; `uniform_over` names an option K
    whose ln K the panel marks: the entropy of a uniform choice among K), or "dev_usage" (in
    evaluation rows: selections per prompt, drawn as stacked shares under `title`)."""

    name: str
    kind: str
    title: str = ""
    ylabel: str = ""
    style: int = 3
    order: int = 50
    uniform_over: str = ""


@dataclass(frozen=True)
class BenchEntry:
    """What a method contributes to `spt-bench bench` (spt_bench.bench); the default entry
    contributes nothing beyond what any method gets when it is asked for by name.

    train_default: timed by the default training benchmark, in `order` (lower first);
    decode_default: the method whose (untrained) decoding the benchmark times by default;
    relative_to: a method whose step time and peak memory this one's are divided by
      (ratios `<name>_over_<other>_time` / `_memory`, when both are timed);
    lean_compare: also timed with transformers' own RMSNorm/MLP autograd (what the loop's lean
      activations save), unless the benchmark turns that comparison off;
    checkpointing: also timed with activation checkpointing at the benchmark's fractions;
    profile: its training step is the one written as an operator table under `--profile`."""

    train_default: bool = False
    order: int = 50
    decode_default: bool = False
    relative_to: str = ""
    lean_compare: bool = False
    checkpointing: bool = False
    profile: bool = False


@dataclass
class ReportSection:
    """A section a method adds to report.md: `## title`, an intro line, a table (float cells are
    scores, written with compare's precision rule) and notes below it."""

    title: str
    intro: str
    header: list[str]
    rows: list[list[Any]]
    notes: list[str] = field(default_factory=list)


class Method(ABC):
    """Base class of every method. Subclasses set the ClassVars and implement the abstract API."""

    name: ClassVar[str]
    description: ClassVar[str]
    trains: ClassVar[bool] = True
    template: ClassVar[str] = "authors"  # the PromptFormatter template ("authors" | "chat")
    default_lr: ClassVar[float] = 1e-4  # used when the run config leaves lr unset
    Options: ClassVar[type] = NoOptions
    # Decode engines that can serve the method (spt_bench.config.DECODE_ENGINES and any later
    # engine check it); an instance may narrow it once its options are known (generic `peft`).
    supports_engines: ClassVar[tuple[str, ...] | None] = None  # None = every engine
    engine_note: ClassVar[str] = ""  # why other engines cannot serve it (one clause)
    # Class-level knowledge that reports, compare, plots and chat read without building the
    # method (no torch, no model): every hook below is a ClassVar or a classmethod.
    option_labels: ClassVar[dict[str, str]] = {}  # option -> short label, always in run labels
    row_fields: ClassVar[tuple[RowField, ...]] = ()  # what row_info adds to predictions rows
    compare_note: ClassVar[str] = ""  # a note `compare` adds when a row uses this method
    log_fields: ClassVar[tuple[LogField, ...]] = ()  # what it logs beyond loss/nll (plots)
    bench: ClassVar[BenchEntry] = BenchEntry()  # its place in `spt-bench bench`

    def __init__(self, backbone: Backbone, options: Any = None) -> None:
        self.backbone = backbone
        self.options = options if options is not None else self.Options()
        # Frozen by default; methods that train backbone weights re-enable what they train.
        for p in backbone.model.parameters():
            p.requires_grad_(False)

    # ---- what trains and how

    @abstractmethod
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters the optimiser updates (empty for methods that do not train)."""

    @abstractmethod
    def training_loss(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss to backpropagate and named components to log (e.g. {"nll": 2.3})."""

    @abstractmethod
    def prefix_embeds(self, batch: GenBatch) -> PrefixOutput:
        """Per-row soft-prompt prefix for generation (see PrefixOutput)."""

    @abstractmethod
    def trained_state(self) -> dict[str, torch.Tensor]:
        """Tensors a checkpoint saves (only what training changes)."""

    @abstractmethod
    def load_trained_state(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of trained_state."""

    # ---- optional hooks with sensible defaults

    def engine_refusal(self, engine: str, mode: str = "greedy") -> str | None:
        """Why decode engine `engine` (decoding `mode`) cannot serve this method, or None."""
        if self.supports_engines is not None and engine not in self.supports_engines:
            return (
                f"method {self.name!r} cannot be decoded by the {engine!r} engine "
                f"(it supports: {', '.join(self.supports_engines)})"
                + (f": {self.engine_note}" if self.engine_note else "")
            )
        if mode == "beam" and self.uses_kv_prefix():
            return (
                f"method {self.name!r} adds a per-layer key/value prefix, which beam search "
                "(transformers' generate) does not take here; use greedy or sample decoding"
            )
        return None

    def uses_kv_prefix(self) -> bool:
        """True when `prefix_embeds` returns a KVPrefix (per-layer prefixes)."""
        return False

    def save_adapter(self, folder: Path) -> None:  # noqa: B027
        """Write the trained state in a format other tools load (PEFT methods: PEFT's own
        `save_pretrained` adapter folder) into `folder`; checkpoints call it next to
        trained.safetensors. Default: nothing extra."""

    def setup(  # noqa: B027
        self,
        train_examples: list[Example],
        *,
        seed: int = 0,
        formatter: PromptFormatter | None = None,
    ) -> None:
        """Called once before training/decoding with the train split (e.g. to pick k shots) and
        the run's formatter. State it computes for a trained method must be part of
        `trained_state`: when a trained method is loaded from a checkpoint (evaluate, resume)
        the harness skips this call."""

    @classmethod
    def uses_train_data(cls, options: Any) -> bool:
        """Whether `setup` needs the train split (chat loads the data only then)."""
        return cls.trains

    @classmethod
    def bench_options(cls, knobs: dict[str, Any]) -> dict[str, Any]:
        """The method options `spt-bench bench` builds it with, from the benchmark's knobs
        ({"k": K, "prompt_len": L}): by default those the method's Options declare."""
        known = {f.name for f in dataclasses.fields(cls.Options)}
        return {k: v for k, v in knobs.items() if k in known}

    def soft_prompts(self) -> torch.Tensor | None:
        """The method's soft prompts [K, L, d] prepended before the input, if any (bench's
        plain reference reuses them); None for methods without soft prompts."""
        return None

    def prefix_length(self) -> int:
        """Virtual tokens this method prepends at generation (0: none)."""
        prompts = self.soft_prompts()
        return 0 if prompts is None else int(prompts.shape[1])

    def training_rows_per_example(self) -> int:
        """Sequences the training loss runs per example (the memory plan's activations):
        one per soft prompt of the pool, since a pool's loss scores every example under each
        of its K prompts; 1 for everything else."""
        prompts = self.soft_prompts()
        return 1 if prompts is None else int(prompts.shape[0])

    @classmethod
    def report_sections(
        cls, metrics: dict, rows: list[dict], example_scores: list[dict]
    ) -> list[ReportSection]:
        """Sections the method adds to report.md (SPT: prompt usage)."""
        return []

    @classmethod
    def describe_row(cls, info: dict) -> str:
        """One line about a row's `row_info` for chat (SPT: the selected prompt); '' = none."""
        return ""

    @classmethod
    def prompt_usage(
        cls,
        rows: list[dict],
        *,
        k: int | None = None,
        buckets: list[str] | None = None,
        turn_default: int = 0,
    ) -> Any:
        """Which prompt each prediction row used, overall and per turn bucket (`plot prompts`;
        SPT: spt_bench.spt.analysis.PromptUsage: k, buckets, overall, per_bucket,
        bucket_totals, members, title); None for methods that select no prompt."""
        return None

    def build_formatter(self, **formatter_kwargs: Any) -> PromptFormatter:
        """The PromptFormatter for this method (its template; tokenizer from the backbone)."""
        from spt_bench.data.formatting import PromptFormatter

        return PromptFormatter(self.backbone.tokenizer, template=self.template, **formatter_kwargs)

    def set_train_mode(self, training: bool) -> None:
        """Switch dropout etc. on for training, off for evaluation.

        A frozen backbone stays in evaluation mode even while training (no dropout noise on the
        LM whose loss ranks the prompts); with activation checkpointing on, only the checkpointed
        layers' own flags go on, which is what transformers checks before recomputing."""
        from spt_bench.models import activate_checkpointed_layers

        self.backbone.model.train(training and self.trains_backbone())
        if training:
            activate_checkpointed_layers(self.backbone.model)

    def trains_backbone(self) -> bool:
        """True when some backbone weight is trainable (full-ft, LoRA)."""
        return any(p.requires_grad for p in self.backbone.model.parameters())

    def inference_nll(self, batch: TrainBatch) -> ResponseNLL:
        """Response NLL under the method as it generates: the prefix `prefix_embeds` picks from
        the prompt alone, then the row. Used for dev loss and perplexity."""
        from spt_bench.models import response_nll

        gen = batch.to_gen_batch(self.backbone.pad_token_id)
        out = self.prefix_embeds(gen)
        embeds, mask, labels = prepend_prefix(
            out.embeds, self.backbone.embed(batch.input_ids), batch.attention_mask, batch.labels
        )
        return response_nll(self.backbone, embeds, mask, labels, kv_prefix=out.kv)

    def dev_metrics(self, batches: list[TrainBatch]) -> dict[str, Any]:
        """Dev evaluation, logged as one train_log.jsonl row; `dev_loss` (token-level mean NLL
        of the dev responses as the method generates) picks the best checkpoint. Methods may
        add diagnostics (SPT: prompt usage) by extending the dict."""
        import math

        import torch

        total, count = 0.0, 0
        with torch.no_grad():
            for batch in batches:
                out = self.inference_nll(batch)
                total += float(out.nll_sum.sum())
                count += int(out.n_tokens.sum())
        loss = total / max(count, 1)
        return {"dev_loss": loss, "dev_ppl": math.exp(min(loss, 50.0)), "dev_tokens": count}

    def prediction_diagnostics(self, rows: list[dict]) -> dict[str, Any]:
        """Extra figures computed from the finished predictions rows, stored in metrics.json
        under "diagnostics" (SPT: the prompt-usage histogram of the test split)."""
        return {}

    def summary(self) -> dict:
        trainable = {id(p): p.numel() for p in self.trainable_parameters()}
        total = {id(p): p.numel() for p in self.backbone.model.parameters()}
        extra = {k: v for k, v in trainable.items() if k not in total}
        return {
            "method": self.name,
            "trainable_params": int(sum(trainable.values())),
            "backbone_params": int(sum(total.values())),
            "extra_params": int(sum(extra.values())),
            "options": dataclasses.asdict(self.options),
        }


def prepend_prefix(
    prefix: torch.Tensor | None,
    embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Put a [B,L,d] prefix before right-padded rows: embeds/mask/labels grow by L columns
    (mask 1, labels -100 on the prefix). A None prefix returns the inputs unchanged."""
    import torch

    if prefix is None:
        return embeds, attention_mask, labels
    b, n = prefix.shape[:2]
    prefix = prefix.to(dtype=embeds.dtype)
    embeds = torch.cat([prefix, embeds], dim=1)
    ones = attention_mask.new_ones(b, n)
    attention_mask = torch.cat([ones, attention_mask], dim=1)
    if labels is not None:
        labels = torch.cat([labels.new_full((b, n), -100), labels], dim=1)
    return embeds, attention_mask, labels


def token_loss(backbone: Backbone, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, float]]:
    """Plain response-token cross-entropy of the backbone (no prefix): full-ft and LoRA."""
    from spt_bench.models import response_nll

    out = response_nll(
        backbone, backbone.embed(batch.input_ids), batch.attention_mask, batch.labels
    )
    loss = out.mean_over_tokens()
    return loss, {"nll": float(loss.detach())}


class BackboneWeightsMethod(Method):
    """A method whose trained state is a set of backbone parameters (full-ft: all, LoRA: the
    adapters): response-token loss, no generation prefix. Subclasses set `self._trained_names`
    (parameter names saved in checkpoints) after making those parameters trainable."""

    _trained_names: set[str]

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.backbone.model.parameters() if p.requires_grad]

    def training_loss(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, float]]:
        return token_loss(self.backbone, batch)

    def prefix_embeds(self, batch: GenBatch) -> PrefixOutput:
        return PrefixOutput(embeds=None, row_info=[{} for _ in range(len(batch))])

    def trained_state(self) -> dict[str, torch.Tensor]:
        return named_parameter_state(self.backbone.model, self._trained_names)

    def load_trained_state(self, state: dict[str, torch.Tensor]) -> None:
        load_named_parameter_state(self.backbone.model, self._trained_names, state, self.name)


def named_parameter_state(module: torch.nn.Module, names: set[str]) -> dict[str, torch.Tensor]:
    """The named parameters a checkpoint saves (named_parameters() lists a tied weight once,
    which safetensors needs)."""
    return {n: p.detach() for n, p in module.named_parameters() if n in names}


def load_named_parameter_state(
    module: torch.nn.Module, names: set[str], state: dict[str, torch.Tensor], method: str
) -> None:
    """Inverse of `named_parameter_state`; a checkpoint of other parameters is refused."""
    missing = sorted(names - set(state))
    unexpected = sorted(set(state) - names)
    if missing or unexpected:
        raise ValueError(
            f"{method} checkpoint does not match the model: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )
    module.load_state_dict(state, strict=False)


# ---------------------------------------------------------------------------- registry

_REGISTRY: dict[str, type[Method]] = {}
_BUILTINS_LOADED = False


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: register a Method subclass under `cls.name` (duplicates rejected)."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__qualname__} must set a non-empty `name`")
    if not dataclasses.is_dataclass(cls.Options):
        raise TypeError(f"{cls.__qualname__}.Options must be a dataclass")
    if cls.template not in ("authors", "chat"):
        raise TypeError(f"{cls.__qualname__}.template must be 'authors' or 'chat'")
    old = _REGISTRY.get(name)
    if old is not None:
        same = (old.__module__, old.__qualname__) == (cls.__module__, cls.__qualname__)
        if not same:  # re-executing the same module (reload) re-registers the same class
            raise ValueError(
                f"method {name!r} already registered by {old.__module__}.{old.__qualname__}"
            )
    _REGISTRY[name] = cls
    return cls


def _load_builtin_methods() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    for module in BUILTIN_METHOD_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:  # a missing dependency inside an existing module is a bug
                raise


def registered_names() -> list[str]:
    """Names registered so far, without importing the built-in modules (cheap)."""
    return sorted(_REGISTRY)


def list_methods() -> list[type[Method]]:
    """Registered method classes, sorted by name (built-ins imported on first call)."""
    _load_builtin_methods()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get_method(name: str) -> type[Method]:
    _load_builtin_methods()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise ConfigError(f"unknown method {name!r}; known methods: {known}") from None


def carried_row_fields() -> tuple[str, ...]:
    """Row fields any registered method asks the scorer to copy into example_scores.jsonl."""
    names = [f.name for cls in list_methods() for f in cls.row_fields if f.carry]
    return tuple(dict.fromkeys(names))


def method_class(name: str | None) -> type[Method] | None:
    """The registered class of `name` for its class-level hooks, or None when no method of that
    name is registered (e.g. a run folder written by a method since removed)."""
    _load_builtin_methods()
    return _REGISTRY.get(str(name)) if name is not None else None


def make_options(cls: type[Method], values: dict[str, Any] | None) -> Any:
    """Validate a `method_options` dict into `cls.Options` (None values -> defaults)."""
    values = {k: v for k, v in (values or {}).items() if v is not None}
    known = {f.name for f in dataclasses.fields(cls.Options)}
    unknown = sorted(set(values) - known)
    if unknown:
        allowed = ", ".join(sorted(known)) or "none"
        raise ConfigError(
            f"method {cls.name!r} has no option {unknown[0]!r} (its options: {allowed})"
        )
    return coerce_dataclass(cls.Options, values, where=f"method {cls.name!r} option")
