"""One tiny-random model per test session: `tiny_random()` hands out a fresh copy of it.

Loading tiny-random costs about a second (the SmolLM2 tokenizer, then the whole vocabulary
decoded once for the decoder's stop-token sets) against a few milliseconds for a copy of its
3M weights. The copy's weights are `load_backbone("tiny-random", seed=...)`'s bit for bit
(the model is built from a seed; test_models checks it); the tokenizer and the stop-token sets
are shared, read-only, by every copy. Tests that check loading itself call `load_backbone`.
"""

from __future__ import annotations

import copy
import dataclasses

from spt_bench.models import Backbone, load_backbone, stop_tokens

_LOADED: dict[tuple[int, str | None], Backbone] = {}


def tiny_random(seed: int = 0, device: str | None = None) -> Backbone:
    """A fresh `load_backbone("tiny-random", seed=seed, device=device)` (its own weights)."""
    key = (seed, device)
    if key not in _LOADED:
        backbone = load_backbone("tiny-random", seed=seed, device=device)
        stop_tokens(backbone)  # the vocabulary is decoded once, here
        _LOADED[key] = backbone
    source = _LOADED[key]
    return dataclasses.replace(source, model=copy.deepcopy(source.model))
