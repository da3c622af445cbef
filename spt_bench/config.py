"""The run configuration: one nested, typed schema, the single source of every run setting.

    RunConfig{seed, data, model, method{name, options, by_method}, train, decode, score, output}

Each section is a dataclass whose fields carry their help text (`metadata["help"]`) and, when
it is not `--<field-name>`, their command-line flag (`metadata["flag"]`). The `run` command's
flags, their help and their validation are derived from these fields (spt_bench.cli_flags), so
adding a training knob is one edit: a field in `TrainConfig` (the training loop receives the
section as it is). Anything can also be set with a dotted override, `--set train.eval_every=50`.

Precedence (later wins): defaults (= the embedded default run) < `--preset NAME`
(spt_bench/configs/NAME.yaml) < `--config FILE` < flags and `--set`. The resolved config is
written to the run folder as config.json (without `output`: a run folder does not depend on
where it lives) and is enough to repeat the run.

Method options: `method.options` holds options for the selected method (validated against the
method's own Options dataclass); `method.by_method` holds `{method name: {option: value}}`
per-method defaults of which only the selected method's entry applies (presets use it so
`--preset paper --method lora` works).

Old flat configs (config.json files and YAML written before the nested schema, e.g. the run
folders under docs/results/) are upgraded on load by `upgrade_flat`.

Library errors name config keys (`train.max_grad_norm`); the CLI maps keys to flags in one place.
No torch import here: configs are built and validated before any heavy library loads.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from spt_bench.config_checks import (  # noqa: F401 - re-exported
    HITS_KS,
    MAX_SEED,
    _finite,
    check_hits_settings,
    check_run_name,
    check_seed,
    key_error,
)
from spt_bench.config_flat import (  # noqa: F401 - re-exported
    FLAT_KEYS,
    is_flat,
    set_dotted,
    upgrade_flat,
)
from spt_bench.errors import ConfigError
from spt_bench.typed import _type_ok, describe_type

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
DECODING_MODES = ("greedy", "sample", "beam")
DECODE_ENGINES = ("hf", "vllm")  # spt_bench.decode / spt_bench.vllm_engine; same greedy outputs
RETIRED_ENGINES = {"static": "hf"}  # old run folders still evaluate (same outputs as hf)
# post-processing of generated text (spt_bench.postprocess.clean_response; docs/metrics.md)
CLEAN_RULES = ("default", "authors")
CONSISTENCY_KINDS = ("nli",)  # score.consistency (spt_bench.metrics.nli)
# the ScoreConfig fields of the model-based instruments (shared by run, evaluate and score)
MODEL_SCORE_SETTINGS = (
    "consistency",
    "nli_model",
    "judge",
    "judge_engine",
    "model_score_batch_size",
)
JUDGE_ENGINES = ("hf", "vllm")  # score.judge_engine (spt_bench.metrics.judge, judge_vllm)
DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")


# How `run --resume` treats a changed value of a field (metadata["resume"]):
# "fixed" - refused (it changes what is trained or predicted); "adjustable" - accepted and
# recorded (memory/speed only: the decode engines give the same outputs, tested);
# "skippable" - accepted when it turns a stage off (False), e.g. --no-model-metrics.
RESUME_RULES = ("fixed", "adjustable", "skippable")
# Commands whose flags the schema drives (spt_bench.cli_flags.command_flags).
COMMANDS = ("run", "evaluate", "chat")


def setting(
    default: Any = None,
    help: str = "",
    *,
    flag: str | None = None,
    resume: str = "fixed",
    commands: tuple[str, ...] = (),
    config: str | None = None,
    **kw: Any,
) -> Any:
    """A config field with its help text, its CLI flag when not `--<field-name>`, what a
    resumed run may do with it (RESUME_RULES), and the commands besides `run` that take its
    flag (`evaluate`: a change for that evaluation; `chat`: how to chat). In another settings
    class (e.g. the benchmark's), `config=` names the run-config key whose flag and help the
    field shares."""
    assert resume in RESUME_RULES, resume
    assert set(commands) <= set(COMMANDS), commands
    meta = {"help": help, "resume": resume, "commands": ("run", *commands)}
    if config:
        meta["config"] = config
    if flag:
        meta["flag"] = flag
    if "default_factory" in kw:
        return field(default_factory=kw.pop("default_factory"), metadata=meta)
    return field(default=default, metadata=meta)


class _Section:
    """Validation helpers shared by the sections (errors name the dotted key)."""

    _prefix: typing.ClassVar[str] = ""

    def _err(self, name: str, problem: str) -> ConfigError:
        return key_error(f"{self._prefix}.{name}", problem)

    def _positive(self, *names: str, allow_none: bool = False) -> None:
        for n in names:
            v = getattr(self, n)
            if v is None and allow_none:
                continue
            if v is None or not _finite(v) or v <= 0:
                raise self._err(n, f"must be > 0 and finite, got {v!r}")


EVAL_SAMPLERS = ("dialogues", "examples")  # spt_bench/data/sampling.py
MSC_HISTORY = ("none", "last", "all")  # spt_bench/data/msc.py


@dataclass
class DataConfig(_Section):
    """Which examples, how they are split and cut, and how inputs are formatted."""

    _prefix: typing.ClassVar[str] = "data"
    source: str | None = setting(
        None,
        "Data file (.txt ParlAI/ConvAI2, .jsonl), ConvAI2 folder, 'sample', datasets folder or "
        "hub id; one source is split by data.split_protocol (default: the bundled sample).",
        flag="--data",
        commands=("evaluate",),
    )
    train_data: str | None = setting(
        None, "Separate training data (with --test-data).", commands=("evaluate",)
    )
    test_data: str | None = setting(
        None, "Separate test data (with --train-data).", commands=("evaluate",)
    )
    eval_data: str | None = setting(
        None,
        "Evaluate on another source: its test split (as --data would give it) replaces the "
        "test split of --data / --train-data (cross-dataset evaluation, docs/data.md).",
        commands=("evaluate",),
    )
    split_protocol: str = setting(
        "convai2-valid-split", "How one source is split into train/dev/test (docs/data.md)."
    )
    variant: str | None = setting(
        None, "ConvAI2 variant in a folder, e.g. self_original_no_cands (default if present)."
    )
    split_seed: int = setting(0, "Seed of the split's dialogue shuffle and of the subsets.")
    train_limit: int | None = setting(None, "Use N train examples (seeded subset).")
    dev_limit: int | None = setting(8, "Use N dev examples.")
    eval_limit: int | None = setting(None, "Decode and score N test examples.")
    eval_sampler: str = setting(
        "dialogues",
        "How --eval-limit picks: dialogues (whole dialogues, seeded) or examples (seeded "
        "examples: the earlier sampler, used by docs/results/cpu-peft/).",
    )
    msc_history: str = setting(
        "none",
        "MSC: earlier sessions in the history: none (the persona summaries carry them), "
        "last (the previous session's utterances) or all (docs/data.md).",
    )
    max_input_tokens: int = setting(448, "Input tokens kept (persona + history, cut left).")
    max_history_turns: int | None = setting(None, "Dialogue turns of history kept (all: unset).")
    max_response_tokens: int = setting(64, "Response tokens kept for training.")

    def __post_init__(self) -> None:
        self._positive("max_input_tokens", "max_response_tokens")
        self._positive(
            "train_limit", "dev_limit", "eval_limit", "max_history_turns", allow_none=True
        )
        if self.source is not None and (self.train_data or self.test_data):
            raise ConfigError("give either data.source (--data) or data.train_data/test_data")
        check_seed("data.split_seed", self.split_seed)
        if self.eval_sampler not in EVAL_SAMPLERS:
            raise self._err("eval_sampler", f"must be one of {', '.join(EVAL_SAMPLERS)}")
        if self.msc_history not in MSC_HISTORY:
            raise self._err("msc_history", f"must be one of {', '.join(MSC_HISTORY)}")


@dataclass
class ModelConfig(_Section):
    """The backbone and where it runs."""

    _prefix: typing.ClassVar[str] = "model"
    name: str = setting(
        "smollm2-135m",
        "smollm2-135m, tiny-random, an HF id or a local folder.",
        flag="--model",
        commands=("chat",),
    )
    device: str | None = setting(
        None, "cpu, cuda, cuda:1 ... (default: cuda if available).", commands=("evaluate", "chat")
    )
    dtype: str | None = setting(
        None,
        "float32 | bfloat16 | float16 (default: bf16 on CUDA, fp32 on CPU).",
        commands=("evaluate",),
    )
    trust_remote_code: bool = setting(False, "Allow model code from the hub (off: safer).")

    def __post_init__(self) -> None:
        if self.dtype is not None and self.dtype not in DTYPES:
            raise self._err("dtype", f"must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.device is not None and not re.fullmatch(
            r"auto|cpu|mps|cuda(:\d+)?|xpu(:\d+)?", self.device
        ):
            raise self._err("device", f"must be cpu, cuda or cuda:N, got {self.device!r}")


@dataclass
class MethodConfig(_Section):
    """The method and its options (each method declares its own Options dataclass)."""

    _prefix: typing.ClassVar[str] = "method"
    name: str = setting(
        "spt", "Method name (spt-bench methods).", flag="--method", commands=("chat",)
    )
    options: dict = setting(
        help="Options of the selected method (spt-bench methods lists them).",
        default_factory=dict,
    )
    by_method: dict = setting(
        help="Per-method default options {method: {option: value}}; the selected one applies.",
        default_factory=dict,
    )

    def __post_init__(self) -> None:
        for m, opts in self.by_method.items():
            if not isinstance(opts, dict):
                raise self._err(f"by_method.{m}", "must be a mapping of options")

    def resolved_options(self) -> dict:
        """by_method[<name>] < options, None values dropped."""
        merged = dict(self.by_method.get(self.name, {}) or {})
        merged.update(self.options or {})
        return {k: v for k, v in merged.items() if v is not None}


@dataclass
class TrainConfig(_Section):
    """The one training loop every method goes through (spt_bench.train)."""

    _prefix: typing.ClassVar[str] = "train"
    epochs: float = setting(1.0, "Epochs over the train split (used when max_steps is unset).")
    max_steps: int | None = setting(6, "Optimiser steps; overrides epochs (unset: use epochs).")
    batch_size: int = setting(2, "Training micro-batch size.")
    grad_accum: int = setting(1, "Micro-batches per optimiser step.")
    lr: float | None = setting(None, "Peak learning rate (default: the method's).")
    weight_decay: float = setting(0.0, "AdamW weight decay.")
    warmup_ratio: float = setting(0.1, "Share of steps with linear warm-up, in [0, 1).")
    lr_schedule: Literal["linear", "cosine", "constant"] = setting(
        "linear", "After warm-up: linear or cosine decay to 0, or constant."
    )
    max_grad_norm: float = setting(1.0, "Gradient clipping norm (0: no clipping).")
    eval_every: int | None = setting(
        None, "Dev loss every N optimiser steps, best checkpoint kept (unset: at the end)."
    )
    save_every: int | None = setting(
        None, "Checkpoint every N steps (unset: at each evaluation and at the end)."
    )
    early_stopping_patience: int | None = setting(
        None, "Stop after N evaluations without dev improvement."
    )
    log_every: int = setting(1, "A train_log.jsonl row every N steps.")
    bucket_by_length: bool = setting(
        True,
        "Batch rows of similar length together (less padding) or random batches (the SPT "
        "authors'; for SPT it decides which persona pairs meet in the contrastive loss).",
        flag="--bucket-by-length/--random-batches",
    )
    activation_checkpointing: float = setting(
        0.0,
        "Share of LM layers recomputed in backward (0-1): less memory, more time.",
        resume="adjustable",
    )
    lean_activations: bool = setting(
        True,
        "Lean RMSNorm/MLP backward: same gradients, ~1/3 less activation memory.",
        resume="adjustable",
    )
    strategy: Literal["ddp", "fsdp"] = setting(
        "ddp",
        "With several processes: ddp (every process holds the whole model) or fsdp (decoder "
        "layers' weights, gradients and AdamW state sharded across processes).",
    )

    def __post_init__(self) -> None:
        self._positive("batch_size", "grad_accum", "epochs", "log_every")
        self._positive("max_steps", "lr", "eval_every", "save_every", allow_none=True)
        self._positive("early_stopping_patience", allow_none=True)
        if not 0 <= self.activation_checkpointing <= 1:
            raise self._err(
                "activation_checkpointing",
                f"must be in [0, 1], got {self.activation_checkpointing}",
            )
        if not 0 <= self.warmup_ratio < 1:
            raise self._err("warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        for n in ("weight_decay", "max_grad_norm"):
            if not _finite(getattr(self, n)) or getattr(self, n) < 0:
                raise self._err(n, f"must be >= 0 and finite, got {getattr(self, n)}")


@dataclass
class DecodeConfig(_Section):
    """The one decoding path every method goes through (spt_bench.decode)."""

    _prefix: typing.ClassVar[str] = "decode"
    mode: str = setting("greedy", "greedy | sample | beam.", flag="--decoding")
    max_new_tokens: int = setting(32, "Generated tokens cap.", commands=("evaluate", "chat"))
    temperature: float = setting(0.7, "Sampling temperature (decode.mode sample).")
    top_p: float = setting(0.9, "Nucleus mass (decode.mode sample).")
    num_beams: int = setting(4, "Beams (decode.mode beam).")
    batch_size: int = setting(
        16,
        "Decoding / dev / ppl batch size.",
        flag="--eval-batch-size",
        resume="adjustable",
        commands=("evaluate",),
    )
    engine: str = setting(
        "hf",
        "hf (transformers' forward; every method) | vllm (vLLM; token prompts, soft prompts, "
        "LoRA, full-ft; pip install 'spt-bench[vllm]'); same greedy outputs.",
        flag="--decode-engine",
        resume="adjustable",
        commands=("evaluate",),
    )
    clean: Literal["default", "authors"] = setting(
        "default",
        "Post-processing: default (cut at turn markers, strip a leading R:) | authors (the SPT "
        "code's cut at the first R:|Q:|Summary:|newline|colon; exact reproduction only).",
        commands=("evaluate",),
    )
    vllm_kv_cache_gb: float = setting(
        1.0,
        "vllm engine: KV cache size in GiB (explicit, never a share of the machine's RAM).",
        resume="adjustable",
        commands=("evaluate",),
    )
    vllm_tensor_parallel_size: int = setting(
        1,
        "vllm engine: vLLM's tensor parallelism (GPUs).",
        resume="adjustable",
        commands=("evaluate",),
    )
    vllm_data_parallel_size: int = setting(
        1,
        "vllm engine: vLLM's data parallelism (GPUs).",
        resume="adjustable",
        commands=("evaluate",),
    )

    def __post_init__(self) -> None:
        self._positive("max_new_tokens", "num_beams", "batch_size", "temperature")
        if self.mode not in DECODING_MODES:
            raise self._err(
                "mode", f"must be one of {', '.join(DECODING_MODES)}, got {self.mode!r}"
            )
        if self.engine in RETIRED_ENGINES:
            import warnings

            new = RETIRED_ENGINES[self.engine]
            warnings.warn(
                f"decode engine {self.engine!r} was retired; decoding with {new!r} (same outputs)",
                UserWarning,
                stacklevel=2,
            )
            self.engine = new
        if self.engine not in DECODE_ENGINES:
            raise self._err(
                "engine", f"must be one of {', '.join(DECODE_ENGINES)}, got {self.engine!r}"
            )
        self._positive("vllm_kv_cache_gb", "vllm_tensor_parallel_size", "vllm_data_parallel_size")
        if self.clean not in CLEAN_RULES:
            raise self._err("clean", f"must be one of {', '.join(CLEAN_RULES)}, got {self.clean!r}")
        if not 0 < self.top_p <= 1:
            raise self._err("top_p", f"must be in (0, 1], got {self.top_p}")


@dataclass
class ScoreConfig(_Section):
    """What is scored after decoding (docs/metrics.md, docs/model-metrics.md)."""

    _prefix: typing.ClassVar[str] = "score"
    bertscore: bool = setting(
        True,
        "BERTScore (offline all-MiniLM-L6-v2 by default).",
        resume="skippable",
        commands=("evaluate",),
    )
    model_metrics: bool = setting(
        True, "Perplexity and hits@k after decoding.", resume="skippable", commands=("evaluate",)
    )
    hits_k: list[int] = setting(
        help="k for hits@k, e.g. 1,5.", default_factory=lambda: [1], commands=("evaluate",)
    )
    hits_candidates: int = setting(20, "Candidates per example when the data has none.")
    # Model-based instruments (docs/metrics.md): off unless asked for; scores cached per example.
    consistency: str | None = setting(
        None,
        "Persona consistency: 'nli' for the NLI C-score (needs --nli-model).",
        resume="adjustable",
        commands=("evaluate",),
    )
    nli_model: str | None = setting(
        None,
        "NLI model for the C-score: local sequence-classification folder or hub id.",
        resume="adjustable",
        commands=("evaluate",),
    )
    judge: str | None = setting(
        None,
        "LLM judge: built-in model name or local causal-LM folder (G-Eval scores, 1..5).",
        resume="adjustable",
        commands=("evaluate",),
    )
    judge_engine: str = setting(
        "hf", "Judge engine: hf or vllm (same scores).", resume="adjustable", commands=("evaluate",)
    )
    model_score_batch_size: int = setting(
        16,
        "Batch size of the NLI model and the judge.",
        resume="adjustable",
        commands=("evaluate",),
    )

    def __post_init__(self) -> None:
        if self.model_metrics:
            check_hits_settings(self.hits_k, self.hits_candidates)
        if self.consistency not in (None, *CONSISTENCY_KINDS):
            raise self._err(
                "consistency",
                f"must be one of {', '.join(CONSISTENCY_KINDS)}, got {self.consistency!r}",
            )
        if self.judge_engine not in JUDGE_ENGINES:
            raise self._err(
                "judge_engine",
                f"must be one of {', '.join(JUDGE_ENGINES)}, got {self.judge_engine!r}",
            )
        self._positive("model_score_batch_size")


@dataclass
class OutputConfig(_Section):
    """Where the run folder goes (not saved in config.json: a folder may move)."""

    _prefix: typing.ClassVar[str] = "output"
    out: str | None = setting(
        None, "Run folder, or its parent when --name is given (default: runs/)."
    )
    name: str | None = setting(None, "Run folder name under --out (default: <method>-<time>).")

    def __post_init__(self) -> None:
        if self.name is not None:
            check_run_name(self.name)


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "method": MethodConfig,
    "train": TrainConfig,
    "decode": DecodeConfig,
    "score": ScoreConfig,
    "output": OutputConfig,
}


@dataclass
class RunConfig:
    """Everything a run needs. Defaults = the embedded default run (see docs/harness.md)."""

    seed: int = setting(0, "Seed for init, data order and sampling.")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self) -> None:
        check_seed("seed", self.seed)

    def to_dict(self, *, with_output: bool = True) -> dict:
        d = dataclasses.asdict(self)
        if not with_output:
            d.pop("output")
        return d

    def replace(self, **dotted: Any) -> RunConfig:
        """A copy with dotted keys changed (`cfg.replace(**{"decode.batch_size": 1})`),
        validated like any other layer."""
        values = self.to_dict()
        for key, value in dotted.items():
            set_dotted(values, key, value)
        return config_from_dict(values)


# ---------------------------------------------------------------------------- schema walk


def resume_rule(key: str) -> str:
    """RESUME_RULES entry of a dotted config key (method options: fixed)."""
    entry = leaf_fields().get(key)
    return entry[0].metadata.get("resume", "fixed") if entry else "fixed"


def leaf_fields() -> dict[str, tuple[dataclasses.Field, Any]]:
    """Every settable key, dotted ("train.lr"), with its dataclass field and type."""
    out: dict[str, tuple[dataclasses.Field, Any]] = {}
    hints = typing.get_type_hints(RunConfig)
    for f in dataclasses.fields(RunConfig):
        if f.name in SECTIONS:
            sec = SECTIONS[f.name]
            sec_hints = typing.get_type_hints(sec)
            for g in dataclasses.fields(sec):
                out[f"{f.name}.{g.name}"] = (g, sec_hints[g.name])
        else:
            out[f.name] = (f, hints[f.name])
    return out


def get_dotted(values: dict, key: str, default: Any = None) -> Any:
    node: Any = values
    for p in key.split("."):
        if not isinstance(node, dict) or p not in node:
            return default
        node = node[p]
    return node


def flatten(values: dict, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1}} -> {"train.lr": 1}; method option dicts are flattened too."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and (prefix or k in SECTIONS):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Build a RunConfig from a (nested, or old flat) dict; errors name the dotted key."""
    data = upgrade_flat(data)
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(RunConfig)})
    if unknown:
        raise key_error(unknown[0], "is not a config key (sections: " + ", ".join(SECTIONS) + ")")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if name in SECTIONS:
            if not isinstance(value, dict):
                raise key_error(name, "must be a mapping")
            kwargs[name] = _section(SECTIONS[name], name, value)
        else:
            ok, converted = _type_ok(value, int)
            if not ok:
                raise key_error(name, f"must be int, got {value!r}")
            kwargs[name] = converted
    return RunConfig(**kwargs)


def _section(cls: type, name: str, values: dict) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key, value in values.items():
        if key not in known:
            raise key_error(
                f"{name}.{key}", f"is not a config key (known: {', '.join(sorted(known))})"
            )
        ok, converted = _type_ok(value, hints[key])
        if not ok:
            raise key_error(f"{name}.{key}", f"must be {describe_type(hints[key])}, got {value!r}")
        values = {**values, key: converted}
    return cls(**values)
