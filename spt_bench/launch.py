"""The config of a `run` command and the run folder it names: layers (defaults < preset <
config file < flags), input paths made absolute, the folder (`--out`/`--name`), and the checks of
`--resume` (the saved config against the command line; what may change is declared by each
field of the schema, `spt_bench.config.setting(resume=...)`)."""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from spt_bench.config import (
    RunConfig,
    check_run_name,
    config_from_dict,
    flatten,
    get_dotted,
    resume_rule,
)
from spt_bench.config_files import resolve_layers
from spt_bench.errors import ConfigError
from spt_bench.run_folder import RunFolder

DEFAULT_OUT = "runs"


def default_run_name(method: str, now: datetime | None = None) -> str:
    now = now or datetime.now()
    return f"{method}-{now.strftime('%Y%m%d-%H%M%S')}"


def resolve_run_dir(config: RunConfig) -> RunFolder:
    """out/name when both are given; out alone is the run folder; name alone goes under runs/."""
    out, name = config.output.out, config.output.name
    if name is not None:
        check_run_name(name)
    if out is not None and name is None:
        return RunFolder(out)
    root = Path(out if out is not None else DEFAULT_OUT)
    name = name or default_run_name(config.method.name)
    run_dir = root / name
    if run_dir.resolve().parent != root.resolve():  # belt and braces (symlinked names etc.)
        raise ConfigError(f"run name {name!r} leads outside {root}")
    return RunFolder(run_dir)


def check_run_dir_usable(folder: RunFolder, *, overwrite: bool, resume: bool) -> None:
    """The cheap checks on the target folder, done first (a busy or existing folder fails at
    once, before any model is loaded) and again under the lock."""
    if overwrite and resume:
        raise ConfigError("--overwrite and --resume exclude each other")
    from spt_bench.io import check_output_place

    path = folder.path
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} exists and is not a folder")
    check_output_place(path, folder=True)
    if folder.is_locked():
        raise folder.busy_error()
    if resume:
        if not folder.is_run():
            what = "no such run" if folder.is_empty() else "it holds no config.json"
            raise ConfigError(f"cannot resume {path}: {what}")
        return
    if not folder.is_empty():
        if not overwrite:
            raise ConfigError(
                f"run folder {path} already exists; use --overwrite to replace it, "
                "--resume to continue it, or another --name"
            )
        if not folder.is_run():
            raise ConfigError(
                f"refusing to overwrite {path}: it is not an spt-bench run folder (no config.json)"
            )


def resume_config(folder: RunFolder, layers: dict[str, Any]) -> RunConfig:
    """The saved config of a run, checked against what the command line resolves to.

    Every key the command line sets (preset, config file, flags, --set) must agree with the
    saved config - so a script can re-run its own command with `--resume` appended - except
    the output location, the fields the schema marks `resume="adjustable"` (memory/speed) or
    `"skippable"` (a stage turned off), which may change (recorded in resume_log.jsonl), and a data
    file given at a new place with the content the run recorded (inputs.json). Real changes
    are refused, listed.
    """
    stored = folder.read_config().to_dict(with_output=False)
    given = flatten({k: v for k, v in layers.items() if k != "output"})
    stored_flat = flatten(stored)
    changed, adjusted = [], {}
    for key, value in given.items():
        if isinstance(value, dict) and not value:
            continue  # an empty options block sets nothing
        if key.startswith("method.by_method."):
            method_key = "method.options." + key.split(".", 3)[3]
            if key.split(".")[2] != stored["method"]["name"]:
                continue  # another method's defaults do not apply
            key = method_key
        before = stored_flat.get(key, get_dotted(stored, key))
        if value is None and key == "train.lr":
            continue  # unset lr resolves to the method default, as stored
        if before == value:
            continue
        rule = resume_rule(key)
        if (
            rule == "adjustable"
            or (rule == "skippable" and value is False)
            or _same_data_file(folder, key, before, value)
        ):
            adjusted[key] = {"from": before, "to": value}
            continue
        changed.append(f"{key} ({before!r} -> {value!r})")
    if changed:
        raise ConfigError(
            f"cannot resume {folder.path} with changed settings: {', '.join(changed)}; "
            "start a new run instead"
        )
    for key, change in adjusted.items():
        section, name = key.split(".")
        stored[section][name] = change["to"]
    config = config_from_dict(stored)
    if adjusted:
        folder.append(folder.RESUME_LOG, [{"time": time.time(), "changed": adjusted}])
        folder.write_config(config)
    return config


def _same_data_file(folder: RunFolder, key: str, stored: Any, given: Any) -> bool:
    """A data key spelled differently (relative vs absolute) or naming a moved copy: the same
    input when its content has the recorded sha256 (the data is read from the recorded path,
    checked, unless the recorded file is gone - then from the given one)."""
    from spt_bench.inputs import DATA_ROLES, describe_data

    role = key.removeprefix("data.")
    if not key.startswith("data.") or role not in DATA_ROLES or not stored or not given:
        return False
    if not folder.has(folder.INPUTS):
        from spt_bench.inputs import normalize_data_value

        return normalize_data_value(str(stored)) == normalize_data_value(str(given))
    recorded = (folder.read_json(folder.INPUTS).get("data") or {}).get(role) or {}
    return (
        bool(recorded.get("sha256")) and describe_data(str(given))["sha256"] == recorded["sha256"]
    )


def config_for_run(
    layers: dict[str, Any],
    *,
    preset: str | None = None,
    config_file: str | None = None,
    resume: bool = False,
) -> RunConfig:
    """The RunConfig of `spt-bench run`: defaults < preset < config file < flags/--set; when
    resuming, the run's saved config (checked against the same layers)."""
    from spt_bench.cli_flags import preflight_method

    merged = normalize_input_paths(
        resolve_layers(preset=preset, config_file=config_file, overrides=layers)
    )
    config = config_from_dict(merged)
    # the method and its options are checked now, before torch loads (seconds on a busy CPU)
    preflight_method(config.method.name, config.method.resolved_options())
    if not resume:
        return config
    if config.output.out is None and config.output.name is None:
        raise ConfigError("--resume needs the run folder: give --out (and/or --name)")
    folder = resolve_run_dir(config)
    if folder.is_locked():  # a run still going is never resumed (nor read half-written)
        raise folder.busy_error()
    resumed = resume_config(folder, merged)
    return config_from_dict({**resumed.to_dict(), "output": config.to_dict()["output"]})


def normalize_input_paths(layers: dict[str, Any]) -> dict[str, Any]:
    """Local data files and model folders as absolute paths, so that config.json names the
    same files whatever directory a later `evaluate` or `--resume` runs from. A data value
    that names no file fails here, with its name (before anything else is done)."""
    from spt_bench.inputs import DATA_ROLES, normalize_data_value
    from spt_bench.models import BUILTIN_MODELS

    out = {k: dict(v) if isinstance(v, dict) else v for k, v in layers.items()}
    data = out.get("data")
    if isinstance(data, dict):
        for role in DATA_ROLES:
            if isinstance(data.get(role), str):
                data[role] = normalize_data_value(data[role])
    model = out.get("model")
    if isinstance(model, dict) and isinstance(model.get("name"), str):
        name = model["name"]
        if Path(name).expanduser().is_dir() and name not in BUILTIN_MODELS:
            model["name"] = os.path.abspath(Path(name).expanduser())
    return out
