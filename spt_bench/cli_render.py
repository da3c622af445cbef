"""What the `run`, `evaluate` and `methods` commands print (the CLI's side of the runner)."""

from __future__ import annotations

from typing import Any

from spt_bench.outcome import RunResult
from spt_bench.session import finalize_config


def dry_run_text(config: Any) -> str:
    """The resolved config (method options and lr filled in) as YAML, for --print-config."""
    import yaml

    resolved, _, _ = finalize_config(config)
    from spt_bench.launch import resolve_run_dir

    folder = resolve_run_dir(resolved)
    text = yaml.safe_dump(resolved.to_dict(with_output=False), sort_keys=False)
    return f"# run folder: {folder.path}\n{text}"


def print_result(result: RunResult, console: Any) -> None:
    from spt_bench.distributed import get_dist
    from spt_bench.metrics import render_score_report
    from spt_bench.model_metrics import model_metrics_note

    if not get_dist().is_main:  # one report per launch, not one per process
        return

    if result.report is not None:
        c = result.config
        title = f"{c.method.name} on {c.model.name}: {result.report.n} test examples"
        render_score_report(result.report, console, title=title)
    note = model_metrics_note((result.metrics or {}).get("model_metrics"))
    if note:
        console.print(f"[dim]{note}[/dim]", highlight=False)
    t = result.timings
    parts = [f"{k[:-2]} {v:.1f}s" for k, v in t.items() if k.endswith("_s")]
    console.print(f"[dim]{' · '.join(parts)}[/dim]")
    console.print(f"run folder: [bold]{result.run_dir}[/bold]")


def methods_table(console: Any) -> None:
    import dataclasses

    from rich.table import Table

    from spt_bench.methods import list_methods
    from spt_bench.peft_method import EXAMPLE_OPTIONS_FOR_COUNTS, trainable_counts_on_meta

    try:  # shapes only: SmolLM2 built on the meta device from its config, no weights loaded
        counts: dict[str, Any] = trainable_counts_on_meta("smollm2-135m")
        note = "trainable: parameters trained on SmolLM2-135M with the default options"
    except Exception as e:  # noqa: BLE001 - e.g. the SmolLM2 asset is not installed
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        counts, note = {}, f"trainable counts unavailable: {first}"
    table = Table(title="methods", caption=note)
    for col in ("name", "trains", "trainable", "template", "description", "options"):
        table.add_column(col, justify="right" if col == "trainable" else "left")
    for cls in list_methods():
        opts = ", ".join(f.name for f in dataclasses.fields(cls.Options)) or "-"
        n = counts.get(cls.name, "-")
        shown = f"{n:,}" if isinstance(n, int) else str(n)
        if cls.name in EXAMPLE_OPTIONS_FOR_COUNTS and isinstance(n, int):
            example = ", ".join(f"{k}={v}" for k, v in EXAMPLE_OPTIONS_FOR_COUNTS[cls.name].items())
            shown += f" ({example})"
        row = (cls.name, "yes" if cls.trains else "no", shown, cls.template, cls.description, opts)
        table.add_row(*row)
    console.print(table)
