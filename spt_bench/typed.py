"""Values checked against type annotations: the one type check of config keys, YAML files,
`--set` values and method options (errors name the key and the expected type)."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

from spt_bench.errors import ConfigError


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
            args = typing.get_args(tp)
            if args and args[0] is int and not all(_type_ok(v, int)[0] for v in value):
                return False, value
            return True, list(value) if (tp is list or origin is list) else tuple(value)
        return False, value
    return isinstance(value, tp) if isinstance(tp, type) else True, value


def describe_type(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is list:
        return "list"
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
            raise ConfigError(f"{where} {key!r} must be {describe_type(hints[key])}, got {value!r}")
        kwargs[key] = converted
    try:
        return cls(**kwargs)
    except TypeError as e:  # e.g. a required field missing
        raise ConfigError(f"{where}: {e}") from None
