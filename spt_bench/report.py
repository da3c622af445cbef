"""report.md for a run folder: config summary, metrics table, per-turn table, samples.

Kept deliberately plain (GitHub markdown); `spt-bench compare` and the plots build richer views.
Every number here comes from metrics.json / predictions.jsonl in the same folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spt_bench.io import atomic_write_text

SUMMARY_KEYS = (
    "method.name", "model.name", "data.source", "data.train_data", "data.test_data", "data.eval_data",
    "data.split_protocol", "seed", "train.max_steps", "train.epochs", "train.batch_size",
    "train.grad_accum", "train.lr", "decode.mode", "decode.max_new_tokens", "data.train_limit",
    "data.eval_limit",
)  # fmt: skip
N_SAMPLES = 3


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:g}"  # settings (lr, epochs): as given; scores go through _num
    return str(v).replace("|", "\\|")


def fmt_score(v: Any) -> str:
    """A score: compare's precision rule (2 decimals), so report.md and compare agree."""
    from spt_bench.compare.table import fmt_value

    return "-" if v is None else fmt_value(float(v))


def md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return out


def _with_ci(value: Any, ci: Any) -> str:
    if value is None:
        return "-"
    return (
        f"{fmt_score(value)} [{fmt_score(ci[0])}, {fmt_score(ci[1])}]" if ci else fmt_score(value)
    )


def render_report(
    config: Any,
    metrics: dict,
    rows: list[dict],
    example_scores: list[dict] | None = None,
    method_cls: Any = None,
) -> str:
    from spt_bench.config import get_dotted, upgrade_flat

    cfg = upgrade_flat(config.to_dict() if hasattr(config, "to_dict") else dict(config))
    lines = [
        f"# Run report: {get_dotted(cfg, 'method.name')} on {get_dotted(cfg, 'model.name')}",
        "",
    ]
    lines += _configuration(cfg, metrics, rows)
    lines += _metrics(metrics)
    lines += _by_turn(metrics)
    if method_cls is not None:  # the method's own sections (its report_sections hook)
        for section in method_cls.report_sections(metrics, rows, example_scores or []):
            lines += render_section(section)
    lines += _samples(rows, [f.name for f in getattr(method_cls, "row_fields", ()) if f.sample])
    return "\n".join(lines).rstrip() + "\n"


def _configuration(cfg: dict, metrics: dict, rows: list[dict]) -> list[str]:
    from spt_bench.config import get_dotted

    lines = ["## Configuration", ""]
    lines += md_table(["setting", "value"], [[k, get_dotted(cfg, k)] for k in SUMMARY_KEYS])
    opts = get_dotted(cfg, "method.options") or {}
    if opts:
        lines += ["", "Method options: " + ", ".join(f"`{k}={v}`" for k, v in opts.items())]
    summary = metrics.get("method") or {}
    if summary:
        lines += ["", f"Trainable parameters: {summary.get('trainable_params', '-'):,}"
                  if isinstance(summary.get("trainable_params"), int) else ""]  # fmt: skip
    lines += ["", f"Prompt template: {metrics.get('template_used', '-')}; "
              f"examples scored: {metrics.get('n', len(rows))}."]  # fmt: skip
    train = metrics.get("train")
    if train:
        lines += ["", f"Training: {train.get('steps')} steps, best dev loss "
                  f"{fmt_score(train.get('best_dev_loss'))} at step {fmt(train.get('best_step'))}; "
                  f"decoding used checkpoint `{train.get('checkpoint_used')}`."]  # fmt: skip
    return lines


def _metrics(metrics: dict) -> list[str]:
    overall = metrics.get("overall") or {}
    ci = metrics.get("ci95") or {}
    meta = metrics.get("metrics_meta") or {}
    lines = ["", "## Metrics", ""]
    table_rows = []
    for name, value in overall.items():
        lo_hi = ci.get(name)
        ci_txt = f"[{fmt_score(lo_hi[0])}, {fmt_score(lo_hi[1])}]" if lo_hi else "-"
        hib = (meta.get(name) or {}).get("higher_is_better")
        arrow = "↑" if hib else ("↓" if hib is False else "")
        table_rows.append([f"{name} {arrow}".strip(), fmt_score(value), ci_txt])
    lines += md_table(["metric", "value", "95% CI"], table_rows)
    if metrics.get("bertscore_model"):
        lines += ["", f"BERTScore encoder: {metrics['bertscore_model']} "
                  f"(layer {metrics.get('bertscore_layer')})."]  # fmt: skip
    if metrics.get("calibration"):
        from spt_bench.metrics.calibration import RULE_TEXT, calibration_lines

        lines += ["", "Model-based instruments and their calibration (" + RULE_TEXT + "):", ""]
        lines += [f"- {line}" for line in calibration_lines(
            metrics.get("instruments") or {}, metrics["calibration"])]  # fmt: skip
    from spt_bench.model_metrics import model_metrics_note

    note = model_metrics_note(metrics.get("model_metrics"))
    if note:
        lines += ["", note]
    return lines


def _by_turn(metrics: dict) -> list[str]:
    overall = metrics.get("overall") or {}
    by_turn = metrics.get("by_turn") or {}
    lines: list[str] = []
    if by_turn:
        shown = ("f1", "bleu", "rougeL", "bertscore_f1", "dist2", "c_score", "judge_consistency")
        names = [m for m in shown if m in overall]
        turn_ci = metrics.get("by_turn_ci95") or {}
        lines += ["", "## By dialogue turn", ""]
        lines += [
            "Turn = 0-based index of the response in its dialogue (tail turns merged into "
            "`k+`); cells: value [95% bootstrap CI].",
            "",
        ]
        lines += md_table(
            ["turn", "n", *names],
            [
                [t, v.get("n"), *(_with_ci(v.get(m), (turn_ci.get(t) or {}).get(m)) for m in names)]
                for t, v in by_turn.items()
            ],
        )
    return lines


def _samples(rows: list[dict], sample_fields: list[str]) -> list[str]:
    """A few prediction rows, with the method's sample fields (RowField.sample)."""
    lines: list[str] = []
    if rows:
        lines += ["", "## Samples", ""]
        step = max(1, len(rows) // N_SAMPLES)
        for r in rows[::step][:N_SAMPLES]:
            lines += [f"**{r['id']}** (turn {r.get('turn')})", ""]
            lines += ["- persona: " + " ".join(r.get("persona", []))]
            for h in (r.get("history") or [])[-3:]:
                lines += [f"- > {h}"]
            lines += [f"- reference: {r.get('reference')}", f"- prediction: {r.get('prediction')}"]
            extra = {k: r[k] for k in sample_fields if k in r}
            if extra:
                lines += [f"- {', '.join(f'{k}: {v}' for k, v in extra.items())}"]
            lines += [""]
    return lines


def render_section(section: Any) -> list[str]:
    """A method's ReportSection as markdown: title, intro, table (float cells as scores), notes."""
    table = [[fmt_score(c) if isinstance(c, float) else c for c in row] for row in section.rows]
    lines = ["", f"## {section.title}", "", section.intro, ""]
    lines += md_table(section.header, table)
    for note in section.notes:
        lines += ["", note]
    return lines


def write_report(
    run_dir: str | Path, config: Any, metrics: dict, rows: list[dict], method_cls: Any = None
) -> Path:
    from spt_bench.compare.runs import example_score_rows
    from spt_bench.run_folder import RunFolder

    path = RunFolder.of(run_dir).report_path
    scores = example_score_rows(run_dir)
    atomic_write_text(path, render_report(config, metrics, rows, scores, method_cls))
    return path
