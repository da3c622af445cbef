"""Tokenisation, normalisation and token-level F1, defined exactly as the docs say.

`normalize_answer` is ParlAI's (parlai/core/metrics.py): lower-case, ASCII punctuation to
spaces, the articles a/an/the removed as whole words, whitespace collapsed.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache
from importlib import resources

_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """ParlAI's normalisation: lower, punctuation -> space, drop a/an/the, collapse spaces."""
    text = text.lower()
    text = _PUNCTUATION.sub(" ", text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


# Hex digits of sha256 kept per example: enough to tell two references apart, no text.
REFERENCE_SHA_DIGITS = 16


def reference_sha(text: str) -> str:
    """The first 16 hex digits of sha256 of a reference's exact text (UTF-8): stored with each
    example's scores (`reference_sha`) so compare can check that two runs scored the same
    references, not only the same ids, without keeping the text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:REFERENCE_SHA_DIGITS]


def normalized_tokens(text: str) -> list[str]:
    return normalize_answer(text).split()


def whitespace_tokens(text: str) -> list[str]:
    """Plain `str.split()` tokens: no lower-casing, punctuation kept attached."""
    return text.split()


def token_f1(pred_tokens: Sequence[str], ref_tokens: Sequence[str]) -> float:
    """Unigram F1 with multiset overlap (ParlAI's _prec_recall_f1_score), in [0, 1].

    Empty prediction, empty reference or no common token: 0.
    """
    if not pred_tokens or not ref_tokens:
        return 0.0
    common = Counter(pred_tokens) & Counter(ref_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


@lru_cache(maxsize=1)
def stop_words() -> frozenset[str]:
    """The English stop-word list shipped in metrics/resources/stopwords_en.txt.

    Entries are in normalised form (contraction pieces such as "don" / "t" included, because
    normalisation turns "don't" into "don t").
    """
    text = (
        resources.files("spt_bench.metrics")
        .joinpath("resources/stopwords_en.txt")
        .read_text("utf-8")
    )
    words = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            words.update(line.split())
    return frozenset(words)


def content_tokens(text: str) -> list[str]:
    """Normalised tokens with the shipped stop words removed (used by persona_f1)."""
    sw = stop_words()
    return [t for t in normalized_tokens(text) if t not in sw]


@lru_cache(maxsize=65536)
def _content_counts(text: str) -> tuple[Counter, int]:
    # persona sentences repeat on every turn of a dialogue: normalise each once
    tokens = content_tokens(text)
    return Counter(tokens), len(tokens)


def _f1_from_counts(pred: Counter, n_pred: int, ref: Counter, n_ref: int) -> float:
    if not n_pred or not n_ref:
        return 0.0
    num_same = sum((pred & ref).values())
    if num_same == 0:
        return 0.0
    precision, recall = num_same / n_pred, num_same / n_ref
    return 2 * precision * recall / (precision + recall)


def persona_f1(prediction: str, persona: Iterable[str]) -> float:
    """Best content-token F1 of `prediction` against any one persona sentence, in [0, 1]."""
    pred = content_tokens(prediction)
    if not pred:
        return 0.0
    pred_counts = Counter(pred)
    return max(
        (_f1_from_counts(pred_counts, len(pred), *_content_counts(p)) for p in persona),
        default=0.0,
    )


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return list(zip(*(tokens[i:] for i in range(n)), strict=False)) if n > 0 else []
