"""`spt-bench score`: score a predictions file exactly like a run."""

from __future__ import annotations

import typer

from spt_bench.commands.base import app, command


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

    from spt_bench.errors import ConfigError
    from spt_bench.metrics import BertScoreOptions, render_score_report
    from spt_bench.metrics.files import score_file
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
    from spt_bench.metrics.files import EXAMPLE_STATS_NAME

    written = [scored.metrics_path, scored.examples_path]
    stats = scored.metrics_path.with_name(EXAMPLE_STATS_NAME)
    if stats.is_file() and stats not in written:
        written.append(stats)
    console.print(f"wrote {', '.join(str(p) for p in written)}", style="dim", highlight=False)
