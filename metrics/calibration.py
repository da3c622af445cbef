"""Calibration controls of a model-based instrument: does it tell a dialogue's own gold reference
from another dialogue's?

Each test example is scored twice more: with its gold reference, and with the gold reference of
another dialogue (a fixed-seed derangement of the dialogues, so no example keeps a reference
of its own dialogue), against the same persona and context. Reported: the AUC of gold vs
shuffled scores (Mann-Whitney U / (n_gold * n_shuffled), ties count 1/2) and the mean paired
gap gold - shuffled, each with a 95% percentile bootstrap CI over examples (paired resamples).
Rule: an instrument whose AUC CI includes 0.5 is "not discriminating" (its numbers cannot be
told from chance on this test set); one whose CI lies below 0.5 is "inverted".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RULE_TEXT = (
    "AUC of gold vs shuffled references (Mann-Whitney, ties 1/2) and mean paired gap, 95% "
    "percentile bootstrap over examples; 'not discriminating' when the AUC CI includes 0.5, "
    "'inverted' when it lies below 0.5"
)


def shuffled_sources(dialog_ids: Sequence[object], seed: int) -> list[int]:
    """For each example, the index of the example whose reference it gets as the shuffled
    control: the dialogues are permuted by a fixed-seed cyclic permutation (Sattolo's algorithm:
    no dialogue maps to itself), and the k-th example of a dialogue takes the k-th (or last)
    example of its image. Rows without a dialogue id are each their own dialogue."""
    keys = [("row", i) if d is None else ("dialog", str(d)) for i, d in enumerate(dialog_ids)]
    order: dict[tuple, list[int]] = {}
    for i, k in enumerate(keys):
        order.setdefault(k, []).append(i)
    dialogues = list(order)
    if len(dialogues) < 2:
        raise ValueError("the shuffled-reference control needs examples from >= 2 dialogues")
    rng = np.random.default_rng(seed)
    perm = list(range(len(dialogues)))
    for i in range(len(perm) - 1, 0, -1):  # Sattolo: a single cycle, so perm[i] != i
        j = int(rng.integers(0, i))
        perm[i], perm[j] = perm[j], perm[i]
    out = [0] * len(keys)
    for d, members in enumerate(dialogues):
        target = order[dialogues[perm[d]]]
        for k, i in enumerate(order[members]):
            out[i] = target[min(k, len(target) - 1)]
    return out


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of each row of x [R, M], ties given their mean rank."""
    order = np.argsort(x, axis=1, kind="stable")
    sorted_x = np.take_along_axis(x, order, axis=1)
    ranks = np.empty_like(x, dtype=np.float64)
    m = x.shape[1]
    for r in range(x.shape[0]):
        s = sorted_x[r]
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        ends = np.r_[starts[1:], m]
        mean_rank = (starts + ends + 1) / 2.0  # ranks start+1..end, their mean
        ranks[r, order[r]] = np.repeat(mean_rank, ends - starts)
    return ranks


def auc(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC P(pos > neg) + P(pos = neg)/2 of each row: [R, n_pos], [R, n_neg] ->
    [R] (1-D inputs give one value)."""
    pos, neg = np.atleast_2d(positive).astype(float), np.atleast_2d(negative).astype(float)
    n_pos, n_neg = pos.shape[1], neg.shape[1]
    ranks = _ranks(np.concatenate([pos, neg], axis=1))
    u = ranks[:, :n_pos].sum(axis=1) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def calibrate(
    gold: Sequence[float], shuffled: Sequence[float], *, n_resamples: int = 1000, seed: int = 0
) -> dict:
    """{auc, auc_ci95, gap, gap_ci95, n, status} of one instrument (see module docstring)."""
    g, s = np.asarray(gold, dtype=float), np.asarray(shuffled, dtype=float)
    n = len(g)
    out: dict = {"n": n, "auc": float(auc(g, s)[0]), "gap": float(np.mean(g - s))}
    if n_resamples > 0:
        idx = np.random.default_rng([seed, 7]).integers(0, n, size=(n_resamples, n))
        aucs = auc(g[idx], s[idx])
        gaps = (g[idx] - s[idx]).mean(axis=1)
        out["auc_ci95"] = [float(np.percentile(aucs, 2.5)), float(np.percentile(aucs, 97.5))]
        out["gap_ci95"] = [float(np.percentile(gaps, 2.5)), float(np.percentile(gaps, 97.5))]
        lo, hi = out["auc_ci95"]
    else:
        lo = hi = out["auc"]
    out["status"] = (
        "not discriminating" if lo <= 0.5 <= hi else ("inverted" if hi < 0.5 else "discriminating")
    )
    return out


def calibration_lines(instruments: dict, calibration: dict) -> list[str]:
    """One line per instrument and one per calibrated metric (report.md, terminal, compare)."""
    lines = []
    for kind, info in instruments.items():
        fp = (info.get("fingerprint") or "")[:12] or "none"
        extra = f", engine {info['engine']}" if "engine" in info else ""
        lines.append(f"{kind}: {info.get('model')} (fingerprint {fp}{extra})")
    for metric, c in calibration.items():
        if "auc" not in c:
            lines.append(f"calibration of {metric}: {c.get('status')} ({c.get('reason', '')})")
            continue
        auc_ci = c.get("auc_ci95")
        gap_ci = c.get("gap_ci95")
        auc_txt = f"AUC {c['auc']:.3f}" + (f" [{auc_ci[0]:.3f}, {auc_ci[1]:.3f}]" if auc_ci else "")
        gap_txt = f"gap {c['gap']:+.3f}" + (
            f" [{gap_ci[0]:+.3f}, {gap_ci[1]:+.3f}]" if gap_ci else ""
        )
        flag = "" if c["status"] == "discriminating" else " ⚠"
        lines.append(
            f"calibration of {metric} (gold vs shuffled references, n={c['n']}): {auc_txt}, "
            f"{gap_txt}: {c['status']}{flag}"
        )
    return lines
