"""Dataset statistics for `spt-bench data stats`. Token counts are whitespace tokens
(ConvAI2 text is already space-tokenised), not model tokens."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from spt_bench.data.example import Example

PERCENTILES = (50, 90, 95, 99)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default) of already sorted values."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """min/mean/percentiles/max of a list of numbers."""
    s = sorted(values)
    if not s:
        return {"min": 0, "mean": 0.0, "max": 0}
    out: dict[str, float] = {"min": s[0], "mean": round(sum(s) / len(s), 3)}
    for q in PERCENTILES:
        out[f"p{q}"] = round(percentile(s, q), 2)
    out["max"] = s[-1]
    return out


def _tokens(text: str) -> int:
    return len(text.split())


def dataset_stats(examples: Sequence[Example]) -> dict:
    """Counts, per-dialogue shapes and whitespace-token length distributions."""
    dialogues: dict[str, list[Example]] = {}
    for ex in examples:
        dialogues.setdefault(ex.dialog_id, []).append(ex)
    firsts = [d[0] for d in dialogues.values()]
    return {
        "dialogues": len(dialogues),
        "examples": len(examples),
        "persona_lines_per_dialogue": summarize([len(ex.persona) for ex in firsts]),
        "partner_persona_lines_per_dialogue": summarize([len(ex.partner_persona) for ex in firsts]),
        "turns_per_dialogue": summarize([len(d) for d in dialogues.values()]),
        "examples_with_candidates": sum(1 for ex in examples if ex.candidates),
        "examples_with_empty_history": sum(1 for ex in examples if not ex.history),
        "tokenization": "whitespace",
        "tokens": {
            "response": summarize([_tokens(ex.response) for ex in examples]),
            "last_partner_utterance": summarize(
                [_tokens(ex.history[-1]) for ex in examples if ex.history]
            ),
            "history": summarize([sum(map(_tokens, ex.history)) for ex in examples]),
            "persona": summarize([sum(map(_tokens, ex.persona)) for ex in firsts]),
        },
    }


def render_stats(stats: dict, source: str, console: Any = None) -> None:
    """Rich tables for `data stats`."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    console.print(f"[bold]{source}[/bold]")
    head = Table(show_header=False)
    head.add_column("what")
    head.add_column("value", justify="right")
    head.add_row("dialogues", str(stats["dialogues"]))
    head.add_row("examples (responses)", str(stats["examples"]))
    head.add_row("examples with candidates", str(stats["examples_with_candidates"]))
    head.add_row("examples with empty history", str(stats["examples_with_empty_history"]))
    console.print(head)

    cols = ["min", "mean", *(f"p{q}" for q in PERCENTILES), "max"]
    shape = Table(title="per dialogue / per example", title_justify="left")
    shape.add_column("")
    for c in cols:
        shape.add_column(c, justify="right")
    rows = [
        ("persona lines / dialogue", stats["persona_lines_per_dialogue"]),
        ("partner persona lines / dialogue", stats["partner_persona_lines_per_dialogue"]),
        ("turns / dialogue", stats["turns_per_dialogue"]),
        ("response tokens", stats["tokens"]["response"]),
        ("last partner utterance tokens", stats["tokens"]["last_partner_utterance"]),
        ("history tokens (all turns)", stats["tokens"]["history"]),
        ("persona tokens", stats["tokens"]["persona"]),
    ]
    for label, summary in rows:
        shape.add_row(label, *(f"{summary.get(c, '')}" for c in cols))
    console.print(shape)
    console.print("[dim]tokens = whitespace-separated words, not model tokens[/dim]")


def render_examples(examples: Sequence[Example], console: Any = None) -> None:
    """Rich panels for `data show`: persona, history (speaker-labelled), response."""
    from rich.console import Console, Group
    from rich.panel import Panel
    from rich.text import Text

    console = console or Console()
    for ex in examples:
        parts: list[Any] = []
        persona = Text("persona\n", style="bold cyan")
        for s in ex.persona or ("(none)",):
            persona.append(f"  • {s}\n", style="cyan")
        parts.append(persona)
        if ex.partner_persona:
            partner = Text("partner's persona\n", style="bold magenta")
            for s in ex.partner_persona:
                partner.append(f"  • {s}\n", style="magenta")
            parts.append(partner)
        history = Text("history\n", style="bold")
        if not ex.history:
            history.append("  (empty: the responder speaks first)\n", style="dim")
        # The last history utterance is the partner's; speakers alternate backwards from it.
        for i, utt in enumerate(ex.history):
            from_partner = (len(ex.history) - 1 - i) % 2 == 0
            history.append("  partner: " if from_partner else "  self:    ", style="dim")
            history.append(f"{utt}\n")
        parts.append(history)
        response = Text("response\n", style="bold green")
        response.append(f"  self:    {ex.response}", style="green")
        parts.append(response)
        if ex.candidates:
            parts.append(Text(f"\n{len(ex.candidates)} candidates", style="dim"))
        console.print(Panel(Group(*parts), title=ex.id, title_align="left"))
