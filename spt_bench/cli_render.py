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
