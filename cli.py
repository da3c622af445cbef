"""spt-bench command line: thin wrappers that build validated configs and call library code.

Heavy libraries (torch, transformers, datasets, metrics backends) are imported inside the
commands, never at module level, so `spt-bench --help` answers instantly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer

from spt_bench.errors import SptBenchError

app = typer.Typer(
    name="spt-bench",
    help="Selective Prompt Tuning and its baselines for persona dialogue: train, decode, score, compare.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(
    help="Inspect, split and convert persona-dialogue data.", no_args_is_help=True
)
plot_app = typer.Typer(
    help="Plots from run folders (PNG by default; SVG/PDF by extension).", no_args_is_help=True
)
app.add_typer(data_app, name="data")
app.add_typer(plot_app, name="plot")


def command(parent: typer.Typer, *args: Any, **kwargs: Any) -> Callable:
    """Register a command whose user errors print as one line (`error: ...`) and exit 2."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*a: Any, **k: Any) -> Any:
            try:
                return fn(*a, **k)
            except SptBenchError as e:
                typer.echo(f"error: {e}", err=True)
                raise typer.Exit(e.exit_code) from None

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
    from rich.console import Console
    from rich.table import Table

    from spt_bench.data import resolve_source, splits_by_protocol, write_splits
    from spt_bench.data.resolve import load_source, narrow_source
    from spt_bench.data.splits import get_protocol

    get_protocol(protocol)
    if file_format not in ("jsonl", "parlai"):
        raise SptBenchError(f"--format must be jsonl or parlai, got {file_format!r}")
    source = narrow_source(resolve_source(path), split=split, variant=variant)
    examples = load_source(source, split=split, variant=variant)
    splits = splits_by_protocol(examples, str(source), protocol, seed)
    written = write_splits(splits, out, fmt=file_format)
    console = Console()
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
        show_default=False,
    ),
    out: str = typer.Option(
        None, "--out", help="Where to write metrics.json [default: beside the input]."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the metrics as one JSON object instead of tables."
    ),
    no_bertscore: bool = typer.Option(False, "--no-bertscore", help="Skip BERTScore."),
    bertscore_model: str = typer.Option(
        None,
        "--bertscore-model",
        help="BERTScore encoder: HF id or local folder [default: offline all-MiniLM-L6-v2].",
    ),
    bertscore_layer: int = typer.Option(
        None, "--bertscore-layer", help="Encoder layer [default: 5 for MiniLM; bert-score's]."
    ),
    bertscore_idf: bool = typer.Option(False, "--bertscore-idf", help="idf-weighted BERTScore."),
    bertscore_batch_size: int = typer.Option(64, "--bertscore-batch-size"),
    device: str = typer.Option(None, "--device", help="BERTScore device [default: cuda if any]."),
    resamples: int = typer.Option(1000, "--resamples", help="Bootstrap resamples (0: no CIs)."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
) -> None:
    """Score a predictions file exactly like an spt-bench run (metrics, 95% CIs, per turn)."""
    import json

    from rich.console import Console

    from metrics import BertScoreOptions, render_score_report, score_file
    from spt_bench.errors import ConfigError

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
    status = Console(stderr=True)
    with status.status("scoring...", spinner="dots"):
        scored = score_file(
            predictions, out=out, bertscore=options, n_resamples=resamples, seed=seed
        )
    if as_json:
        typer.echo(json.dumps(scored.report.to_json(), ensure_ascii=False))
        return
    console = Console()
    render_score_report(scored.report, console, title=f"{predictions}: {scored.report.n} examples")
    console.print(f"[dim]wrote {scored.metrics_path} and {scored.examples_path}[/dim]")


# ---------------------------------------------------------------- methods/run/evaluate (issue 4)

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
        False, "--force", help="Compare runs with different example sets or BERTScore encoders."
    ),
    metric: list[str] | None = typer.Option(
        None, "--metric", "-m", help="Columns to show (repeatable; default: F1s, BLEU, ROUGE, ...)."
    ),
) -> None:
    """Compare finished runs: metrics with 95% CIs, gains and paired-bootstrap p-values."""
    from spt_bench.compare import compare_command

    compare_command(
        runs, baseline=baseline, fmt=fmt, out=out, paper=paper, force=force, metrics=metric
    )


@command(plot_app, "turns")
def plot_turns_cmd(
    runs: list[str] = typer.Argument(..., help="Run folders, folders of runs, or globs."),
    metric: list[str] | None = typer.Option(
        None, "--metric", "-m", help="Metric per panel (repeatable; default f1)."
    ),
    out: str = typer.Option("turns.png", "--out", "-o", help="Image file (.png, .svg, .pdf)."),
) -> None:
    """Metric vs dialogue turn, one line per run with a 95% CI band (the paper's turn analysis)."""
    from spt_bench.plots import plot_turns_command

    typer.echo(f"wrote {plot_turns_command(runs, metric or ['f1'], out)}")


@command(plot_app, "prompts")
def plot_prompts_cmd(
    run: str = typer.Argument(..., help="An SPT run folder."),
    out: str = typer.Option("prompts.png", "--out", "-o", help="Image file (.png, .svg, .pdf)."),
    metric: str = typer.Option("f1", "--metric", "-m", help="Per-prompt mean of this metric."),
) -> None:
    """SPT prompt selection: frequency overall and per turn, per-prompt mean F1."""
    from spt_bench.plots import plot_prompts_command

    typer.echo(f"wrote {plot_prompts_command(run, out, metric=metric)}")


@command(plot_app, "training")
def plot_training_cmd(
    run: str = typer.Argument(..., help="A run folder with train_log.jsonl."),
    out: str = typer.Option("loss.png", "--out", "-o", help="Image file (.png, .svg, .pdf)."),
) -> None:
    """Each loss term over optimizer steps, with the dev loss."""
    from spt_bench.plots import plot_training_command

    typer.echo(f"wrote {plot_training_command(run, out)}")


@command(app, "chat")
def chat_cmd(
    run_dir: str | None = typer.Argument(None, help="A trained run folder (optional)."),
    persona: list[str] | None = typer.Option(
        None, "--persona", "-p", help="A persona sentence (repeatable)."
    ),
    model: str | None = typer.Option(None, "--model", help="Backbone when no run is given."),
    method: str | None = typer.Option(
        None, "--method", help="Method when no run is given (one that needs no training)."
    ),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, ... (default: auto)."),
    max_new_tokens: int | None = typer.Option(
        None, "--max-new-tokens", help="Reply length cap (default: the run's setting)."
    ),
) -> None:
    """Talk to a trained run (or a model + untrained method) in the terminal; /quit to leave."""
    from spt_bench.chat import chat_command

    chat_command(
        run_dir,
        persona=persona or [],
        model=model,
        method=method,
        device=device,
        max_new_tokens=max_new_tokens,
    )


# ---------------------------------------------------------------- bench (issue 8)


if __name__ == "__main__":
    app()
