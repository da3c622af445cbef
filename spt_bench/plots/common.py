"""Shared plotting pieces: the colour-blind-safe palette, figures, saving by extension,
metric titles and a bootstrap CI of a mean."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spt_bench.compare.table import SHORT_NAMES
from spt_bench.errors import SptBenchError
from spt_bench.io import atomic_write_bytes

# Okabe & Ito (2008); yellow last: weakest contrast on white.
OKABE_ITO: tuple[str, ...] = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#E69F00",  # orange
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow
)


MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*")


LINESTYLES: tuple[str, ...] = ("-", "--", "-.", ":")


IMAGE_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}


DPI = 150


METRIC_TITLES: dict[str, str] = {
    "f1": "F1 (ParlAI-normalised)",
    "f1_raw": "F1 raw (SPT paper's F1)",
    "bleu": "BLEU (sacrebleu)",
    "bleu1": "BLEU-1",
    "bleu2": "BLEU-2",
    "rouge1": "ROUGE-1 F",
    "rouge2": "ROUGE-2 F",
    "rougeL": "ROUGE-L F",
    "bertscore_f1": "BERTScore F1",
    "bertscore_p": "BERTScore precision",
    "bertscore_r": "BERTScore recall",
    "dist1": "Distinct-1",
    "dist2": "Distinct-2",
    "avg_len": "Response length",
    "persona_f1": "Persona F1",
    "ppl": "Perplexity",
    "c_score": "NLI C-score",
    "c_entail_rate": "Entailed by the persona (%)",
    "c_contradict_rate": "Contradicting the persona (%)",
    "judge_consistency": "Judge: persona consistency",
    "judge_coherence": "Judge: coherence",
}


def metric_title(metric: str) -> str:
    return METRIC_TITLES.get(metric, SHORT_NAMES.get(metric, metric))


def metric_axis_label(metric: str) -> str:
    """Y-axis label with the unit: x100 scores, tokens for length, plain ratio for ppl."""
    if metric == "avg_len":
        return "mean length (whitespace tokens)"
    if metric == "ppl":
        return "perplexity (per token)"
    if metric == "c_score":
        return "C-score (sum over persona sentences)"
    if metric.startswith("judge_"):
        return "judge score (1..5)"
    return f"{SHORT_NAMES.get(metric, metric)} (score ×100)"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return fig


def _image_format(out: str | os.PathLike) -> str:
    suffix = Path(out).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        raise SptBenchError(
            f"{out}: unsupported image type {suffix or '(none)'}; use .png, .svg or .pdf"
        )
    return IMAGE_FORMATS[suffix]


def save_figure(fig: Any, out: str | os.PathLike) -> Path:
    """Render to memory, then write atomically (no half-written image after a crash)."""
    out = Path(out)
    fmt = _image_format(out)
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=DPI, metadata=_metadata(fmt))
    atomic_write_bytes(out, buf.getvalue())  # mode 0666 less the umask, like every output
    return out


def _metadata(fmt: str) -> dict:
    # fixed metadata: the same plot gives the same bytes (no creation date)
    if fmt == "png":
        return {"Software": "spt-bench"}
    if fmt == "svg":
        return {"Date": None}
    return {"CreationDate": None}


def _style(i: int) -> dict:
    return {
        "color": OKABE_ITO[i % len(OKABE_ITO)],
        "marker": MARKERS[i % len(MARKERS)],
        "linestyle": LINESTYLES[(i // len(OKABE_ITO)) % len(LINESTYLES)],
    }


def bootstrap_mean_ci(
    values: Sequence[float], *, n_resamples: int = 1000, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile 95% CI of a mean by resampling values (seeded)."""
    import numpy as np

    arr = np.asarray([v for v in values if v is not None], dtype=float)
    if len(arr) < 2:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(arr), size=(n_resamples, len(arr)))
    means = arr[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
