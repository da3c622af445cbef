"""Hits@k candidates: the dataset's own (ConvAI2 with-candidates files) or synthetic ones
drawn by a documented, seeded protocol (docs/model-metrics.md)."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from spt_bench.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from spt_bench.data.example import Example

CANDIDATE_MODES = ("auto", "dataset", "synthetic")
SYNTHETIC_PROTOCOL = (
    "N-1 distractors per example, drawn without replacement from the distinct responses of "
    "other dialogues in the pool, never equal to the true response (case and whitespace "
    "ignored); random.Random(f'{seed}:{example.id}'), so fixed per example id, seed and pool"
)


@dataclass(frozen=True)
class CandidateSet:
    """The texts ranked for one example; `texts[gold]` is the true response."""

    texts: tuple[str, ...]
    gold: int


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def dataset_candidates(example: Example) -> CandidateSet:
    """The example's own candidates (ConvAI2 lists the true one last); the true response is the
    candidate equal to the reference (whitespace-insensitive)."""
    texts = tuple(example.candidates)
    if not texts:
        raise ConfigError(f"example {example.id} has no candidates in the data file")
    ref = " ".join(example.response.split())
    matches = [i for i, c in enumerate(texts) if " ".join(c.split()) == ref]
    if not matches:
        raise ConfigError(
            f"example {example.id}: its candidates do not include the reference response "
            f"{example.response!r}, so hits@k cannot be computed from them"
        )
    return CandidateSet(texts, matches[-1])


def synthetic_candidates(
    examples: Sequence[Example],
    n_candidates: int = 20,
    *,
    seed: int = 0,
    pool: Iterable[Example] | None = None,
) -> dict[str, CandidateSet]:
    """Synthetic candidate sets for examples whose data has none (issue 7's documented protocol).

    The pool is the distinct responses (compared case- and whitespace-insensitively) of `pool`
    (default: `examples` themselves), sorted, each remembering which dialogues it occurs in.
    For an example, a distractor must occur in some *other* dialogue and must not equal the true
    response. N-1 of them are drawn without replacement with
    ``random.Random(f"{seed}:{example.id}")``, so an example's candidates depend only on the
    seed, its id and the pool (not on the order or subset of examples being scored). The true
    response goes last, as in ConvAI2's files.
    """
    if n_candidates < 2:
        raise ConfigError(f"n_candidates must be >= 2, got {n_candidates}")
    pool_examples = list(examples if pool is None else pool)
    dialogues_of: dict[str, set[str]] = {}
    text_of: dict[str, str] = {}
    for ex in pool_examples:
        key = _norm(ex.response)
        if not key:
            continue
        dialogues_of.setdefault(key, set()).add(ex.dialog_id)
        text = ex.response.strip()  # the smallest spelling represents them all (order-free)
        text_of[key] = min(text_of.get(key, text), text)
    keys = sorted(dialogues_of)
    only_in: dict[str, set[str]] = {}  # dialogue -> responses that occur in no other dialogue
    for key in keys:
        ds = dialogues_of[key]
        if len(ds) == 1:
            only_in.setdefault(next(iter(ds)), set()).add(key)
    need = n_candidates - 1
    out: dict[str, CandidateSet] = {}
    for ex in examples:
        truth = _norm(ex.response)
        excluded = only_in.get(ex.dialog_id, set())
        n_excluded = len(excluded) + (1 if truth in dialogues_of and truth not in excluded else 0)
        eligible = len(keys) - n_excluded
        if eligible < need:
            raise ConfigError(
                f"synthetic hits@k candidates: example {ex.id} needs {need} distractors from "
                f"other dialogues but the pool has only {eligible}; lower --hits-candidates, "
                f"use more dialogues or --no-model-metrics"
            )
        rng = random.Random(f"{seed}:{ex.id}")

        def ok(key: str, ex: Example = ex, truth: str = truth) -> bool:
            return key != truth and bool(dialogues_of[key] - {ex.dialog_id})

        if eligible <= 4 * need:  # small pool: sample from the explicit list
            chosen = rng.sample([k for k in keys if ok(k)], need)
        else:  # large pool: rejection sampling touches ~need entries instead of the whole pool
            picked: list[str] = []
            seen: set[int] = set()
            while len(picked) < need:
                i = rng.randrange(len(keys))
                if i in seen:
                    continue
                seen.add(i)
                if ok(keys[i]):
                    picked.append(keys[i])
            chosen = picked
        texts = tuple(text_of[k] for k in chosen) + (ex.response.strip(),)
        out[ex.id] = CandidateSet(texts, len(texts) - 1)
    return out


def resolve_candidate_mode(examples: Sequence[Example], mode: str = "auto") -> str:
    """ "dataset" when every example has candidates, "synthetic" when none has; "auto" refuses a
    mix (scores from two protocols would be averaged together)."""
    if mode not in CANDIDATE_MODES:
        raise ConfigError(f"candidates must be one of {', '.join(CANDIDATE_MODES)}, got {mode!r}")
    with_cands = sum(1 for ex in examples if ex.candidates)
    if mode == "dataset":
        if with_cands != len(examples):
            missing = next(ex.id for ex in examples if not ex.candidates)
            raise ConfigError(
                f"candidates='dataset': example {missing} has no candidates in the data"
            )
        return "dataset"
    if mode == "synthetic" or with_cands == 0:
        return "synthetic"
    if with_cands == len(examples):
        return "dataset"
    raise ConfigError(
        f"{with_cands} of {len(examples)} examples have dataset candidates and the others none; "
        "choose one protocol for all (candidates='synthetic')"
    )
