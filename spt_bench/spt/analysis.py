"""SPT's prompt usage, computed once from prediction rows: which prompt the retriever selected for
each test example, overall and per dialogue-turn bucket. Torch-free: `plot prompts`, report.md
and metrics.json's diagnostics all read it from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from spt_bench.methods import LogField, ReportSection, RowField
from spt_bench.metrics.turns import turn_bucket_of

SELECTED = "selected_prompt"  # row field: index of the prompt the retriever selected
SCORES = "prompt_scores"  # row field: the retriever's score of every prompt

ROW_FIELDS: tuple[RowField, ...] = (
    RowField(SELECTED, "index of the soft prompt the retriever selected", carry=True, sample=True),
    RowField(SCORES, "the retriever's score of each of the K prompts"),
)

# What SPT logs in train_log.jsonl beyond the response NLL (`plot training` draws them).
LOG_FIELDS: tuple[LogField, ...] = (
    LogField("sel", "loss"),
    LogField("fusion", "loss"),
    LogField("ctr", "loss"),
    LogField(
        "retriever_entropy", "diagnostic", "SPT retriever: entropy of the prompt distribution",
        "entropy (nats)", style=0, order=10, uniform_over="k",
    ),
    LogField(
        "selection_agreement", "diagnostic",
        "SPT retriever: top-scored prompt = lowest-loss prompt", "share of batch examples",
        style=2, order=20,
    ),
    LogField(
        "score_sum", "diagnostic",
        "SPT retriever: sum of the prompt scores (scales the fused logits)", "sum_k s_k",
        style=5, order=40,
    ),
    LogField("prompt_usage", "dev_usage", "SPT prompt usage on the dev set"),
)  # fmt: skip


def prompt_usage(rows: list[dict[str, Any]], k: int | None = None) -> list[int]:
    """Histogram of `selected_prompt` over prediction rows: counts per prompt index [K].

    K is taken from `k`, else from the rows' `prompt_scores` length, else the largest index + 1.
    Rows without `selected_prompt` (methods without prompt selection) are ignored.
    """
    selected = [int(r[SELECTED]) for r in rows if r.get(SELECTED) is not None]
    if k is None:
        lengths = [len(r[SCORES]) for r in rows if r.get(SCORES)]
        k = max(lengths) if lengths else (max(selected) + 1 if selected else 0)
    counts = [0] * k
    for idx in selected:
        if not 0 <= idx < k:
            raise ValueError(f"{SELECTED} {idx} outside 0..{k - 1}")
        counts[idx] += 1
    return counts


@dataclass
class PromptUsage:
    """Selections per prompt overall and per turn bucket; `members` are the ids each prompt
    served (in row order). `metric*` are filled by callers that summarise a metric per prompt
    (`plot prompts`: mean with a bootstrap CI)."""

    k: int
    buckets: list[str]
    overall: list[int]  # selections per prompt
    per_bucket: list[list[int]]  # [prompt][bucket]
    bucket_totals: list[int]
    members: list[list[str]] = field(default_factory=list, repr=False)
    metric: str = ""
    metric_mean: list[float | None] = field(default_factory=list)
    metric_ci: list[tuple[float, float] | None] = field(default_factory=list)
    title: str = "SPT prompt selection"  # of the `plot prompts` figure

    @property
    def n(self) -> int:
        return sum(self.overall)


def selected_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get(SELECTED) is not None]


def usage_of(
    rows: list[dict],
    *,
    k: int | None = None,
    buckets: Sequence[str] | None = None,
    turn_default: int = 0,
) -> PromptUsage | None:
    """The prompt usage of prediction rows (None when no row selected a prompt). K is at least
    `k` and covers every selected index and score vector; rows are counted into `buckets` by
    their `turn` (`turn_default` when a row has none; buckets None: one per turn seen)."""
    chosen = selected_rows(rows)
    if not chosen:
        return None
    k = k or 0
    for r in chosen:
        k = max(k, int(r[SELECTED]) + 1, len(r.get(SCORES) or []))
    if buckets is None:
        buckets = [str(t) for t in sorted({int(r["turn"]) for r in chosen})]
    buckets = list(buckets)
    overall = [0] * k
    per_bucket = [[0] * len(buckets) for _ in range(k)]
    totals = [0] * len(buckets)
    members: list[list[str]] = [[] for _ in range(k)]
    for r in chosen:
        j = int(r[SELECTED])
        overall[j] += 1
        members[j].append(str(r["id"]))
        b = turn_bucket_of(int(r.get("turn", turn_default)), buckets) if buckets else None
        if b is not None:
            per_bucket[j][buckets.index(b)] += 1
            totals[buckets.index(b)] += 1
    return PromptUsage(k, buckets, overall, per_bucket, totals, members)


def usage_diagnostics(rows: list[dict], k: int) -> dict[str, Any]:
    """metrics.json "diagnostics": the test split's prompt-usage histogram and shares."""
    usage = prompt_usage(rows, k)
    n = max(sum(usage), 1)
    return {"prompt_usage": usage, "prompt_share": [u / n for u in usage]}


def usage_report(metrics: dict, rows: list[dict], scores: list[dict]) -> list[ReportSection]:
    """report.md: how often each prompt was selected, overall and per turn bucket, and the mean
    F1 of the examples each prompt served (from example_scores.jsonl)."""
    buckets = list((metrics.get("by_turn") or {}).keys())
    u = usage_of(rows, buckets=buckets, turn_default=-1)
    if u is None:
        return []
    f1 = {str(e["id"]): e["f1"] for e in scores if "f1" in e}
    n = u.n
    table = []
    for j in range(u.k):
        served = [f1[i] for i in u.members[j] if i in f1]
        mean_f1 = sum(served) / len(served) if served else None
        shares = [
            f"{100 * u.per_bucket[j][b] / u.bucket_totals[b]:.0f}%" if u.bucket_totals[b] else "-"
            for b in range(len(buckets))
        ]
        table.append([j, u.overall[j], f"{100 * u.overall[j] / n:.1f}%", mean_f1, *shares])
    notes = []
    top = max(range(u.k), key=u.overall.__getitem__)
    if u.k > 1 and u.overall[top] >= 0.9 * n:
        notes.append(
            f"Prompt {top} serves {100 * u.overall[top] / n:.0f}% of the examples: the retriever "
            "has (nearly) collapsed onto one prompt."
        )
    intro = (
        f"Selected prompt per test example ({n} examples, K={u.k}); per-turn columns: share of "
        "that turn's examples; mean f1 over the examples the prompt was selected for."
    )
    header = ["prompt", "selected", "share", "mean f1", *(f"turn {b}" for b in buckets)]
    return [ReportSection("Prompt usage (SPT)", intro, header, table, notes)]


def describe_row(info: dict) -> str:
    """chat: one line about the prompt selected for this turn."""
    if info.get(SELECTED) is None:
        return ""
    k = int(info[SELECTED])
    scores = info.get(SCORES)
    if scores:
        ranked = ", ".join(f"{j}: {s:.3f}" for j, s in enumerate(scores))
        return f"[SPT prompt {k} of {len(scores)}; retriever scores {ranked}]"
    return f"[SPT prompt {k}]"
