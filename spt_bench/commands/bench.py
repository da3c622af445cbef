"""`spt-bench bench`: speed and memory against the plain libraries."""

from __future__ import annotations

import typer

from spt_bench.commands.base import app, command


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
