"""The SPT paper's published ConvAI2 numbers, bundled as data for `spt-bench compare --paper`.

The figures come from Huang et al. (ACL Findings 2024), computed with the authors' own evaluation
conventions, which differ from ours in two places that matter:

- the paper's "F1" is unigram F1 on raw whitespace tokens (no lower-casing, no punctuation or
  article removal): our `f1_raw`, not our ParlAI-normalised `f1`;
- BERTScore used microsoft/deberta-xlarge-mnli; our default encoder is all-MiniLM-L6-v2, so
  BERTScore values are never comparable across the two.

The CSV keeps the paper's column names; `load_paper_results` maps them onto our metric keys.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from importlib import resources

from spt_bench.errors import InputError

PAPER_RESOURCE = "paper_results.csv"
PAPER_CITATION = "Huang et al., ACL Findings 2024 (arXiv 2406.18187)"
PAPER_BERTSCORE_MODEL = "microsoft/deberta-xlarge-mnli"
# responses the published rows were scored on (the resource's header: ConvAI2 valid)
PAPER_N_EXAMPLES = 7801

# paper CSV column -> our metric key (see the module docstring for why f1 -> f1_raw)
PAPER_TO_OURS: dict[str, str] = {
    "f1": "f1_raw",
    "bleu": "bleu",
    "rouge1": "rouge1",
    "rouge2": "rouge2",
    "rougeL": "rougeL",
    "bertscore_f1": "bertscore_f1",
    "bertscore_p": "bertscore_p",
    "bertscore_r": "bertscore_r",
    "dist1": "dist1",
    "dist2": "dist2",
}

# The ten metrics the paper averages relative gains over ("AVG"), in our keys, in its column order.
PAPER_AVG_METRICS: tuple[str, ...] = tuple(PAPER_TO_OURS.values())

# Paper method label -> our registered method name.
PAPER_METHODS: dict[str, str] = {"PT": "prompt-tuning", "SPT": "spt"}


@dataclass(frozen=True)
class PaperRow:
    """One published row: a backbone and a method with its ten metric values (our keys)."""

    model: str
    method: str  # the paper's label: "PT" or "SPT"
    values: dict[str, float] = field(hash=False)

    @property
    def label(self) -> str:
        return f"paper: {self.model} {self.method} (published)"

    @property
    def our_method(self) -> str:
        return PAPER_METHODS.get(self.method, self.method)


def paper_source_text() -> str:
    """The comment header of the bundled CSV: where the numbers come from and their conventions."""
    lines = _resource_text().splitlines()
    return "\n".join(ln.lstrip("#").strip() for ln in lines if ln.startswith("#"))


def load_paper_results() -> list[PaperRow]:
    """Parse the bundled CSV (comment lines start with '#') into rows keyed by our metric names."""
    text = _resource_text()
    body = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    reader = csv.DictReader(io.StringIO("\n".join(body)))
    rows: list[PaperRow] = []
    missing = {"model", "method", *PAPER_TO_OURS} - set(reader.fieldnames or [])
    if missing:
        raise InputError(PAPER_RESOURCE, None, f"missing columns {sorted(missing)}")
    for i, rec in enumerate(reader, start=2):
        try:
            values = {ours: float(rec[theirs]) for theirs, ours in PAPER_TO_OURS.items()}
        except (TypeError, ValueError) as e:
            raise InputError(PAPER_RESOURCE, i, f"not a number ({e})") from None
        rows.append(PaperRow(model=rec["model"], method=rec["method"], values=values))
    return rows


def paper_relative_gains() -> dict[str, dict[str, float]]:
    """Per backbone, SPT's relative gain (%) over PT per metric and their mean ("AVG").

    This is how the paper summarises its table; recomputing it from the bundled numbers lets the
    compare command show the published gains beside ours.
    """
    rows = load_paper_results()
    by_key = {(r.model, r.method): r for r in rows}
    out: dict[str, dict[str, float]] = {}
    for model in dict.fromkeys(r.model for r in rows):
        pt, spt = by_key.get((model, "PT")), by_key.get((model, "SPT"))
        if pt is None or spt is None:
            continue
        gains = {
            m: (spt.values[m] - pt.values[m]) / pt.values[m] * 100.0
            for m in PAPER_AVG_METRICS
            if pt.values[m]
        }
        gains["AVG"] = sum(gains.values()) / len(gains)
        out[model] = gains
    return out


def _resource_text() -> str:
    return resources.files("spt_bench").joinpath("resources", PAPER_RESOURCE).read_text("utf-8")
