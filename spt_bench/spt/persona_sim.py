"""Persona similarity for SPT's context-prompt contrastive loss, computed once per persona pair.

Two personas are "similar" when the sentence BLEU between them (sacrebleu, effective order,
persona sentences joined by spaces) exceeds a threshold (authors: 20). BLEU is asymmetric (its
brevity penalty depends on which side is the hypothesis), so we use the mean of both directions:
similarity is then a property of the pair, independent of the order the examples appear in a
batch, and can be cached per unordered pair. Identical personas score 100 without a BLEU call.

The cache is filled lazily as pairs first meet in a training batch: a training run pays one
pair of BLEU calls per distinct persona pair, not B^2 per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Persona = tuple[str, ...]


class PersonaSimilarity:
    """Cached BLEU similarity between personas (tuples of sentences)."""

    def __init__(self, threshold: float = 20.0) -> None:
        self.threshold = float(threshold)
        self._bleu: dict[tuple[Persona, Persona], float] = {}
        self._scorer: Any = None
        self.bleu_calls = 0

    def __len__(self) -> int:
        """Number of cached persona pairs."""
        return len(self._bleu)

    def bleu(self, a: Persona, b: Persona) -> float:
        """Symmetric sentence BLEU (0-100) between two personas, cached per unordered pair."""
        a, b = tuple(a), tuple(b)
        if a == b:
            return 100.0
        key = (a, b) if a <= b else (b, a)
        score = self._bleu.get(key)
        if score is None:
            text_a, text_b = " ".join(key[0]), " ".join(key[1])
            score = 0.5 * (
                self._sentence_bleu(text_a, text_b) + self._sentence_bleu(text_b, text_a)
            )
            self._bleu[key] = score
        return score

    def similar(self, a: Persona, b: Persona) -> bool:
        return self.bleu(a, b) > self.threshold

    def pair_targets(self, personas: Sequence[Persona]) -> list[int]:
        """+1/-1 targets for every pair i < j (row-major, as torch.triu_indices(B, B, 1))."""
        n = len(personas)
        return [
            1 if self.similar(personas[i], personas[j]) else -1
            for i in range(n)
            for j in range(i + 1, n)
        ]

    def _sentence_bleu(self, hypothesis: str, reference: str) -> float:
        if self._scorer is None:
            from sacrebleu.metrics import BLEU

            self._scorer = BLEU(effective_order=True)
        self.bleu_calls += 1
        return float(self._scorer.sentence_score(hypothesis, [reference]).score)
