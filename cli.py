"""spt-bench command line: thin wrappers that build validated configs and call library code.

Heavy libraries (torch, transformers, datasets, metrics backends) are imported inside the
commands, never at module level, so `spt-bench --help` answers instantly.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from spt_bench.errors import SptBenchError

app = typer.Typer(
    name="spt-bench",
    help="Selective Prompt Tuning and its baselines for persona dialogue: train, decode, score, compare.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain click help: wraps long flag names instead of cutting them at 80 columns
    rich_markup_mode=None,
)
data_app = typer.Typer(
    help="Inspect, split and convert persona-dialogue data.", no_args_is_help=True
)
plot_app = typer.Typer(
    help="Plots from run folders (PNG by default; SVG/PDF by extension).", no_args_is_help=True
)
app.add_typer(data_app, name="data")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"spt-bench {version('spt-bench')}")
        except PackageNotFoundError:
            typer.echo("spt-bench (not installed)")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Selective Prompt Tuning and its baselines for persona dialogue: train, decode, score, compare."""


app.add_typer(plot_app, name="plot")


def command(parent: typer.Typer, *args: Any, interrupt_hint: str = "", **kwargs: Any) -> Callable:
    """Register a command whose user errors print as one line (`error: ...`) and exit 2, and
    which SIGINT/SIGTERM end cleanly (one line, exit 128 + signal number; `interrupt_hint`
    is added to that line)."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*a: Any, **k: Any) -> Any:
            from spt_bench.interrupt import interruptible

            try:
                with interruptible():
                    return fn(*a, **k)
            except SptBenchError as e:
                from spt_bench.cli_flags import flag_message

                typer.echo(f"error: {flag_message(str(e))}", err=True)
                raise typer.Exit(e.exit_code) from None
            except KeyboardInterrupt as e:
                from spt_bench.interrupt import Interrupted

                code = e.exit_code if isinstance(e, Interrupted) else 130
                name = str(e) if isinstance(e, Interrupted) else "SIGINT"
                typer.echo(f"error: interrupted by {name}{interrupt_hint}", err=True)
                raise typer.Exit(code) from None

        return parent.command(*args, **kwargs)(wrapper)

    return deco


# ---------------------------------------------------------------- data commands (issue 2)

_DATA_HELP = "A data file (.txt ParlAI/ConvAI2, .jsonl canonical), a ConvAI2 folder, 'sample', a saved datasets folder or a datasets hub id."
_SPLIT_HELP = "Which split to read from a folder or dataset (train, valid, dev, test)."
_VARIANT_HELP = "ConvAI2 variant in a folder, e.g. self_original_no_cands (default if present)."


@command(data_app, "stats")
def data_stats(
    path: str = typer.Argument(..., help=_DATA_HELP),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object, no tables."),
    split: str | None = typer.Option(None, "--split", help=_SPLIT_HELP),
    variant: str | None = typer.Option(None, "--variant", help=_VARIANT_HELP),
) -> None:
    """Dialogues, examples, persona lines and turns per dialogue, token-length percentiles."""
    import json

    from spt_bench.data import dataset_stats, resolve_source
    from spt_bench.data.resolve import load_source, narrow_source
    from spt_bench.data.stats import render_stats

    source = narrow_source(resolve_source(path), split=split, variant=variant)
    stats = dataset_stats(load_source(source, split=split, variant=variant))
    if json_output:
        typer.echo(json.dumps({"source": str(source), **stats}))
    else:
        render_stats(stats, str(source))


@command(data_app, "show")
def data_show(
    path: str = typer.Argument(..., help=_DATA_HELP),
    n: int = typer.Option(3, "--n", min=1, help="How many examples to show."),
    start: int = typer.Option(0, "--start", min=0, help="Index of the first example shown."),
    split: str | None = typer.Option(None, "--split", help=_SPLIT_HELP),
    variant: str | None = typer.Option(None, "--variant", help=_VARIANT_HELP),
) -> None:
    """Pretty-print examples: persona, history and response."""
    from spt_bench.data import load_examples
    from spt_bench.data.stats import render_examples

    examples = load_examples(path, split=split, variant=variant)
    if start >= len(examples):
        raise SptBenchError(f"--start {start} is past the last example ({len(examples)} examples)")
    render_examples(examples[start : start + n])


@command(data_app, "split")
def data_split(
    path: str = typer.Argument(..., help=_DATA_HELP),
    out: str = typer.Option(..., "--out", help="Folder for train/dev/test files and split.json."),
    protocol: str = typer.Option("convai2-valid-split", "--protocol", help="Split protocol."),
    seed: int = typer.Option(0, "--seed", help="Seed of the dialogue shuffle."),
    file_format: str = typer.Option("jsonl", "--format", help="jsonl (canonical) or parlai."),
    split: str | None = typer.Option(None, "--split", help=_SPLIT_HELP),
    variant: str | None = typer.Option(None, "--variant", help=_VARIANT_HELP),
) -> None:
    """Split one source by dialogue into train/dev/test files (each written atomically)."""
    from rich.table import Table

    from spt_bench.data import resolve_source, splits_by_protocol, write_splits
    from spt_bench.data.resolve import load_source, narrow_source
    from spt_bench.data.splits import get_protocol
    from spt_bench.io import check_output_place
    from spt_bench.run_folder import refuse_inside_run_folder
    from spt_bench.tables import output_console

    get_protocol(protocol)
    if file_format not in ("jsonl", "parlai"):
        raise SptBenchError(f"--format must be jsonl or parlai, got {file_format!r}")
    refuse_inside_run_folder(Path(out) / "split.json")
    check_output_place(out, folder=True)
    source = narrow_source(resolve_source(path), split=split, variant=variant)
    examples = load_source(source, split=split, variant=variant)
    splits = splits_by_protocol(examples, str(source), protocol, seed)
    written = write_splits(splits, out, fmt=file_format)
    console = output_console()
    console.print(f"{protocol} (seed {seed}) of {source} -> {out}")
    table = Table()
    for col in ("split", "dialogues", "examples", "dialogue ids sha256", "file"):
        table.add_column(col)
    for (name, counts), file in zip(splits.description["counts"].items(), written, strict=False):
        digest = counts["dialogue_ids_sha256"]
        table.add_row(name, str(counts["dialogues"]), str(counts["examples"]), digest, file.name)
    console.print(table)


@command(data_app, "convert")
def data_convert(
    path: str = typer.Argument(..., help=_DATA_HELP),
    out: str = typer.Argument(..., help="Output file: .jsonl (canonical) or .txt (ParlAI text)."),
    split: str | None = typer.Option(None, "--split", help=_SPLIT_HELP),
    variant: str | None = typer.Option(None, "--variant", help=_VARIANT_HELP),
) -> None:
    """Convert any source to canonical JSONL or ParlAI/ConvAI2 text (written atomically)."""
    from spt_bench.data import load_examples, write_examples_jsonl, write_parlai
    from spt_bench.io import check_output_place
    from spt_bench.run_folder import refuse_inside_run_folder

    if not out.endswith((".jsonl", ".txt")):
        raise SptBenchError(f"output {out!r} must end in .jsonl or .txt")
    refuse_inside_run_folder(out)
    check_output_place(out)
    examples = load_examples(path, split=split, variant=variant)
    if out.endswith(".jsonl"):
        write_examples_jsonl(examples, out)
    elif out.endswith(".txt"):
        write_parlai(examples, out)
    else:
        raise SptBenchError(f"output {out!r} must end in .jsonl or .txt")
    typer.echo(f"wrote {len(examples)} examples to {out}")


# ---------------------------------------------------------------- score command (issue 3)


@command(app, "score")
def score(
    predictions: str = typer.Argument(
        ...,
        help="Predictions JSONL: id, reference, prediction (+ optional dialog_id, turn, persona, "
        "history, selected_prompt).",
        metavar="PREDICTIONS.jsonl",
        show_default=False,
    ),
    out: str = typer.Option(
        None,
        "--out",
        help="metrics.json path, or a folder for it (default: a new RUN/scores/<time>/ folder "
        "for a run folder's predictions, never the run's own files; else beside the input).",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the metrics as one JSON object instead of tables."
    ),
    no_bertscore: bool = typer.Option(False, "--no-bertscore", help="Skip BERTScore."),
    bertscore_model: str = typer.Option(
        None,
        "--bertscore-model",
        help="BERTScore encoder: HF id or local folder (default: offline all-MiniLM-L6-v2).",
    ),
    bertscore_layer: int = typer.Option(
        None,
        "--bertscore-layer",
        help="Encoder layer (default: 5 for MiniLM, else bert-score's tuned layer).",
    ),
    bertscore_idf: bool = typer.Option(False, "--bertscore-idf", help="idf-weighted BERTScore."),
    bertscore_batch_size: int = typer.Option(64, "--bertscore-batch-size"),
    device: str = typer.Option(
        None, "--device", help="BERTScore device (default: cuda when available)."
    ),
    resamples: int = typer.Option(1000, "--resamples", help="Bootstrap resamples (0: no CIs)."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
) -> None:
    """Score a predictions file exactly like an spt-bench run (metrics, 95% CIs, per turn)."""
    import json

    from rich.console import Console

    from metrics import BertScoreOptions, render_score_report
    from metrics.files import score_file
    from spt_bench.errors import ConfigError
    from spt_bench.tables import output_console

    if resamples < 0:
        raise ConfigError(f"--resamples must be >= 0, got {resamples}")
    options = None
    if not no_bertscore:
        options = BertScoreOptions(
            model=bertscore_model,
            layer=bertscore_layer,
            idf=bertscore_idf,
            batch_size=bertscore_batch_size,
            device=device,
        )
    if out is not None:
        from spt_bench.run_folder import output_file

        out = str(output_file(out, "metrics.json"))
    status = Console(stderr=True)
    with status.status("scoring...", spinner="dots"):
        scored = score_file(
            predictions, out=out, bertscore=options, n_resamples=resamples, seed=seed
        )
    if as_json:
        typer.echo(json.dumps(scored.report.to_json(), ensure_ascii=False))
        return
    console = output_console()
    render_score_report(scored.report, console, title=f"{predictions}: {scored.report.n} examples")
    from metrics.files import EXAMPLE_STATS_NAME

    written = [scored.metrics_path, scored.examples_path]
    stats = scored.metrics_path.with_name(EXAMPLE_STATS_NAME)
    if stats.is_file() and stats not in written:
        written.append(stats)
    console.print(f"wrote {', '.join(str(p) for p in written)}", style="dim", highlight=False)


# ---------------------------------------------------------------- methods/run/evaluate (issue 4)


@command(app, "methods")
def methods_cmd() -> None:
    """List the registered methods: what trains, which prompt template, their options."""
    from spt_bench.tables import methods_table, output_console

    methods_table(output_console())


_RUN_HELP = """Train (if the method trains), decode the test split, score and report into a run folder.

