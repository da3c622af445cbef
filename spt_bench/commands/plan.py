"""`spt-bench plan`: per-process training memory of a method on a backbone, DDP vs FSDP."""

from __future__ import annotations

import typer

from spt_bench.commands.base import app, command


@command(app, "plan")
def plan_cmd(
    method: str = typer.Option("spt", "--method", help="A registered method."),
    model: str = typer.Option(
        "smollm2",
        "--model",
        help="Backbone: smollm2, tiny-random, facebook/opt-125m|1.3b|2.7b, "
        "meta-llama/Llama-2-7b-hf (shapes built in), a config.json or model folder, or a hub "
        "id in the local cache. Built on the meta device: no weights are loaded.",
    ),
    processes: str = typer.Option("1,8", "--processes", help="Process counts, comma-separated."),
    batch_size: int = typer.Option(
        8, "--batch-size", help="Examples per micro-batch (all processes)."
    ),
    max_length: int = typer.Option(512, "--max-length", help="Tokens per training sequence."),
    dtype: str = typer.Option("bfloat16", "--dtype", help="float32 | bfloat16 | float16."),
    gpu_gb: float = typer.Option(80.0, "--gpu-gb", help="Memory of one GPU, GiB."),
    activation_checkpointing: float = typer.Option(
        0.0, "--activation-checkpointing", help="Share of layers recomputed in backward (0-1)."
    ),
    option: list[str] = typer.Option(
        [], "--option", help="Method option KEY=VALUE (repeatable), e.g. k=4."
    ),
    fmt: str = typer.Option("md", "--format", help="md | json."),
) -> None:
    """Per-process memory of training METHOD on a backbone, for DDP and FSDP: parameters,
    gradients, AdamW state, FSDP's gathered layers and an activation estimate; whether it fits
    a GPU (docs/performance.md, "Memory plan")."""
    import json

    from spt_bench.config_files import parse_set
    from spt_bench.errors import ConfigError
    from spt_bench.memory_plan import footprint, plan_json, plan_markdown, plan_rows

    if fmt not in ("md", "json"):
        raise ConfigError(f"--format must be md or json, got {fmt!r}")
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ConfigError(f"--dtype must be float32, bfloat16 or float16, got {dtype!r}")
    try:
        counts = [int(n) for n in processes.split(",") if n.strip()]
    except ValueError:
        raise ConfigError(f"--processes expects integers like 1,8, got {processes!r}") from None
    if not counts or min(counts) < 1 or batch_size < 1 or max_length < 1:
        raise ConfigError("--processes, --batch-size and --max-length must be >= 1")
    options = parse_set([f"method.options.{o}" for o in option]).get("method", {})
    fp = footprint(method, model, options.get("options", {}), dtype=dtype)
    rows = [
        r
        for n in counts
        for r in plan_rows(
            fp,
            n,
            batch_size=batch_size,
            seq_len=max_length,
            gpu_gb=gpu_gb,
            activation_checkpointing=activation_checkpointing,
        )  # fmt: skip
    ]
    if fmt == "json":
        settings = {"batch_size": batch_size, "max_length": max_length, "gpu_gb": gpu_gb,
                    "activation_checkpointing": activation_checkpointing}  # fmt: skip
        typer.echo(json.dumps(plan_json(fp, rows, settings), indent=2))
    else:
        typer.echo(plan_markdown(fp, rows, gpu_gb), nl=False)
