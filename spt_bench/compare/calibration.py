"""The calibration flag of model-based metrics in `compare`: a column value measured by an
instrument that could not tell gold from shuffled references (metrics.calibration) is marked,
and a note says so; runs scored by different instruments are named in a note too."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

CALIBRATION_FLAG = "§"
NLI_METRICS = ("c_score", "c_entail_rate", "c_contradict_rate")


def calibrated_metric(metric: str) -> str | None:
    """The metric whose calibration covers `metric` (the C-score covers its rates)."""
    if metric in NLI_METRICS:
        return "c_score"
    return metric if metric.startswith("judge_") else None


def calibration_notes(
    rows: Sequence[Any], runs: Sequence[Any], columns: Sequence[str]
) -> list[str]:
    """Flag row cells (row.flags) whose instrument is not discriminating; return the notes."""
    by_path = {str(r.path): r for r in runs}
    shown = [m for m in columns if calibrated_metric(m)]
    if not shown:
        return []
    flagged: dict[str, list[str]] = {}  # "metric (AUC ...)" -> row labels
    instruments: dict[str, set[str]] = {}
    for row in rows:
        for path in row.paths or ([row.path] if row.path else []):
            run = by_path.get(str(path))
            if run is None:
                continue
            cal = run.metrics.get("calibration") or {}
            for kind, info in (run.metrics.get("instruments") or {}).items():
                key = f"{info.get('model')} {info.get('fingerprint')} {info.get('rubric_sha256')}"
                instruments.setdefault(kind, set()).add(key)
            for m in shown:
                c = cal.get(calibrated_metric(m) or "")
                if m in row.values and c and c.get("status") != "discriminating":
                    row.flags[m] = CALIBRATION_FLAG
                    flagged.setdefault(_calibration_text(calibrated_metric(m) or m, c), [])
                    labels = flagged[_calibration_text(calibrated_metric(m) or m, c)]
                    if row.label not in labels:
                        labels.append(row.label)
    notes = []
    if flagged:
        notes.append(
            f"{CALIBRATION_FLAG} measured by an instrument that does not tell a dialogue's own "
            "gold reference from another dialogue's (AUC 95% CI includes 0.5, or below it): "
            + "; ".join(f"{k}: {', '.join(v)}" for k, v in flagged.items())
            + ". Treat these values as uninformative."
        )
    differing = [k for k, v in instruments.items() if len(v) > 1]
    if differing:
        notes.append(
            "model-based scores from different instruments (model, fingerprint or rubric) "
            f"across runs: {', '.join(differing)}; their values are not comparable"
        )
    return notes


def _calibration_text(metric: str, c: dict) -> str:
    lo_hi = c.get("auc_ci95")
    if not isinstance(c.get("auc"), float):
        return f"{metric} ({c.get('status')})"
    ci = f" [{lo_hi[0]:.2f}, {lo_hi[1]:.2f}]" if lo_hi else ""
    return f"{metric} (AUC {c['auc']:.2f}{ci})"
