"""Run configs: the nested schema, shipped presets, layering, validation messages, the derived
CLI flags, old flat configs, run names."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from spt_bench.config import (
    CONFIGS_DIR,
    RunConfig,
    TrainConfig,
    check_run_name,
    config_from_dict,
    leaf_fields,
    upgrade_flat,
)
from spt_bench.config_files import list_presets, load_yaml_config, parse_set, resolve_config
from spt_bench.errors import ConfigError, InputError
from spt_bench.methods import get_method, make_options

SHIPPED = sorted(CONFIGS_DIR.glob("*.yaml"))
REPO = Path(__file__).resolve().parents[1]


def test_the_three_presets_are_shipped_inside_the_package() -> None:
    assert {"smoke", "paper", "offline"} <= set(list_presets())
    assert CONFIGS_DIR.parent.name == "spt_bench"  # package data: found by an installed wheel


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_config_is_valid_and_starts_with_its_command(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# spt-bench run ") and f"--preset {path.stem}" in first
    config = resolve_config(preset=path.stem)
    for name, options in config.method.by_method.items():
        make_options(get_method(name), options)  # every per-method block validates
    make_options(get_method(config.method.name), config.method.resolved_options())


def test_probe_preset_at_the_authors_settings() -> None:
    c = resolve_config(preset="probe-spt-authors")
    t = c.train
    assert (t.lr, t.batch_size, t.max_grad_norm, t.bucket_by_length) == (1e-4, 2, 0.0, False)
    assert (t.max_steps, c.data.max_input_tokens, c.method.name) == (200, 256, "spt")


def test_paper_preset_has_the_authors_settings() -> None:
    c = resolve_config(preset="paper")
    assert (c.decode.mode, c.decode.max_new_tokens, c.train.lr, c.train.epochs) == (
        "greedy",
        32,
        1e-4,
        1.0,
    )
    assert c.train.max_steps is None
    assert c.data.max_input_tokens + c.data.max_response_tokens == 512
    assert c.train.batch_size == 2 and c.seed == 3407
    assert c.train.max_grad_norm == 0 and c.train.bucket_by_length is False  # as the authors
    spt = c.method.by_method["spt"]
    assert (spt["k"], spt["prompt_len"], spt["selection_weight"], spt["contrastive_weight"]) == (
        4,
        8,
        0.4,
        0.4,
    )


def test_precedence_defaults_preset_file_flags(tmp_path: Path) -> None:
    assert resolve_config().train.batch_size == RunConfig().train.batch_size
    assert resolve_config(preset="paper").train.batch_size == 2
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  batch_size: 3\n  lr: 0.5\nmethod:\n  options:\n    k: 2\n")
    c = resolve_config(preset="paper", config_file=f)
    assert (c.train.batch_size, c.train.lr, c.seed) == (3, 0.5, 3407)
    flags = {"train": {"batch_size": 5}, "method": {"options": {"k": 6}}}
    c = resolve_config(preset="paper", config_file=f, overrides=flags)
    assert (c.train.batch_size, c.train.lr) == (5, 0.5)
    opts = c.method.resolved_options()
    assert opts["k"] == 6  # flag > file method.options > preset by_method.spt
    assert opts["prompt_len"] == 8


def test_epochs_without_max_steps_means_epochs() -> None:
    assert RunConfig().train.max_steps is not None
    c = resolve_config(overrides={"train": {"epochs": 2.0}})
    assert c.train.max_steps is None and c.train.epochs == 2.0
    c = resolve_config(overrides={"train": {"epochs": 2.0, "max_steps": 7}})
    assert c.train.max_steps == 7


def test_yaml_errors_name_the_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("seed: 1\ntrain:\n  batch_sise: 4\n")
    with pytest.raises(InputError, match=r"bad.yaml:3: train.batch_sise is not a config key"):
        load_yaml_config(f)
    f.write_text("seed: 1\ntrain:\n  lr: fast\n")
    with pytest.raises(InputError, match=r"bad.yaml:3: train.lr must be float or null, got 'fast'"):
        load_yaml_config(f)
    f.write_text("seed: [1,\n")
    with pytest.raises(InputError, match=r"bad.yaml:\d+: invalid YAML"):
        load_yaml_config(f)
    with pytest.raises(InputError, match="config file not found"):
        load_yaml_config(tmp_path / "missing.yaml")


def test_an_old_flat_yaml_still_loads_with_its_line_numbers(tmp_path: Path) -> None:
    f = tmp_path / "flat.yaml"
    f.write_text("batch_size: 3\nmethod_options:\n  k: 2\n")
    assert load_yaml_config(f) == {"train": {"batch_size": 3}, "method": {"options": {"k": 2}}}
    f.write_text("seed: 1\nlr: fast\n")
    with pytest.raises(InputError, match=r"flat.yaml:2: train.lr must be"):
        load_yaml_config(f)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train": {"batch_size": 0}}, "train.batch_size must be > 0"),
        ({"decode": {"mode": "nucleus"}}, "decode.mode must be one of greedy"),
        ({"decode": {"top_p": 1.5}}, "decode.top_p must be in"),
        ({"data": {"source": "x", "train_data": "y"}}, "either data.source"),
        ({"train": {"max_steps": "ten"}}, "train.max_steps must be int or null"),
        ({"model": {"dtype": "fp8"}}, "model.dtype must be one of"),
        ({"score": {"hits_k": [1, 50]}}, "score.hits_k"),
    ],
)
def test_invalid_values_are_config_errors_naming_the_key(overrides: dict, message: str) -> None:
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
        resolve_config(overrides={"output": {"name": name}}) if name else check_run_name(name)


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'fast'; presets: .*paper"):
        resolve_config(preset="fast")


def test_yaml_exponent_floats_without_a_dot_are_floats(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lr: 5e-05\nmethod:\n  options:\n    selection_weight: 1e-1\nseed: 7\n")
    c = resolve_config(config_file=f)
    assert c.train.lr == 5e-05 and c.seed == 7
    assert c.method.options["selection_weight"] == 0.1


def test_dotted_set_reaches_any_key_and_refuses_unknown_ones() -> None:
    layer = parse_set(["train.eval_every=50", "method.options.k=2", "score.hits_k=[1, 5]"])
    c = resolve_config(overrides=layer)
    assert c.train.eval_every == 50 and c.method.options["k"] == 2 and c.score.hits_k == [1, 5]
    with pytest.raises(ConfigError, match="not a config key .did you mean train.eval_every"):
        parse_set(["eval_every=3"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set(["train.lr"])


def test_every_old_flat_config_json_in_the_repository_still_loads() -> None:
    found = sorted((REPO / "docs" / "results").rglob("config.json"))
    assert found, "the committed study runs keep their config.json"
    for path in found:
        data = json.loads(path.read_text())
        flat = "method_options" in data
        config = config_from_dict({k: v for k, v in upgrade_flat(data).items() if k != "output"})
        assert config.method.name == (data["method"] if flat else data["method"]["name"])


def test_adding_a_train_knob_is_one_edit() -> None:
    """TrainSettings (what the loop reads) is TrainConfig plus the seed: every TrainConfig
    field reaches the loop, and the CLI has a flag for it - no second list to update."""
    from spt_bench.cli_flags import run_flags
    from spt_bench.train import TrainSettings

    settings = {f.name for f in dataclasses.fields(TrainSettings)}
    flags = {f.key for f in run_flags()}
    for key in leaf_fields():
        if key.startswith("train."):
            assert key.split(".")[1] in settings
            assert key in flags


def test_every_config_key_has_a_flag_with_help() -> None:
    from spt_bench.cli_flags import run_flags

    by_key = {f.key: f for f in run_flags()}
    for key in leaf_fields():
        if key in ("method.options", "method.by_method"):
            continue
        assert key in by_key, key
        assert by_key[key].help.strip(), key


def test_method_option_flags_match_the_real_options_dataclasses() -> None:
    """The CLI reads method options from source (no torch import); the view must agree with
    the dataclasses the run validates against."""
    from spt_bench.cli_flags import method_option_specs
    from spt_bench.methods import list_methods

    specs = method_option_specs()
    for cls in list_methods():
        real = {f.name: f.default for f in dataclasses.fields(cls.Options)}
        parsed = {s.name: s.default for s in specs[cls.name]}
        assert parsed == real, cls.name


def test_library_errors_name_keys_and_the_cli_names_flags() -> None:
    from spt_bench.cli_flags import flag_message

    assert flag_message("train.max_grad_norm must be >= 0") == (
        "--max-grad-norm (train.max_grad_norm) must be >= 0"
    )
    assert flag_message("decode.batch_size must be > 0").startswith("--eval-batch-size")
    assert TrainConfig().max_grad_norm == 1.0


def test_presets_command_lists_every_preset_with_its_method_and_purpose():
    from typer.testing import CliRunner

    from cli import app
    from spt_bench.config_files import list_presets
    from spt_bench.presets import preset_summaries

    summaries = {p.name: p for p in preset_summaries()}
    assert sorted(summaries) == list_presets() and len(summaries) >= 13
    assert summaries["study-lora"].method == "lora"
    assert summaries["smoke"].method == ""  # works with every --method
    assert summaries["paper"].summary.startswith("The SPT authors' settings (Huang et al. 2024")
    assert all(p.summary and not p.summary.startswith("spt-bench") for p in summaries.values())
    res = CliRunner().invoke(app, ["presets"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    assert all(name in res.output for name in summaries)


def test_the_lr_schedule_knob_reaches_the_loop_from_one_declaration() -> None:
    """train.lr_schedule was added as one TrainConfig field: it has a flag, is validated and
    the loop's schedule follows it."""
    import math

    from spt_bench.cli_flags import flag_for_key
    from spt_bench.train import TrainSettings, _lr_factor

    assert flag_for_key("train.lr_schedule") == "--lr-schedule"
    with pytest.raises(ConfigError, match="train.lr_schedule must be one of 'linear'"):
        resolve_config(overrides={"train": {"lr_schedule": "step"}})
    c = resolve_config(overrides={"train": {"lr_schedule": "cosine"}})
    assert TrainSettings.from_config(c.train, 0).lr_schedule == "cosine"
    total, warmup = 10, 2
    assert [_lr_factor(s, total, warmup, "constant") for s in (0, 5, 9)] == [0.5, 1.0, 1.0]
    assert _lr_factor(6, total, warmup, "linear") == pytest.approx(0.5)
    assert _lr_factor(6, total, warmup, "cosine") == pytest.approx(0.5)
    assert _lr_factor(3, total, warmup, "cosine") == pytest.approx(
        0.5 * (1 - math.cos(math.pi * 7 / 8))
    )


def test_harness_md_schema_table_is_generated_from_the_schema() -> None:
    """docs/harness.md's table of every config key is what scripts/schema_doc.py writes."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "scripts/schema_doc.py", "--check"],
                         cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stderr


def test_evaluate_and_chat_flags_come_from_the_schema() -> None:
    """A field that lists a command in `setting(commands=...)` is a flag of that command with
    the run flag's name; the others are not."""
    from spt_bench.cli_flags import command_flags
    from spt_bench.config import leaf_fields

    for command in ("evaluate", "chat"):
        declared = {key for key, (f, _) in leaf_fields().items()
                    if command in f.metadata.get("commands", ())}  # fmt: skip
        assert {f.key for f in command_flags(command)} == declared
    evaluate = {f.flag for f in command_flags("evaluate")}
    assert {"--eval-batch-size", "--decode-engine", "--bertscore", "--data"} <= evaluate
    assert "--lr" not in evaluate and "--k" not in evaluate
