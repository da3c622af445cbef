"""The `run` command's flags, derived from the config schema (spt_bench.config) and from the
methods' own Options dataclasses - cli.py lists no setting by hand.

- Every config key is a flag: `--<field-name>` (dashes), or the field's `metadata["flag"]`;
  booleans get `--x/--no-x`; lists take comma-separated values. Help text comes from the
  field's metadata, grouped in one help panel per config section.
- Every option of a built-in method is a flag too (`--k`, `--prompt-len`, `--lora-r`), read
  from the method module's Options dataclass *without importing it* (the modules import torch;
  `spt-bench --help` must stay instant): the source is parsed with `ast`, and a test checks
  that the parsed view equals the real dataclasses. Options declare their help like config
  fields, `setting(default, "help")`; a plugin's comment beside a field is read as a fallback.
- `--set KEY=VALUE` reaches anything, plugins' method options included.
- Library errors name config keys (`train.max_grad_norm`); `flag_message` maps them to flags
  in this one place.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
import re
import types
import typing
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from spt_bench.config import SECTIONS, leaf_fields, set_dotted
from spt_bench.errors import ConfigError

PANELS = {
    "": "Run",
    "data": "Data",
    "model": "Model",
    "method": "Method",
    "train": "Training",
    "decode": "Decoding",
    "score": "Scoring",
    "output": "Output",
}


@dataclass(frozen=True)
class Flag:
    key: str  # dotted config key ("train.lr", "method.options.k")
    flag: str  # "--lr"
    param: str  # python identifier of the parameter
    kind: str  # "bool" | "int" | "float" | "str" | "int_list"
    help: str
    panel: str
    methods: tuple[str, ...] = ()  # for method options: the methods that have it
    commands: tuple[str, ...] = ("run",)  # the commands that take it (the schema says)


def _kind(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _kind(args[0]) if len(args) == 1 else "str"
    if origin is list or tp is list:
        return "int_list"
    return {bool: "bool", int: "int", float: "float"}.get(tp, "str")


def _config_flags() -> list[Flag]:
    flags = []
    for key, (f, tp) in leaf_fields().items():
        if key in ("method.options", "method.by_method"):
            continue
        section = key.split(".")[0] if "." in key else ""
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_ = f.metadata.get("help", "")
        if typing.get_origin(tp) is typing.Literal:
            help_ += " (" + " | ".join(map(str, typing.get_args(tp))) + ")"
        if default is not None and not isinstance(default, bool):
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            help_ += f" [default: {shown}]"
        param = "cfg__" + key.replace(".", "__")
        commands = tuple(f.metadata.get("commands", ("run",)))
        flags.append(Flag(key, flag, param, _kind(tp), help_, PANELS[section], commands=commands))
    return flags


# ---------------------------------------------------------------------------- method options


@dataclass(frozen=True)
class OptionSpec:
    method: str
    name: str
    annotation: str
    default: Any
    help: str


# method name -> (module defining its Options dataclass, class name), filled by the source scan
_OPTIONS_WHERE: dict[str, tuple[str, str]] = {}


def _module_path(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    return Path(spec.origin) if spec and spec.origin else None


def _literal(node: ast.AST | None) -> Any:
    if node is None:
        return dataclasses.MISSING
    try:
        return ast.literal_eval(node)
    except ValueError:
        return dataclasses.MISSING


def _constants(tree: ast.Module) -> dict[str, Any]:
    """Module-level `NAME = literal` assignments (defaults written as a named constant)."""
    out: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            value = _literal(node.value)
            if isinstance(target, ast.Name) and value is not dataclasses.MISSING:
                out[target.id] = value
    return out


def _dataclass_fields(tree: ast.Module, source: str, cls_name: str) -> list[tuple] | None:
    lines = source.splitlines()
    constants = _constants(tree)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls_name:
            out = []
            body = node.body
            for i, stmt in enumerate(body):
                if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                    continue
                ann = ast.unparse(stmt.annotation)
                if ann.startswith("ClassVar"):
                    continue
                value, declared_help = stmt.value, None
                if isinstance(value, ast.Call) and ast.unparse(value.func).endswith("setting"):
                    # setting(default, help): declared like a config field (spt_bench.config)
                    args = {
                        "default": value.args[0] if value.args else None,
                        "help": value.args[1] if len(value.args) > 1 else None,
                    }
                    args.update({kw.arg: kw.value for kw in value.keywords if kw.arg in args})
                    value, declared_help = args["default"], _literal(args["help"])
                default = _literal(value)
                if isinstance(value, ast.Name) and value.id in constants:
                    default = constants[value.id]
                if isinstance(value, ast.Call):  # field(default=..., metadata={"help"})
                    for kw in value.keywords:
                        if kw.arg == "default":
                            default = _literal(kw.value)
                if isinstance(declared_help, str):
                    out.append((stmt.target.id, ann, default, declared_help))
                    continue
                help_ = ""
                # help: a trailing comment, else the comment lines just above, else a docstring
                line = lines[stmt.lineno - 1]
                if "#" in line:
                    help_ = line.split("#", 1)[1].strip()
                else:
                    above = []
                    j = stmt.lineno - 2
                    while j >= 0 and lines[j].strip().startswith("#"):
                        above.insert(0, lines[j].strip().lstrip("#").strip())
                        j -= 1
                    help_ = " ".join(above)
                    nxt = body[i + 1] if i + 1 < len(body) else None
                    if (
                        not help_
                        and isinstance(nxt, ast.Expr)
                        and isinstance(getattr(nxt, "value", None), ast.Constant)
                        and isinstance(nxt.value.value, str)
                    ):
                        help_ = nxt.value.value.strip()
                out.append((stmt.target.id, ann, default, help_))
            return out
    return None


def _imported_from(tree: ast.Module, name: str) -> str | None:
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            if any(a.name == name for a in node.names):
                return node.module
    return None


@lru_cache(maxsize=1)
def method_option_specs() -> dict[str, list[OptionSpec]]:
    """{method name: its options} for the built-in methods, read from their source."""
    from spt_bench.methods import BUILTIN_METHOD_MODULES

    specs: dict[str, list[OptionSpec]] = {}
    for module in BUILTIN_METHOD_MODULES:
        path = _module_path(module)
        if path is None or not path.is_file():
            continue
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
        for node in tree.body:
            if not isinstance(node, ast.ClassDef):
                continue
            if not any(ast.unparse(d).endswith("register_method") for d in node.decorator_list):
                continue
            name = options_cls = None
            for stmt in node.body:
                if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
                    target = stmt.targets[0].id
                    if target == "name":
                        name = _literal(stmt.value)
                    elif target == "Options" and isinstance(stmt.value, ast.Name):
                        options_cls = stmt.value.id
            if not isinstance(name, str):
                continue
            fields: list[tuple] | None = []
            if options_cls:
                fields = _dataclass_fields(tree, source, options_cls)
                where = module
                if fields is None:  # imported from another module
                    origin = _imported_from(tree, options_cls)
                    opath = _module_path(origin) if origin else None
                    where = origin or module
                    if opath is not None:
                        osource = opath.read_text(encoding="utf-8")
                        fields = _dataclass_fields(ast.parse(osource), osource, options_cls)
                _OPTIONS_WHERE[name] = (where, options_cls)
            specs[name] = [OptionSpec(name, *f) for f in (fields or [])]
    return specs


def preflight_assets(config: Any) -> None:
    """What a run would fail on before training, checked without loading anything
    (`run --dry-run`): the data files exist (or name a hub dataset), the model can be found."""
    from spt_bench.data.resolve import resolve_source
    from spt_bench.data.splits import get_protocol
    from spt_bench.models import check_model_available

    data = config.data
    get_protocol(data.split_protocol)
    if data.train_data is not None or data.test_data is not None:
        if data.source is not None or data.train_data is None or data.test_data is None:
            raise ConfigError("give train_data and test_data together, and without data")
        resolve_source(data.train_data)
        resolve_source(data.test_data)
    elif data.source is not None:
        resolve_source(data.source)
    if data.eval_data is not None:
        resolve_source(data.eval_data)
    check_model_available(config.model.name)
    from spt_bench.session import check_model_scoring

    check_model_scoring(config)


def preflight_method(name: str, options: dict[str, Any]) -> None:
    """Check a built-in method's name and options without importing torch: the Options
    dataclass is imported from the module that defines it (torch-free for every built-in;
    tests/test_configs.py checks). Names the scan does not know are left to the registry."""
    import importlib

    specs = method_option_specs()
    if name not in specs:
        from spt_bench.methods import registered_names

        if name not in registered_names():
            known = ", ".join(sorted(set(specs) | set(registered_names())))
            raise ConfigError(f"unknown method {name!r}; known methods: {known}")
        return
    module, cls_name = _OPTIONS_WHERE.get(name, ("", ""))
    if not module:
        return
    from spt_bench.typed import coerce_dataclass

    cls = getattr(importlib.import_module(module), cls_name)
    values = {k: v for k, v in options.items() if v is not None}
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        allowed = ", ".join(sorted(known)) or "none"
        raise ConfigError(f"method {name!r} has no option {unknown[0]!r} (its options: {allowed})")
    coerce_dataclass(cls, values, where=f"method {name!r} option")


def _option_kind(annotation: str) -> str:
    ann = annotation.replace(" ", "")
    for none in ("|None", "None|"):
        ann = ann.replace(none, "")
    return {"bool": "bool", "int": "int", "float": "float"}.get(ann, "str")


def _method_flags() -> list[Flag]:
    by_name: dict[str, list[OptionSpec]] = {}
    for specs in method_option_specs().values():
        for s in specs:
            by_name.setdefault(s.name, []).append(s)
    flags = []
    for name, specs in sorted(by_name.items()):
        alternatives = specs[0].annotation.replace(" ", "").split("|")
        if any(t.startswith(("dict", "list")) for t in alternatives) and "str" not in alternatives:
            continue  # structured values only: --set method.options.NAME={...}
        methods = tuple(sorted(s.method for s in specs))
        kind = _option_kind(specs[0].annotation)
        help_ = next((s.help for s in specs if s.help), "")
        default = specs[0].default
        if default is not dataclasses.MISSING and default is not None and kind != "bool":
            help_ += f" [default: {default}]"
        flags.append(
            Flag(
                f"method.options.{name}",
                "--" + name.replace("_", "-"),
                "opt__" + name,
                kind,
                f"({', '.join(methods)}) {help_}".strip(),
                "Method options",
                methods,
            )
        )
    return flags


@lru_cache(maxsize=1)
def run_flags() -> tuple[Flag, ...]:
    flags = _config_flags() + _method_flags()
    seen: dict[str, str] = {}
    for f in flags:
        if f.flag in seen:
            raise RuntimeError(f"flag {f.flag} derived twice: {seen[f.flag]} and {f.key}")
        seen[f.flag] = f.key
    return tuple(flags)


# ---------------------------------------------------------------------------- typer glue


def settings_flags(cls: type, command: str) -> tuple[Flag, ...]:
    """The flags of a command's own settings dataclass (e.g. the benchmark's): a field with
    `setting(config="model.name")` takes that run-config key's flag and help; one with its own
    help declares its flag (`--<field-name>` unless `flag=`); fields without help are not
    flags. Keys are `<command>.<field>`."""
    hints = typing.get_type_hints(cls)
    by_key = {f.key: f for f in run_flags()}
    out = []
    for fld in dataclasses.fields(cls):
        meta, key = fld.metadata, f"{command}.{fld.name}"
        param = f"{command}__{fld.name}"
        if meta.get("config"):
            shared = by_key[meta["config"]]
            out.append(dataclasses.replace(shared, key=key, param=param, commands=(command,)))
        elif meta.get("help"):
            flag = meta.get("flag") or "--" + fld.name.replace("_", "-")
            kind = _kind(hints[fld.name])
            kind = kind if kind in ("bool", "int", "float") else "str"  # parsed by the class
            panel, help_ = command.capitalize(), meta["help"]
            default = fld.default
            if default not in (None, dataclasses.MISSING) and not isinstance(default, bool):
                shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
                help_ += f" [default: {shown}]"
            out.append(Flag(key, flag, param, kind, help_, panel, commands=(command,)))
    return tuple(out)


def model_score_flags(command: str) -> tuple[Flag, ...]:
    """The run flags of the model-based scoring settings (config.MODEL_SCORE_SETTINGS), for a
    command that is not schema-driven (`score`): same flag, help and key."""
    from spt_bench.config import MODEL_SCORE_SETTINGS

    keys = {f"score.{k}" for k in MODEL_SCORE_SETTINGS}
    return tuple(dataclasses.replace(f, commands=(command,)) for f in run_flags() if f.key in keys)


def command_flags(command: str = "run") -> tuple[Flag, ...]:
    """The flags of `command`: every config key for `run` (and every method option), the keys
    whose schema field lists the command for the others."""
    return tuple(f for f in run_flags() if command in f.commands)


def typer_parameters(
    command: str = "run", flags: tuple[Flag, ...] | None = None
) -> list[inspect.Parameter]:
    """inspect.Parameters with typer.Option defaults, one per flag (for a dynamic signature);
    `flags`: these instead of the command's config flags."""
    import typer

    params = []
    for f in command_flags(command) if flags is None else flags:
        help_ = f.help
        if command in ("evaluate", "chat"):  # they start from the run's saved settings
            help_ = re.sub(r" \[default: [^\]]*\]$", "", help_) + " [default: the run's]"
        if f.kind == "bool":
            name = f.flag[2:]
            decl = f.flag if "/" in f.flag else f"--{name}/--no-{name}"
            tp: Any = bool | None
        else:
            decl = f.flag
            tp = {"int": int | None, "float": float | None}.get(f.kind, str | None)
        opt = typer.Option(None, decl, help=help_, rich_help_panel=f.panel, show_default=False)
        params.append(
            inspect.Parameter(f.param, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=tp)
        )
    return params


