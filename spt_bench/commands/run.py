"""`spt-bench run` and `evaluate`: their flags derived from the config schema."""

from __future__ import annotations

from typing import Any

import typer

from spt_bench.commands.base import _with_flags, app, command

_RUN_HELP = """Train (if the method trains), decode the test split, score and report into a run folder.

Every config key is a flag (grouped below by config section) and every built-in method option
too; `--set KEY=VALUE` reaches any key (e.g. --set train.eval_every=50). Precedence: defaults <
--preset < --config < flags and --set. Presets: `spt-bench presets`."""


def run_cmd(
    *,
    config: str | None = typer.Option(
        None, "--config", help="YAML config file (below flags).", rich_help_panel="Run"
    ),
    preset: str | None = typer.Option(
        None, "--preset", help="A shipped preset (spt-bench presets).", rich_help_panel="Run"
    ),
    set_: list[str] | None = typer.Option(
        None, "--set", help="KEY=VALUE for any config key (repeatable).", rich_help_panel="Run"
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an existing run folder.", rich_help_panel="Run"
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue a killed run in the folder named by --out/--name (same command line ok).",
        rich_help_panel="Run",
    ),
    print_config: bool = typer.Option(
        False,
        "--print-config",
        "--dry-run",
        help="Print the resolved config and the run folder, then exit (no model is loaded).",
        rich_help_panel="Run",
    ),
    **flags: Any,
) -> None:
    from spt_bench.cli_flags import layer_from_flags
    from spt_bench.cli_render import dry_run_text, print_result
    from spt_bench.config_files import merge_layer, parse_set
    from spt_bench.launch import config_for_run
    from spt_bench.runner import run
    from spt_bench.tables import output_console

    layer = merge_layer(layer_from_flags(flags), parse_set(set_))
    cfg = config_for_run(layer, preset=preset, config_file=config, resume=resume)
    if print_config:
        from spt_bench.cli_flags import preflight_assets

        text = dry_run_text(cfg)
        preflight_assets(cfg)  # a missing data file or model fails as the run would
        typer.echo(text, nl=False)
        return
    console = output_console()
    result = run(cfg, overwrite=overwrite, resume=resume, console=console)
    print_result(result, console)


_RESUME_HINT = "; the run folder is unlocked: continue it with the same command and --resume"
command(app, "run", help=_RUN_HELP, interrupt_hint=_RESUME_HINT)(_with_flags(run_cmd))


def evaluate_cmd(
    run_dir: str = typer.Argument(..., help="A run folder made by spt-bench run."),
    set_: list[str] | None = typer.Option(
        None, "--set", help="KEY=VALUE: change any config key for this evaluation (repeatable)."
    ),
    rescore: bool = typer.Option(
        False,
        "--rescore",
        help="Only re-score the saved predictions (no decoding; e.g. to add BERTScore, "
        "--consistency nli or --judge MODEL; with --clean: re-clean raw_prediction).",
    ),
    **flags: Any,
) -> None:
    """Re-decode and re-score a saved run from its checkpoint, on the data files it recorded
    (checked by sha256; the results it replaces move to the run's history/ folder). Each flag
    changes that setting for this evaluation only; --data/--train-data/--test-data say where
    the run's data is now if it moved (accepted only with the recorded sha256)."""
    from spt_bench.cli_flags import layer_from_flags
    from spt_bench.cli_render import print_result
    from spt_bench.config import MODEL_SCORE_SETTINGS, flatten
    from spt_bench.config_files import parse_set
    from spt_bench.evaluation import evaluate_run
    from spt_bench.rescore import rescore_run
    from spt_bench.tables import output_console

    console = output_console()
    changes = flatten(layer_from_flags(flags, "evaluate"))
    if rescore:
        bertscore = changes.get("score.bertscore", True)
        clean = changes.get("decode.clean")
        model_keys = [f"score.{k}" for k in MODEL_SCORE_SETTINGS]
        score_changes = {k: v for k, v in changes.items() if k in model_keys}
        result = rescore_run(
            run_dir, bertscore=bertscore, clean=clean, score_changes=score_changes, console=console
        )
        print_result(result, console)
        return
    from spt_bench.inputs import DATA_ROLES

    moved = {r: changes.pop(f"data.{r}", None) for r in DATA_ROLES}
    changes.update(flatten(parse_set(set_)))
    result = evaluate_run(run_dir, changes=changes, data=moved, console=console)
    print_result(result, console)


command(app, "evaluate", interrupt_hint="; the run folder is unlocked")(
    _with_flags(evaluate_cmd, "evaluate")
)
