"""Persona similarity for the contrastive loss: sacrebleu sentence BLEU, cached per pair."""

from __future__ import annotations

import pytest

from spt_bench.spt.persona_sim import PersonaSimilarity

CATS = ("i like cats .", "i have two dogs .", "i live in a big city .")
CATS_2 = ("i like cats .", "i have two dogs .", "i work as a nurse .")
FARM = ("my father owns a farm .", "i drive a red truck .")


def test_bleu_is_the_mean_of_both_directions_of_sacrebleu_sentence_bleu() -> None:
    import sacrebleu

    sim = PersonaSimilarity()
    a, b = " ".join(CATS), " ".join(FARM)
    expected = (sacrebleu.sentence_bleu(a, [b]).score + sacrebleu.sentence_bleu(b, [a]).score) / 2
    assert sim.bleu(CATS, FARM) == pytest.approx(expected)
    assert sim.bleu(FARM, CATS) == sim.bleu(CATS, FARM)
    assert sim.bleu(CATS, CATS) == 100.0


def test_similarity_targets_follow_the_threshold() -> None:
    sim = PersonaSimilarity(threshold=20.0)
    assert sim.bleu(CATS, CATS_2) > 20 > sim.bleu(CATS, FARM)
    # pairs (0,1), (0,2), (1,2)
    assert sim.pair_targets([CATS, CATS_2, FARM]) == [1, -1, -1]
    strict = PersonaSimilarity(threshold=99.0)
    assert strict.pair_targets([CATS, CATS_2, CATS]) == [-1, 1, -1]


def test_each_unordered_persona_pair_is_scored_once() -> None:
    sim = PersonaSimilarity()
    batch = [CATS, CATS_2, FARM, CATS]
    first = sim.pair_targets(batch)
    calls = sim.bleu_calls
    assert len(sim) == 3 and calls == 6  # 3 distinct pairs x 2 directions; identical pair free
    for _ in range(5):
        assert sim.pair_targets(batch) == first
        assert sim.pair_targets(list(reversed(batch))) == PersonaSimilarity().pair_targets(
            list(reversed(batch))
        )
    assert sim.bleu_calls == calls
