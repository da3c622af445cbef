"""`spt-bench compare` and `spt-bench plot ...`."""

from __future__ import annotations

import typer

from spt_bench.commands.base import app, command, plot_app


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