Every config key is a flag (grouped below by config section) and every built-in method option
too; `--set KEY=VALUE` reaches any key (e.g. --set train.eval_every=50). Precedence: defaults <
--preset < --config < flags and --set. Presets: `spt-bench presets`."""


@command(app, "presets")
def presets_cmd(
    name: str | None = typer.Argument(None, help="One preset: its details and settings."),
    full: bool = typer.Option(
        False, "--full", "--verbose", "-v", help="Every preset's details, not one line each."
    ),
) -> None:
    """List the run presets (--preset NAME), one line each: method, model, purpose."""
    from spt_bench.presets import presets_text

    typer.echo(presets_text(name, full=full), nl=False)


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
    from spt_bench.config import merge_layer, parse_set
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


def _with_flags(fn: Callable, command_name: str = "run") -> Callable:
    """Give `fn` the flags the schema derives for `command_name` as keyword parameters (typer
    reads __signature__)."""
    from spt_bench.cli_flags import typer_parameters

    sig = inspect.signature(fn)
    fixed = [p for p in sig.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    params = fixed + typer_parameters(command_name)
    fn.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    return fn


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
        help="Only re-score the saved predictions (no model; e.g. to add BERTScore; with "
        "--clean: re-clean raw_prediction).",
    ),
    **flags: Any,
) -> None:
    """Re-decode and re-score a saved run from its checkpoint, on the data files it recorded
    (checked by sha256; the results it replaces move to the run's history/ folder). Each flag
    changes that setting for this evaluation only; --data/--train-data/--test-data say where
    the run's data is now if it moved (accepted only with the recorded sha256)."""
    from spt_bench.cli_flags import layer_from_flags
    from spt_bench.cli_render import print_result
    from spt_bench.config import flatten, parse_set
    from spt_bench.evaluation import evaluate_run
    from spt_bench.rescore import rescore_run
    from spt_bench.tables import output_console

    console = output_console()
    changes = flatten(layer_from_flags(flags, "evaluate"))
    if rescore:
        bertscore = changes.get("score.bertscore", True)
        clean = changes.get("decode.clean")
        result = rescore_run(run_dir, bertscore=bertscore, clean=clean, console=console)
        print_result(result, console)
        return
    moved = {r: changes.pop(f"data.{r}", None) for r in ("source", "train_data", "test_data")}
    changes.update(flatten(parse_set(set_)))
    result = evaluate_run(run_dir, changes=changes, data=moved, console=console)
    print_result(result, console)


command(app, "evaluate", interrupt_hint="; the run folder is unlocked")(
    _with_flags(evaluate_cmd, "evaluate")
)


# ---------------------------------------------------------------- compare/plot/chat (issue 6)


@command(app, "compare")
def compare_cmd(
    runs: list[str] = typer.Argument(..., help="Run folders, folders of runs, or globs."),
    baseline: str | None = typer.Option(
        None, "--baseline", "-b", help="Baseline: a run folder, or the method/label of one run."
    ),
    fmt: str | None = typer.Option(
        None,
        "--format",
        "-f",
        help="rich|md|csv|json|latex (default: from --out's extension, else rich).",
    ),
    out: str | None = typer.Option(None, "--out", "-o", help="Write the table to this file."),
    paper: bool = typer.Option(False, "--paper", help="Add the SPT paper's published rows."),
    force: bool = typer.Option(
        False,
        "--force",
        help="Compare runs with different example sets, BERTScore encoders or clean rules.",
    ),
    metric: list[str] | None = typer.Option(
        None, "--metric", "-m", help="Columns to show (repeatable; default: F1s, BLEU, ROUGE, ...)."
    ),
    p_adjust: str = typer.Option(
        "holm", "--p-adjust", help="holm|none: Holm-adjust p-values (family: --p-adjust-scope)."
    ),
    p_adjust_scope: str = typer.Option(
        "row",
        "--p-adjust-scope",
        help="row|table: Holm across the metrics of each row, or across every p-value of the "
        "table.",
    ),
    per_seed: bool = typer.Option(
        False,
        "--per-seed",
        help="One row per run (default: runs differing only in seed share one).",
    ),
    compact: bool = typer.Option(
        False, "--compact", help="No CIs/stds/p-values in md, latex, rich (narrow tables)."
    ),
) -> None:
    """Compare finished runs: metrics with 95% CIs, gains and seed-aware bootstrap p-values."""
    from spt_bench.compare import compare_command

    if out is not None:  # a bad output place fails before any run folder is read
        from spt_bench.run_folder import output_file

        output_file(out, "comparison.md")

    compare_command(
        runs,
        baseline=baseline,
        fmt=fmt,
        out=out,
        paper=paper,
        force=force,
        metrics=metric,
        p_adjust=p_adjust,
        p_adjust_scope=p_adjust_scope,
        per_seed=per_seed,
        compact=compact,
    )


@command(plot_app, "turns")
def plot_turns_cmd(
    runs: list[str] = typer.Argument(..., help="Run folders, folders of runs, or globs."),
    metric: list[str] | None = typer.Option(
        None, "--metric", "-m", help="Metric per panel (repeatable; default f1)."
    ),
    out: str = typer.Option(
        "turns.png", "--out", "-o", help="Image file (.png, .svg, .pdf), or a folder for it."
    ),
) -> None:
    """Metric vs dialogue turn, one line per run with a 95% CI band (the paper's turn analysis)."""
    from spt_bench.plots import plot_turns_command

    typer.echo(f"wrote {plot_turns_command(runs, metric or ['f1'], out)}")


@command(plot_app, "prompts")
def plot_prompts_cmd(
    run: str = typer.Argument(..., help="An SPT run folder."),
    out: str = typer.Option(
        "prompts.png", "--out", "-o", help="Image file (.png, .svg, .pdf), or a folder for it."
    ),
    metric: str = typer.Option("f1", "--metric", "-m", help="Per-prompt mean of this metric."),
) -> None:
    """SPT prompt selection: frequency overall and per turn, per-prompt mean F1."""
    from spt_bench.plots import plot_prompts_command

    typer.echo(f"wrote {plot_prompts_command(run, out, metric=metric)}")


@command(plot_app, "training")
def plot_training_cmd(
    run: str = typer.Argument(..., help="A run folder with train_log.jsonl."),
    out: str = typer.Option(
        "loss.png", "--out", "-o", help="Image file (.png, .svg, .pdf), or a folder for it."
    ),
    panels: list[str] | None = typer.Option(
        None,
        "--panels",
        help="Panels to draw, comma-separated or repeated: loss, terms, lr, grad_norm, "
        "retriever_entropy, selection_agreement, score_sum, usage (default: all the run has).",
    ),
) -> None:
    """Each loss term over optimizer steps, with the dev loss, diagnostics and prompt usage."""
    from spt_bench.plots import plot_training_command

    typer.echo(f"wrote {plot_training_command(run, out, panels=panels)}")


def chat_cmd(
    run_dir: str | None = typer.Argument(None, help="A trained run folder (optional)."),
    persona: list[str] | None = typer.Option(
        None, "--persona", "-p", help="A persona sentence (repeatable)."
    ),
    **flags: Any,
) -> None:
    """Talk to a trained run (or --model + an untrained --method) in the terminal; /quit to
    leave. --device and --max-new-tokens change the run's settings for the chat."""
    from spt_bench.chat import chat_command
    from spt_bench.cli_flags import layer_from_flags
    from spt_bench.config import flatten

    given = flatten(layer_from_flags(flags, "chat"))
    chat_command(
        run_dir,
        persona=persona or [],
        model=given.get("model.name"),
        method=given.get("method.name"),
        device=given.get("model.device"),
        max_new_tokens=given.get("decode.max_new_tokens"),
    )


command(app, "chat")(_with_flags(chat_cmd, "chat"))


# ---------------------------------------------------------------- bench (issue 8)


@command(app, "bench")
def bench_cmd(
    model: str = typer.Option("smollm2-135m", "--model", help="Backbone (as for run)."),
    data: str | None = typer.Option(
        None, "--data", help="Examples to use (as for run); default: the bundled sample."
    ),
    device: str | None = typer.Option(
        None, "--device", help="cpu, cuda ...; default: cuda when available."
    ),
    dtype: str | None = typer.Option(
        None, "--dtype", help="float32 | bfloat16 | float16; default: bf16 on CUDA, else fp32."
    ),
    batch_size: int = typer.Option(32, "--batch-size", help="Training batch size."),
    reps: int = typer.Option(5, "--reps", help="Timed training steps (median reported)."),
    warmup: int = typer.Option(2, "--warmup", help="Untimed warm-up steps."),
    k: int = typer.Option(4, "--k", help="SPT prompts K (and the plain reference's)."),
    decode_batch_size: str = typer.Option(
        "auto",
        "--decode-batch-size",
        help="Our decoding batch size(s), comma-separated; 'auto' = largest that fits (CUDA).",
    ),
    generate_batch_size: str | None = typer.Option(
        None,
        "--generate-batch-size",
        help="Plain generate batch size(s); default: the same as --decode-batch-size.",
    ),
    n_decode: int | None = typer.Option(
        None, "--n-decode", help="Prompts to decode; default: all on CUDA, 128 on CPU."
    ),
    decode_reps: int = typer.Option(1, "--decode-reps", help="Timed decoding passes (median)."),
    decode_engine: str = typer.Option(
        "hf",
        "--decode-engine",
        help="Our decoder's engine(s) to time, comma-separated: hf, vllm (e.g. hf,vllm).",
    ),
    decode_method: str = typer.Option(
        "spt", "--decode-method", help="Method whose decoding is timed (untrained)."
    ),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", help="Generated tokens cap."),
    no_plain_generate: bool = typer.Option(
        False, "--no-plain-generate", help="Skip the plain model.generate reference."
    ),
    no_train: bool = typer.Option(
        False, "--no-train", help="Skip the training-step figures (decoding and scoring only)."
    ),
    bertscore: bool = typer.Option(False, "--bertscore", help="Include BERTScore in the scorer."),
    predictions: str | None = typer.Option(
        None, "--predictions", help="Keep our decoder's predictions in this .jsonl file."
    ),
    profile: str | None = typer.Option(
        None, "--profile", help="Write torch.profiler tables (one spt step, one decode batch) here."
    ),
    checkpointing: str = typer.Option(
        None,
        "--checkpointing",
        help="Also time spt with activation checkpointing of these layer fractions, e.g. 0.25,1.",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print all figures as one JSON object on stdout (tables on stderr)."
    ),
    out: str | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Write all figures as JSON to this file (kept up to date while decoding runs).",
    ),
) -> None:
    """Speed and memory: our training step, decoding and scorer vs plain PyTorch/transformers."""
    import json
    import sys

    from spt_bench.bench import BenchSettings, render_bench, run_bench
    from spt_bench.io import atomic_write_json
    from spt_bench.run_folder import output_file
    from spt_bench.tables import output_console

    settings = BenchSettings(
        model=model, data=data, device=device, dtype=dtype, batch_size=batch_size, reps=reps,
        warmup=warmup, k=k, decode_batch_sizes=decode_batch_size,
        generate_batch_sizes=generate_batch_size, n_decode=n_decode, decode_reps=decode_reps,
        decode_method=decode_method, decode_engines=decode_engine,
        max_new_tokens=max_new_tokens, plain_generate=not no_plain_generate, bertscore=bertscore,
        profile_dir=profile, checkpointing=checkpointing, train=not no_train,
    )  # fmt: skip
    # every output place is checked before anything is benchmarked
    json_out = output_file(out, "bench.json") if out else None
    predictions_out = output_file(predictions, "predictions.jsonl") if predictions else None
    if profile:
        from spt_bench.io import check_output_place

        check_output_place(profile, folder=True)
    console = output_console(stderr=as_json)
    partial = None
    if json_out is not None:  # a run cut off while decoding keeps its training figures

        def partial(figures: dict) -> None:
            atomic_write_json(json_out, figures)

    result = run_bench(
        settings,
        predictions_out=predictions_out,
        log=lambda msg: console.print(f"[dim]{msg}[/dim]"),
        on_partial=partial,
    )
    render_bench(result, console)
    if json_out is not None:
        atomic_write_json(json_out, result)
        console.print(f"wrote {json_out}")
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    app()