def layer_from_flags(values: dict[str, Any], command: str = "run") -> dict[str, Any]:
    """The nested config layer of the flags that were given (None = not given)."""
    layer: dict[str, Any] = {}
    for f in command_flags(command):
        v = values.get(f.param)
        if v is None:
            continue
        if f.kind == "int_list":
            try:
                v = [int(x) for x in str(v).split(",") if x.strip()]
            except ValueError:
                raise ConfigError(f"{f.flag} takes comma-separated integers, got {v!r}") from None
        set_dotted(layer, f.key, v)
    return layer


def flag_for_key(key: str) -> str | None:
    for f in run_flags():
        if f.key == key:
            return f.flag.split("/")[0]
    return None


_KEY = re.compile(r"\b(" + "|".join(list(SECTIONS) + ["seed"]) + r")\.([a-z_]+)\b")


def flag_message(message: str) -> str:
    """A library message naming config keys, with each key's flag added: "train.lr must be
    > 0" -> "--lr (train.lr) must be > 0". The one place keys become flags."""

    def repl(m: re.Match) -> str:
        key = m.group(0)
        if m.string[m.end() : m.end() + 1] == "=":  # a usable `KEY=VALUE` example stays as is
            return key
        flag = flag_for_key(key)
        return f"{flag} ({key})" if flag else key

    return _KEY.sub(repl, message)


# ---------------------------------------------------------------------------- docs

SCHEMA_DOC_BEGIN = "<!-- schema: generated by scripts/schema_doc.py from spt_bench/config.py -->"
SCHEMA_DOC_END = "<!-- schema: end -->"


def schema_markdown() -> str:
    """The config schema as a markdown table (docs/harness.md embeds it between
    SCHEMA_DOC_BEGIN/END; tests/test_configs.py fails when the two drift apart)."""
    rows = [
        "| key | flag | default | `--resume` | also on | what it sets |",
        "|---|---|---|---|---|---|",
    ]
    for key, (f, _tp) in leaf_fields().items():
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        if key in ("method.options", "method.by_method"):
            flag = "`--set`"
        else:
            flag = f"`{flag}`"
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        others = [c for c in f.metadata.get("commands", ("run",)) if c != "run"]
        help_ = f.metadata.get("help", "").replace("|", "\\|")
        rows.append(
            f"| `{key}` | {flag} | `{default!r}` | {f.metadata.get('resume', 'fixed')} | "
            f"{', '.join(others) or '-'} | {help_} |"
        )
    return "\n".join(rows) + "\n"
