"""`spt-bench score`: score a predictions file exactly like a run."""

from __future__ import annotations

from typing import Any

import typer

from spt_bench.commands.base import app, command


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
        None, "--device", help="BERTScore, NLI and judge device (default: cuda when available)."
    ),
    resamples: int = typer.Option(1000, "--resamples", help="Bootstrap resamples (0: no CIs)."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    **flags: Any,
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
            predictions,
            out=out,
            bertscore=options,
            n_resamples=resamples,
            seed=seed,
            model_scoring=_model_scoring(flags, device),
        )
    if as_json:
        typer.echo(json.dumps(scored.report.to_json(), ensure_ascii=False))
        return
    console = output_console()
    render_score_report(scored.report, console, title=f"{predictions}: {scored.report.n} examples")
    _print_written(scored, console)


def _print_written(scored: Any, console: Any) -> None:
    from spt_bench.metrics.files import EXAMPLE_STATS_NAME

    written = [scored.metrics_path, scored.examples_path]
    stats = scored.metrics_path.with_name(EXAMPLE_STATS_NAME)
    if stats.is_file() and stats not in written:
        written.append(stats)
    console.print(f"wrote {', '.join(str(p) for p in written)}", style="dim", highlight=False)


def _model_scoring(flags: dict[str, Any], device: str | None) -> Any:
    """The NLI / judge options given as run-config flags (config.MODEL_SCORE_SETTINGS)."""
    import dataclasses

    from spt_bench.cli_flags import model_score_flags
    from spt_bench.config import ScoreConfig
    from spt_bench.metrics.model_scores import scoring_from_config

    given = {
        f.key.split(".", 1)[1]: flags[f.param]
        for f in model_score_flags("score")
        if flags.get(f.param) is not None
    }
    scoring = scoring_from_config(ScoreConfig(**given), None)
    if scoring is not None and device is not None:
        nli = scoring.nli and dataclasses.replace(scoring.nli, device=device)
        judge = scoring.judge and dataclasses.replace(scoring.judge, device=device)
        scoring = dataclasses.replace(scoring, nli=nli, judge=judge)
    return scoring


def _score_flags() -> Any:
    from spt_bench.cli_flags import model_score_flags

    return model_score_flags("score")


def _with_score_flags(fn: Any) -> Any:
    import inspect

    from spt_bench.cli_flags import typer_parameters

    sig = inspect.signature(fn)
    fixed = [p for p in sig.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    fn.__signature__ = sig.replace(parameters=fixed + typer_parameters("score", _score_flags()))
    return fn


command(app, "score")(_with_score_flags(score))
