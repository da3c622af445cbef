"""`spt-bench presets`: the run presets in spt_bench/configs/ with what each one is for.

Each preset file starts with a usage line (`# spt-bench run --preset NAME ...`), a one-line
`# purpose: ...` (the concise listing) and a header comment (the details)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spt_bench.config import get_dotted, upgrade_flat
from spt_bench.config_files import list_presets, preset_path


@dataclass
class PresetSummary:
    name: str
    method: str  # "" when the preset leaves the method to --method
    model: str
    summary: str  # the first sentence of the file's header comment
    purpose: str = ""  # the `# purpose:` line (one line in the listing)
    usage: str = ""  # the usage line
    description: str = ""  # the whole header comment
    path: str = ""


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
        path = preset_path(name)
        text = path.read_text(encoding="utf-8")
        comments = []
        for line in text.splitlines():
            if not line.startswith("#"):
                break
            comments.append(line.lstrip("#").strip())
        usage = ""
        if comments and comments[0].startswith("spt-bench "):
            usage, comments = comments[0], comments[1:]
        purpose = ""
        if comments and comments[0].startswith("purpose:"):
            purpose, comments = comments[0].removeprefix("purpose:").strip(), comments[1:]
        values: Any = upgrade_flat(yaml.safe_load(text) or {})
        summary = _first_sentence(" ".join(comments))
        out.append(
            PresetSummary(
                name=name,
                method=str(get_dotted(values, "method.name") or ""),
                model=str(get_dotted(values, "model.name") or ""),
                summary=summary,
                purpose=purpose or summary,
                usage=usage,
                description=" ".join(comments),
                path=str(path),
            )
        )
    return out


def presets_lines() -> list[str]:
    """The concise listing: one line per preset (name, method, model, purpose), never cut."""
    rows = [("preset", "method", "model", "purpose")]
    rows += [
        (p.name, p.method or "(--method)", p.model or "-", p.purpose) for p in preset_summaries()
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3]
        for r in rows
    ]
    lines.append("")
    lines.append(
        "use one with `spt-bench run --preset NAME`; details: `spt-bench presets NAME` or `--full`"
    )
    return lines


def preset_details(p: PresetSummary, *, settings: bool) -> list[str]:
    """Everything about one preset: usage, method, model, the header comment (wrapped, not
    cut) and, with `settings`, the YAML values it sets."""
    import textwrap

    lines = [
        f"{p.name}: {p.purpose}",
        f"  usage:  {p.usage or f'spt-bench run --preset {p.name}'}",
        f"  method: {p.method or '(any: give --method)'}",
        f"  model:  {p.model or '-'}",
        f"  file:   {p.path}",
    ]
    lines += textwrap.wrap(
        p.description, width=96, initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False
    )
    if settings:
        body = [
            x
            for x in Path(p.path).read_text(encoding="utf-8").splitlines()
            if not x.startswith("#")
        ]
        lines += ["  settings:"] + [f"    {x}" for x in body if x.strip()]
    return lines


def presets_text(name: str | None = None, *, full: bool = False) -> str:
    """`spt-bench presets` (concise), `--full` (every preset's details) or `presets NAME` (one
    preset's details and settings)."""
    if name is not None:
        preset_path(name)  # an unknown name fails with the list of presets
        (p,) = [p for p in preset_summaries() if p.name == name]
        return "\n".join(preset_details(p, settings=True)) + "\n"
    if full:
        blocks = ["\n".join(preset_details(p, settings=False)) for p in preset_summaries()]
        return "\n\n".join(blocks) + "\n"
    return "\n".join(presets_lines()) + "\n"
