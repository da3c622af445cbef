"""`spt-bench bench`: speed and memory against the plain libraries."""

from __future__ import annotations

from typing import Any

import typer

from spt_bench.commands.base import app, command


def _bench_flags() -> tuple:
    """The flags the benchmark's settings class declares (spt_bench.bench.settings)."""
    from spt_bench.bench.settings import BenchSettings
    from spt_bench.cli_flags import settings_flags

    return settings_flags(BenchSettings, "bench")


def bench_cmd(
    predictions: str | None = typer.Option(
        None, "--predictions", help="Keep our decoder's predictions in this .jsonl file."
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
    **flags: Any,
) -> None:
    """Speed and memory: our training step, decoding and scorer vs plain PyTorch/transformers."""
    import json
    import sys

    from spt_bench.bench import BenchSettings, render_bench, run_bench
    from spt_bench.io import atomic_write_json
    from spt_bench.run_folder import output_file
    from spt_bench.tables import output_console

    given = {f.key.split(".", 1)[1]: flags.get(f.param) for f in _bench_flags()}
    settings = BenchSettings(**{k: v for k, v in given.items() if v is not None})
    # every output place is checked before anything is benchmarked
    json_out = output_file(out, "bench.json") if out else None
    predictions_out = output_file(predictions, "predictions.jsonl") if predictions else None
    if settings.profile_dir:
        from spt_bench.io import check_output_place

        check_output_place(settings.profile_dir, folder=True)
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


def _with_bench_flags(fn: Any) -> Any:
    import inspect

    from spt_bench.cli_flags import typer_parameters

    sig = inspect.signature(fn)
    fixed = [p for p in sig.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    fn.__signature__ = sig.replace(parameters=fixed + typer_parameters("bench", _bench_flags()))
    return fn


command(app, "bench")(_with_bench_flags(bench_cmd))
