"""Run configs: shipped presets, layering precedence, validation messages, run names."""

from __future__ import annotations

from pathlib import Path

import pytest

from spt_bench.config import (
    CONFIGS_DIR,
    RunConfig,
    check_run_name,
    list_presets,
    load_yaml_config,
    resolve_config,
)
from spt_bench.errors import ConfigError, InputError
from spt_bench.methods import get_method, make_options

SHIPPED = sorted(CONFIGS_DIR.glob("*.yaml"))


def test_the_three_presets_are_shipped() -> None:
    assert {"smoke", "paper", "offline"} <= set(list_presets())


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_config_is_valid_and_starts_with_its_command(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# spt-bench run ") and f"--preset {path.stem}" in first
    config = resolve_config(preset=path.stem)
    for name, options in config.methods.items():
        make_options(get_method(name), options)  # every per-method block validates
    make_options(get_method(config.method), config.options_for_method())


def test_probe_preset_at_the_authors_settings() -> None:
    c = resolve_config(preset="probe-spt-authors")
    assert (c.lr, c.batch_size, c.max_grad_norm, c.bucket_by_length) == (1e-4, 2, 0.0, False)
    assert (c.max_steps, c.max_input_tokens, c.method) == (200, 256, "spt")


def test_paper_preset_has_the_authors_settings() -> None:
    c = resolve_config(preset="paper")
    assert (c.decoding, c.max_new_tokens, c.lr, c.epochs, c.max_steps) == (
        "greedy",
        32,
        1e-4,
        1.0,
        None,
    )
    assert c.max_input_tokens + c.max_response_tokens == 512
    assert c.batch_size == 2 and c.seed == 3407
    assert c.max_grad_norm == 0 and c.bucket_by_length is False  # no clipping, random batches
    spt = c.methods["spt"]
    assert (spt["k"], spt["prompt_len"], spt["selection_weight"], spt["contrastive_weight"]) == (
        4,
        8,
        0.4,
        0.4,
    )


def test_precedence_defaults_preset_file_flags(tmp_path: Path) -> None:
    assert resolve_config().batch_size == RunConfig().batch_size
    assert resolve_config(preset="paper").batch_size == 2
    f = tmp_path / "c.yaml"
    f.write_text("batch_size: 3\nlr: 0.5\nmethod_options:\n  k: 2\n")
    c = resolve_config(preset="paper", config_file=f)
    assert (c.batch_size, c.lr, c.seed) == (3, 0.5, 3407)
    c = resolve_config(preset="paper", config_file=f,
                       overrides={"batch_size": 5, "lr": None, "method_options": {"k": 6}})  # fmt: skip
    assert (c.batch_size, c.lr) == (5, 0.5)
    assert c.options_for_method()["k"] == 6  # flag > file method_options > preset methods.spt
    assert c.options_for_method()["prompt_len"] == 8


def test_epochs_without_max_steps_means_epochs() -> None:
    assert RunConfig().max_steps is not None
    c = resolve_config(overrides={"epochs": 2.0})
    assert c.max_steps is None and c.epochs == 2.0
    c = resolve_config(overrides={"epochs": 2.0, "max_steps": 7})
    assert c.max_steps == 7


def test_yaml_errors_name_the_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("seed: 1\nbatch_sise: 4\n")
    with pytest.raises(InputError, match=r"bad.yaml:2: unknown config key 'batch_sise'"):
        load_yaml_config(f)
    f.write_text("seed: 1\nlr: fast\n")
    with pytest.raises(InputError, match=r"bad.yaml:2: lr must be float or null, got 'fast'"):
        load_yaml_config(f)
    f.write_text("seed: [1,\n")
    with pytest.raises(InputError, match=r"bad.yaml:\d+: invalid YAML"):
        load_yaml_config(f)
    with pytest.raises(InputError, match="config file not found"):
        load_yaml_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"batch_size": 0}, "batch_size must be > 0"),
        ({"decoding": "nucleus"}, "'decoding' must be one of 'greedy'"),
        ({"top_p": 1.5}, "top_p must be in"),
        ({"data": "x", "train_data": "y"}, "either data or train_data"),
        ({"max_steps": "ten"}, "'max_steps' must be int or null"),
    ],
)
def test_invalid_values_are_config_errors(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_config(overrides=overrides)


def test_unknown_method_option_names_the_method_and_key() -> None:
    cls = get_method("lora")
    with pytest.raises(ConfigError, match="method 'lora' has no option 'k'"):
        make_options(cls, {"k": 4})
    with pytest.raises(ConfigError, match="'lora_r' must be int"):
        make_options(cls, {"lora_r": "big"})
    assert make_options(cls, {"lora_r": 4, "lora_alpha": None}).lora_alpha == 16.0


@pytest.mark.parametrize("name", ["..", ".", "../x", "a/b", "/abs", "a\\b", "", "~user"])
def test_run_names_cannot_leave_the_output_folder(name: str) -> None:
    with pytest.raises(ConfigError, match="invalid run name"):
        check_run_name(name)
    with pytest.raises(ConfigError, match="invalid run name"):
        resolve_config(overrides={"name": name}) if name else check_run_name(name)


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'fast'; presets: .*paper"):
        resolve_config(preset="fast")


def test_yaml_exponent_floats_without_a_dot_are_floats(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("lr: 5e-05\nmethod_options:\n  selection_weight: 1e-1\nseed: 7\n")
    c = resolve_config(config_file=f)
    assert c.lr == 5e-05 and c.seed == 7
    assert c.method_options["selection_weight"] == 0.1
