"""Seeded subsets of examples for `--train-limit`, `--dev-limit` and `--eval-limit`.

`sample_examples` (examples drawn one by one) spreads a small subset over many dialogues, so a
24-example test subset may hold no turn-0 example at all and a turn analysis of it means
little. `sample_dialogues` takes whole dialogues in a seeded order instead: every turn is
represented about equally (turn 0 once per dialogue), and the last dialogue taken contributes
its first turns only, so exactly n examples are used. Both keep the examples' original order.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from spt_bench.data.example import Example

# What run descriptions record for each sampler (data.json / config "data" description).
SAMPLERS = {
    "examples": "seeded random examples (random.Random(seed).sample over example indices)",
    "dialogues": "whole dialogues in seeded order (sorted ids shuffled by random.Random(seed)); "
    "the last one cut to its first turns to make exactly n",
}


def sample_examples(examples: Sequence[Example], n: int | None, seed: int) -> list[Example]:
    """n examples drawn at random (seeded), in their original order; all when n is None."""
    if n is None or n >= len(examples):
        return list(examples)
    keep = sorted(random.Random(seed).sample(range(len(examples)), n))
    return [examples[i] for i in keep]


def sample_dialogues(examples: Sequence[Example], n: int | None, seed: int) -> list[Example]:
    """n examples made of whole dialogues (seeded order of the sorted dialogue ids), in their
    original order; the last dialogue taken gives its lowest turns. All when n is None."""
    if n is None or n >= len(examples):
        return list(examples)
    by_dialogue: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        by_dialogue.setdefault(ex.dialog_id, []).append(i)
    ids = sorted(by_dialogue)
    random.Random(seed).shuffle(ids)
    keep: list[int] = []
    for dialog_id in ids:
        if len(keep) >= n:
            break
        members = sorted(by_dialogue[dialog_id], key=lambda i: examples[i].turn)
        keep += members[: n - len(keep)]
    return [examples[i] for i in sorted(keep)]
