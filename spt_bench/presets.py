"""`spt-bench presets`: the run presets in spt_bench/configs/ with what each one is for."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from spt_bench.config import get_dotted, list_presets, preset_path, upgrade_flat


@dataclass
class PresetSummary:
    name: str
    method: str  # "" when the preset leaves the method to --method
    model: str
    summary: str  # the first sentence of the file's header comment


def _first_sentence(text: str) -> str:
    # a sentence ends at ". " before a capital, but not after "et al." / "e.g."
    match = re.search(r"(?<!\bal\.)(?<!e\.g\.)(?<=[.!?])\s+(?=[A-Z])", text)
    return (text[: match.start()] if match else text).strip()


def preset_summaries() -> list[PresetSummary]:
    """Every preset with its method, model and the first sentence of its header comment (the
    line after the `# spt-bench run --preset NAME` usage line)."""
    import yaml

    out = []
    for name in list_presets():
        text = preset_path(name).read_text(encoding="utf-8")
        comments = []
        for line in text.splitlines():
            if not line.startswith("#"):
                break
            comments.append(line.lstrip("#").strip())
        if comments and comments[0].startswith("spt-bench "):
            comments = comments[1:]
        values: Any = upgrade_flat(yaml.safe_load(text) or {})
        out.append(
            PresetSummary(
                name=name,
                method=str(get_dotted(values, "method.name") or ""),
                model=str(get_dotted(values, "model.name") or ""),
                summary=_first_sentence(" ".join(comments)),
            )
        )
    return out


def presets_table(console: Any) -> None:
    from rich.table import Table

    table = Table(title="Presets (spt-bench run --preset NAME; spt_bench/configs/NAME.yaml)")
    for col in ("preset", "method", "model", "what it is"):
        table.add_column(col, overflow="fold")
    for p in preset_summaries():
        table.add_row(p.name, p.method or "(--method)", p.model or "-", p.summary)
    console.print(table)
