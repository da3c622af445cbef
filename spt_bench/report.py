"""report.md for a run folder: config summary, metrics table, per-turn table, samples.

Kept deliberately plain (GitHub markdown); `spt-bench compare` and the plots build richer views.
Every number here comes from metrics.json / predictions.jsonl in the same folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spt_bench.io import atomic_write_text, read_jsonl

SUMMARY_KEYS = (
    "method", "model", "data", "train_data", "test_data", "split_protocol", "seed", "max_steps",
    "epochs", "batch_size", "grad_accum", "lr", "decoding", "max_new_tokens", "train_limit",
    "eval_limit",
)  # fmt: skip
N_SAMPLES = 3


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:g}"  # settings (lr, epochs): as given; scores go through _num
    return str(v).replace("|", "\\|")


def _num(v: Any) -> str:
    """A score: compare's precision rule (2 decimals), so report.md and compare agree."""
    from spt_bench.compare import fmt_value

    return "-" if v is None else fmt_value(float(v))


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return out


def _with_ci(value: Any, ci: Any) -> str:
    if value is None:
        return "-"
    return f"{_num(value)} [{_num(ci[0])}, {_num(ci[1])}]" if ci else _num(value)


def _prompt_usage_section(metrics: dict, rows: list[dict], scores: list[dict]) -> list[str]:
    """SPT: how often each prompt was selected, overall and per turn bucket, and the mean F1
    of the examples each prompt served (from example_scores.jsonl)."""
    chosen = [r for r in rows if r.get("selected_prompt") is not None]
    if not chosen:
        return []
    from spt_bench.plots import turn_bucket_of

    k = max(max(int(r["selected_prompt"]) + 1, len(r.get("prompt_scores") or [])) for r in chosen)
    buckets = list((metrics.get("by_turn") or {}).keys())
    f1 = {str(e["id"]): e["f1"] for e in scores if "f1" in e}
    counts = [0] * k
    per_bucket = [[0] * len(buckets) for _ in range(k)]
    totals = [0] * len(buckets)
    f1_sums, f1_counts = [0.0] * k, [0] * k
    for r in chosen:
        j = int(r["selected_prompt"])
        counts[j] += 1
        b = turn_bucket_of(int(r.get("turn", -1)), buckets) if buckets else None
        if b is not None:
            per_bucket[j][buckets.index(b)] += 1
            totals[buckets.index(b)] += 1
        if str(r["id"]) in f1:
            f1_sums[j] += f1[str(r["id"])]
            f1_counts[j] += 1
    n = len(chosen)
    lines = ["", "## Prompt usage (SPT)", ""]
    lines += [
        f"Selected prompt per test example ({n} examples, K={k}); per-turn columns: share of "
        "that turn's examples; mean f1 over the examples the prompt was selected for.",
        "",
    ]
    table = []
    for j in range(k):
        mean_f1 = f1_sums[j] / f1_counts[j] if f1_counts[j] else None
        shares = [
            f"{100 * per_bucket[j][b] / totals[b]:.0f}%" if totals[b] else "-"
            for b in range(len(buckets))
        ]
        table.append([j, counts[j], f"{100 * counts[j] / n:.1f}%", _num(mean_f1), *shares])
    lines += _table(
        ["prompt", "selected", "share", "mean f1", *(f"turn {b}" for b in buckets)], table
    )
    top = max(range(k), key=counts.__getitem__)
    if k > 1 and counts[top] >= 0.9 * n:
        lines += [
            "",
            f"Prompt {top} serves {100 * counts[top] / n:.0f}% of the examples: the retriever "
            "has (nearly) collapsed onto one prompt.",
        ]
    return lines


def render_report(
    config: Any, metrics: dict, rows: list[dict], example_scores: list[dict] | None = None
) -> str:
    cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    lines = [f"# Run report: {cfg.get('method')} on {cfg.get('model')}", ""]
    lines += ["## Configuration", ""]
    lines += _table(["setting", "value"], [[k, cfg.get(k)] for k in SUMMARY_KEYS if k in cfg])
    opts = cfg.get("method_options") or {}
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
                  f"{_num(train.get('best_dev_loss'))} at step {_fmt(train.get('best_step'))}; "
                  f"decoding used checkpoint `{train.get('checkpoint_used')}`."]  # fmt: skip

    overall = metrics.get("overall") or {}
    ci = metrics.get("ci95") or {}
    meta = metrics.get("metrics_meta") or {}
    lines += ["", "## Metrics", ""]
    table_rows = []
    for name, value in overall.items():
        lo_hi = ci.get(name)
        ci_txt = f"[{_num(lo_hi[0])}, {_num(lo_hi[1])}]" if lo_hi else "-"
        hib = (meta.get(name) or {}).get("higher_is_better")
        arrow = "↑" if hib else ("↓" if hib is False else "")
        table_rows.append([f"{name} {arrow}".strip(), _num(value), ci_txt])
    lines += _table(["metric", "value", "95% CI"], table_rows)
    if metrics.get("bertscore_model"):
        lines += ["", f"BERTScore encoder: {metrics['bertscore_model']} "
                  f"(layer {metrics.get('bertscore_layer')})."]  # fmt: skip
    from spt_bench.model_metrics import model_metrics_note

    note = model_metrics_note(metrics.get("model_metrics"))
    if note:
        lines += ["", note]

    by_turn = metrics.get("by_turn") or {}
    if by_turn:
        names = [m for m in ("f1", "bleu", "rougeL", "bertscore_f1", "dist2") if m in overall]
        turn_ci = metrics.get("by_turn_ci95") or {}
        lines += ["", "## By dialogue turn", ""]
        lines += [
            "Turn = 0-based index of the response in its dialogue (tail turns merged into "
            "`k+`); cells: value [95% bootstrap CI].",
            "",
        ]
        lines += _table(
            ["turn", "n", *names],
            [
                [t, v.get("n"), *(_with_ci(v.get(m), (turn_ci.get(t) or {}).get(m)) for m in names)]
                for t, v in by_turn.items()
            ],
        )

    lines += _prompt_usage_section(metrics, rows, example_scores or [])

    if rows:
        lines += ["", "## Samples", ""]
        step = max(1, len(rows) // N_SAMPLES)
        for r in rows[::step][:N_SAMPLES]:
            lines += [f"**{r['id']}** (turn {r.get('turn')})", ""]
            lines += ["- persona: " + " ".join(r.get("persona", []))]
            for h in (r.get("history") or [])[-3:]:
                lines += [f"- > {h}"]
            lines += [f"- reference: {r.get('reference')}", f"- prediction: {r.get('prediction')}"]
            extra = {k: r[k] for k in ("selected_prompt",) if k in r}
            if extra:
                lines += [f"- {', '.join(f'{k}: {v}' for k, v in extra.items())}"]
            lines += [""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(run_dir: str | Path, config: Any, metrics: dict, rows: list[dict]) -> Path:
    path = Path(run_dir) / "report.md"
    scores_path = Path(run_dir) / "example_scores.jsonl"
    scores = list(read_jsonl(scores_path)) if scores_path.is_file() else []
    atomic_write_text(path, render_report(config, metrics, rows, scores))
    return path
