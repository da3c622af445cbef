"""Config layers: presets and YAML files (errors name the file and line), `--set KEY=VALUE`,
and their merge, later wins: defaults < preset < config file < flags/--set."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from spt_bench.config import (
    CONFIGS_DIR,
    FLAT_KEYS,
    SECTIONS,
    RunConfig,
    check_run_name,
    config_from_dict,
    is_flat,
    key_error,
    leaf_fields,
    set_dotted,
    upgrade_flat,
)
from spt_bench.errors import ConfigError, InputError
from spt_bench.typed import _type_ok, describe_type


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


def _key_lines(node: Any, prefix: str = "") -> dict[str, int]:
    import yaml

    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = f"{prefix}{k.value}"
            lines[key] = k.start_mark.line + 1
            lines.update(_key_lines(v, key + "."))
    return lines


def load_yaml_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a nested dict of config keys (checked: known keys, types).
    Errors name the file and line."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, None, "config file not found") from None
    except IsADirectoryError:
        raise InputError(path, None, "is a folder, expected a YAML config file") from None
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
    lines = _key_lines(node)
    flat_lines = {FLAT_KEYS.get(k, k): v for k, v in lines.items()} if is_flat(data) else {}
    data = upgrade_flat(data)
    try:
        validate_partial(data)
    except ConfigError as e:
        key = getattr(e, "key", "") or ""
        line = lines.get(key) or flat_lines.get(key)
        while line is None and "." in key:
            key = key.rsplit(".", 1)[0]
            line = lines.get(key) or flat_lines.get(key)
        raise InputError(path, line, str(e)) from None
    return data


def validate_partial(values: dict[str, Any]) -> None:
    """Type-check a partial nested dict of config keys (ConfigError with `.key` set)."""
    leaves = leaf_fields()
    for key, value in values.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise key_error(key, "must be a mapping")
            for k, v in value.items():
                dotted = f"{key}.{k}"
                if dotted not in leaves:
                    raise key_error(dotted, "is not a config key")
                _check_leaf(dotted, v, leaves[dotted][1])
        elif key in leaves:
            _check_leaf(key, value, leaves[key][1])
        else:
            raise key_error(key, "is not a config key")


def _check_leaf(key: str, value: Any, tp: Any) -> None:
    ok, _ = _type_ok(value, tp)
    if not ok:
        raise key_error(key, f"must be {describe_type(tp)}, got {value!r}")


def merge_layer(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """Apply one nested layer. A layer that sets train.epochs without train.max_steps clears
    max_steps, so "--epochs 2" means two epochs even over a preset that counted steps."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    train = layer.get("train") or {}
    if "epochs" in train and "max_steps" not in train:
        set_dotted(out, "train.max_steps", None)
    for key, value in layer.items():
        if key in SECTIONS and isinstance(value, dict):
            sec = dict(out.get(key) or {})
            for k, v in value.items():
                if key == "method" and k == "options":
                    sec[k] = {**(sec.get(k) or {}), **(v or {})}
                elif key == "method" and k == "by_method":
                    merged = {m: dict(o or {}) for m, o in (sec.get(k) or {}).items()}
                    for m, opts in (v or {}).items():
                        merged[m] = {**merged.get(m, {}), **(opts or {})}
                    sec[k] = merged
                else:
                    sec[k] = v
            out[key] = sec
        else:
            out[key] = value
    return out


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """`--set train.eval_every=50 method.options.k=2` -> a nested layer. Values are YAML
    scalars (50 -> int, 1e-4 -> float, true, null, [1, 5]); keys are checked."""
    import yaml

    layer: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE (e.g. train.eval_every=50), got {item!r}")
        try:
            value = yaml.load(raw, Loader=_yaml_loader()) if raw.strip() else None  # noqa: S506
        except yaml.YAMLError:
            value = raw
        if key.startswith("method.options.") or key.startswith("method.by_method."):
            set_dotted(layer, key, value)
            continue
        if key not in leaf_fields():
            close = [k for k in leaf_fields() if k.endswith("." + key) or k == key]
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"--set {key}: not a config key{hint}")
        set_dotted(layer, key, value)
    return layer


def resolve_layers(
    *,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The merged nested layers preset < config file < overrides (only what they set)."""
    values: dict[str, Any] = {}
    if preset:
        values = merge_layer(values, load_yaml_config(preset_path(preset)))
    if config_file:
        values = merge_layer(values, load_yaml_config(config_file))
    if overrides:
        validate_partial(overrides)
        values = merge_layer(values, overrides)
    return values


def resolve_config(
    *,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> RunConfig:
    """Layer defaults < preset < config file < overrides (a nested dict of what was given)."""
    return config_from_dict(
        resolve_layers(preset=preset, config_file=config_file, overrides=overrides)
    )
