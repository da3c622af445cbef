"""The run configuration: one typed, validated dataclass, resolved from layers.

Precedence (later wins): RunConfig defaults (= the embedded default run) < `--preset NAME`
(configs/NAME.yaml) < `--config FILE` < explicit command-line flags. The resolved config is
written to the run folder as config.json and is enough to repeat the run.

YAML files hold RunConfig keys. Two keys carry method options:
- `method_options`: options for the selected method; every key must be one of its options;
- `methods`: `{method name: {option: value}}`, per-method defaults; only the selected method's
  entry applies (presets use this so `--preset paper --method lora` works), and it sits below
  `method_options` and the option flags.

No torch import here: the CLI builds configs before any heavy library loads.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from spt_bench.errors import ConfigError, InputError

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
DECODING_MODES = ("greedy", "sample", "beam")
DECODE_ENGINES = ("hf", "static")  # spt_bench.decode / spt_bench.static_decode; same outputs
# post-processing of generated text (spt_bench.decode.clean_response; docs/metrics.md)
CLEAN_RULES = ("default", "authors")


@dataclass
class RunConfig:
    """Everything a run needs. Defaults = the embedded default run (see docs/harness.md)."""

    # what
    method: str = "spt"
    model: str = "smollm2-135m"
    data: str | None = None  # None -> the bundled sample
    train_data: str | None = None
    test_data: str | None = None
    split_protocol: str = "convai2-valid-split"
    split_seed: int = 0
    # where
    out: str | None = None  # run folder (or the parent of `name`); default runs/
    name: str | None = None  # run folder name under `out`; default <method>-<timestamp>
    seed: int = 0
    # training (one loop for all methods)
    epochs: float = 1.0
    max_steps: int | None = 6  # overrides epochs when set (embedded default: a CPU demo)
    batch_size: int = 2
    grad_accum: int = 1
    lr: float | None = None  # None -> the method's default_lr
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    eval_every: int | None = None  # dev loss every N optimiser steps (None: at the end only)
    save_every: int | None = None  # checkpoint every N steps (None: at each evaluation + end)
    early_stopping_patience: int | None = None  # evaluations without dev improvement
    log_every: int = 1
    bucket_by_length: bool = True  # training batches of similar-length rows (less padding)
    activation_checkpointing: float = 0.0  # share of LM layers recomputed in backward (0-1)
    lean_activations: bool = True  # lean RMSNorm/MLP backward: same gradients, less memory
    train_limit: int | None = None
    dev_limit: int | None = 8
    eval_limit: int | None = None
    # formatting
    max_input_tokens: int = 448
    max_history_turns: int | None = None
    max_response_tokens: int = 64
    # decoding (one path for all methods)
    decoding: Literal["greedy", "sample", "beam"] = "greedy"
    max_new_tokens: int = 32
    temperature: float = 0.7
    top_p: float = 0.9
    num_beams: int = 4
    eval_batch_size: int = 16
    decode_engine: Literal["hf", "static"] = "hf"  # DECODE_ENGINES
    # "default": cut at turn markers, strip a leading "R:"; "authors": the SPT code's cut at the
    # first R:|Q:|Summary:|newline|colon (exact reproduction only: "6:30" -> "6")
    clean: Literal["default", "authors"] = "default"  # CLEAN_RULES
    # machine
    device: str | None = None  # None/auto: cuda if available else cpu
    dtype: str | None = None  # None/auto: bf16 on cuda, fp32 on cpu
    trust_remote_code: bool = False
    # scoring
    bertscore: bool = True
    model_metrics: bool = True  # ppl + hits@k after decoding (docs/model-metrics.md)
    hits_k: list[int] = field(default_factory=lambda: [1])
    hits_candidates: int = 20  # candidates per example when the data has none (synthetic)
    # method options (validated against the method's Options dataclass)
    method_options: dict = field(default_factory=dict)
    methods: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        def positive(name: str, allow_none: bool = False) -> None:
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if v is None or v <= 0:
                raise ConfigError(f"{name} must be > 0, got {v!r}")

        for n in ("batch_size", "grad_accum", "max_new_tokens", "eval_batch_size", "num_beams",
                  "max_input_tokens", "max_response_tokens", "epochs", "log_every", "temperature"):  # fmt: skip
            positive(n)
        for n in ("max_steps", "lr", "eval_every", "save_every", "early_stopping_patience", "train_limit",
                  "dev_limit", "eval_limit", "max_history_turns"):  # fmt: skip
            positive(n, allow_none=True)
        if not 0 <= self.activation_checkpointing <= 1:
            raise ConfigError(
                f"activation_checkpointing must be in [0, 1], got {self.activation_checkpointing}"
            )
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ConfigError("weight_decay and max_grad_norm must be >= 0")
        if self.decoding not in DECODING_MODES:
            raise ConfigError(
                f"decoding must be one of {', '.join(DECODING_MODES)}, got {self.decoding!r}"
            )
        if self.decode_engine not in DECODE_ENGINES:
            raise ConfigError(
                f"decode_engine must be one of {', '.join(DECODE_ENGINES)}, "
                f"got {self.decode_engine!r}"
            )
        if self.clean not in CLEAN_RULES:
            raise ConfigError(f"clean must be one of {', '.join(CLEAN_RULES)}, got {self.clean!r}")
        if self.model_metrics:
            from spt_bench.model_metrics import check_hits_settings

            check_hits_settings(self.hits_k, self.hits_candidates)
        if self.data is not None and (self.train_data or self.test_data):
            raise ConfigError("give either data or train_data/test_data, not both")
        if self.name is not None:
            check_run_name(self.name)
        for m, opts in self.methods.items():
            if not isinstance(opts, dict):
                raise ConfigError(f"methods.{m} must be a mapping of options")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def options_for_method(self) -> dict:
        """Method options after layering: methods[<method>] < method_options (None dropped)."""
        merged = dict(self.methods.get(self.method, {}) or {})
        merged.update(self.method_options or {})
        return {k: v for k, v in merged.items() if v is not None}


def check_run_name(name: str) -> str:
    """A run name is one plain path component: it can never point outside the output folder."""
    bad = (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or name.startswith("~")
        or Path(name).is_absolute()
    )
    if bad:
        raise ConfigError(
            f"invalid run name {name!r}: use a single folder name without '/', '\\\\', '..' or '~'"
        )
    return name


# ---------------------------------------------------------------------------- typed coercion


def _type_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    """(is value acceptable for annotation tp, value converted if needed)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = _type_ok(value, arg)
            if ok:
                return True, v
        return False, value
    if origin is Literal:
        return (value in typing.get_args(tp)), value
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return (isinstance(value, int) and not isinstance(value, bool)), value
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if tp is str:
        return isinstance(value, str), value
    if tp is dict or origin is dict:
        return isinstance(value, dict), value
    if tp is list or origin in (list, tuple):
        if isinstance(value, list | tuple):
            return True, list(value) if (tp is list or origin is list) else tuple(value)
        return False, value
    return isinstance(value, tp) if isinstance(tp, type) else True, value


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def coerce_dataclass(cls: type, values: dict[str, Any], *, where: str = "config key") -> Any:
    """Build dataclass `cls` from `values`, checking every value against its annotation.

    Unknown keys and wrongly typed values raise ConfigError ("<where> 'x' must be int, got
    'abc'"); ConfigErrors raised by the dataclass's own __post_init__ pass through.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown {where} {unknown[0]!r} (known: {', '.join(sorted(names))})")
    kwargs = {}
    for key, value in values.items():
        ok, converted = _type_ok(value, hints[key])
        if not ok:
            raise ConfigError(f"{where} {key!r} must be {_describe(hints[key])}, got {value!r}")
        kwargs[key] = converted
    try:
        return cls(**kwargs)
    except TypeError as e:  # e.g. a required field missing
        raise ConfigError(f"{where}: {e}") from None


# ---------------------------------------------------------------------------- YAML layers


def preset_path(name: str) -> Path:
    path = CONFIGS_DIR / f"{check_run_name(name)}.yaml"
    if not path.is_file():
        known = ", ".join(list_presets()) or "none"
        raise ConfigError(f"unknown preset {name!r}; presets: {known}")
    return path


def list_presets() -> list[str]:
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml")) if CONFIGS_DIR.is_dir() else []


def _yaml_loader() -> type:
    """SafeLoader that also reads `5e-05` / `1e3` as floats (YAML 1.2; PyYAML's 1.1 rules need
    a dot, so `lr: 5e-05` would otherwise be the string '5e-05')."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(
            r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
            |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
            |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
            |[-+]?\.(?:inf|Inf|INF)
            |\.(?:nan|NaN|NAN))$""",
            re.X,
        ),
        list("-+0123456789."),
    )
    return Loader


def load_yaml_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict of RunConfig keys (checked: known keys only)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, None, "config file not found") from None
    except UnicodeDecodeError:
        raise InputError(path, None, "config file is not UTF-8 text") from None
    try:
        loader = _yaml_loader()
        node = yaml.compose(text, Loader=loader)
        data = yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark is not None else None
        raise InputError(path, line, f"invalid YAML: {e.problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(path, 1, "a config file must be a mapping of keys to values")
    lines = {}
    if isinstance(node, yaml.MappingNode):
        lines = {k.value: k.start_mark.line + 1 for k, _ in node.value}
    known = {f.name for f in dataclasses.fields(RunConfig)}
    for key in data:
        if key not in known:
            raise InputError(path, lines.get(key), f"unknown config key {key!r}")
    for key in ("method_options", "methods"):
        if key in data and data[key] is not None and not isinstance(data[key], dict):
            raise InputError(path, lines.get(key), f"{key} must be a mapping")
    try:
        validate_partial(data)
    except ConfigError as e:
        key = getattr(e, "key", None)
        raise InputError(path, lines.get(key), str(e)) from None
    return data


def validate_partial(values: dict[str, Any]) -> None:
    """Type-check a partial set of RunConfig keys (raises ConfigError with `.key` set)."""
    hints = typing.get_type_hints(RunConfig)
    for key, value in values.items():
        ok, _ = _type_ok(value, hints[key])
        if not ok:
            err = ConfigError(f"{key} must be {_describe(hints[key])}, got {value!r}")
            err.key = key  # type: ignore[attr-defined]
            raise err


def _merge(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """Apply one layer. A layer that sets `epochs` without `max_steps` clears max_steps, so
    "--epochs 2" means two epochs even over a preset that counted steps."""
    out = dict(base)
    if "epochs" in layer and "max_steps" not in layer:
        out["max_steps"] = None
    for key, value in layer.items():
        if key == "method_options":
            out[key] = {**(out.get(key) or {}), **(value or {})}
        elif key == "methods":
            merged = {m: dict(o or {}) for m, o in (out.get(key) or {}).items()}
            for m, opts in (value or {}).items():
                merged[m] = {**merged.get(m, {}), **(opts or {})}
            out[key] = merged
        else:
            out[key] = value
    return out


def resolve_config(
    *,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> RunConfig:
    """Layer defaults < preset < config file < overrides (explicit flags; None = not given)."""
    values: dict[str, Any] = {}
    if preset:
        values = _merge(values, load_yaml_config(preset_path(preset)))
    if config_file:
        values = _merge(values, load_yaml_config(config_file))
    if overrides:
        given = {k: v for k, v in overrides.items() if v is not None and k != "method_options"}
        opts = {k: v for k, v in (overrides.get("method_options") or {}).items() if v is not None}
        values = _merge(values, {**given, "method_options": opts})
    return coerce_dataclass(RunConfig, values)


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig from a saved config.json."""
    return coerce_dataclass(RunConfig, data)
