"""Dialogue-turn buckets for the turn-wise analysis.

Rule: m = max(30, ceil(2% of the examples)). Turns are taken in increasing order; each turn with
at least m examples is its own bucket, until the first turn with fewer than m: that turn and all
later ones form one tail bucket "k+". A tail still smaller than m joins the bucket before it
(so "k+" starts one turn earlier). On ConvAI2 valid (7801 responses) this gives turns 0..6 with
1000 examples each and "7+" with 801.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

MIN_BUCKET_ABS = 30
MIN_BUCKET_FRACTION = 0.02


def min_bucket_size(n: int) -> int:
    return max(MIN_BUCKET_ABS, math.ceil(MIN_BUCKET_FRACTION * n))


def turn_buckets(turns: Sequence[int]) -> list[tuple[str, np.ndarray]]:
    """[(label, example indices)] in turn order; labels "0", "1", ..., "k+"."""
    if not turns:
        return []
    turns_arr = np.asarray(turns, dtype=np.int64)
    counts = Counter(turns_arr.tolist())
    m = min_bucket_size(len(turns_arr))
    ordered = sorted(counts)
    own: list[int] = []
    for t in ordered:
        if counts[t] < m:
            break
        own.append(t)
    tail_start = ordered[len(own)] if len(own) < len(ordered) else None
    tail_count = sum(c for t, c in counts.items() if tail_start is not None and t >= tail_start)
    while tail_start is not None and tail_count < m and own:
        tail_start = own.pop()
        tail_count += counts[tail_start]

    buckets = [(str(t), np.flatnonzero(turns_arr == t)) for t in own]
    if tail_start is not None:
        label = f"{tail_start}+" if tail_start != ordered[-1] else str(tail_start)
        buckets.append((label, np.flatnonzero(turns_arr >= tail_start)))
    return buckets


RULE_TEXT = (
    "turn = 0-based index of the response in its dialogue; a turn is its own bucket while it has "
    "at least m = max(30, ceil(2% of examples)) examples; from the first smaller turn on, all "
    "later turns form one tail bucket 'k+', merged into the bucket before it while it has fewer "
    "than m"
)


def bucket_order(label: str) -> tuple[int, str]:
    """Sort key of a bucket label: its leading turn number, then the text."""
    m = re.match(r"\s*(\d+)", str(label))
    return (int(m.group(1)) if m else 10**9, str(label))


def turn_bucket_of(turn: int, buckets: Sequence[str]) -> str | None:
    """Map a 0-based turn to a by_turn bucket label: "k" exactly, or "k+" for the merged tail
    (also "a-b" ranges)."""
    for label in buckets:
        text = str(label).strip()
        if text.isdigit() and int(text) == turn:
            return label
        m = re.fullmatch(r"(\d+)\s*\+", text) or re.fullmatch(r">=\s*(\d+)", text)
        if m and turn >= int(m.group(1)):
            return label
        m = re.fullmatch(r"(\d+)\s*[-–]\s*(\d+)", text)
        if m and int(m.group(1)) <= turn <= int(m.group(2)):
            return label
    return None
