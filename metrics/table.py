"""Per-example scores and sufficient statistics, and every metric as a function of them.

A `ScoreTable` holds, for N examples, the per-example metric values and the statistics the
corpus-level metrics need (BLEU n-gram match/total counts and lengths, distinct-n n-gram ids,
NLL sums). `evaluate(weights)` computes every metric for R weightings of the examples at once:
weights = ones gives the point estimate; a bootstrap resample is the count of times each
example was drawn. So the bootstrap never re-runs a scoring library, it only re-sums.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from spt_bench.metrics.registry import HITS_KS, METRICS
from spt_bench.metrics.text import ngrams

SACREBLEU_ORDER = 4
NLTK_ORDERS = (1, 2)  # BLEU-1 and BLEU-2
NLTK_EPSILON = 0.1  # nltk SmoothingFunction().method1: 0 matches -> (0 + 0.1) / total
DISTINCT_ORDERS = (1, 2)

# Per-example metrics computed from text (bertscore_*, persona_f1, hits@k only when available).
TEXT_EXAMPLE_METRICS = ("f1", "f1_raw", "rouge1", "rouge2", "rougeL", "avg_len")
BERTSCORE_METRICS = ("bertscore_p", "bertscore_r", "bertscore_f1")
HITS_METRICS = tuple(f"hits@{k}" for k in HITS_KS)


def nltk_bleu_stats(pred_tokens: Sequence[str], ref_tokens: Sequence[str]) -> list[int]:
    """[hyp_len, ref_len, matches_1, denom_1, matches_2, denom_2] as nltk.corpus_bleu sums them.

    Matches are clipped n-gram counts; the denominator is max(1, hypothesis n-grams), exactly
    nltk's modified_precision (so a too-short hypothesis still adds 1 to the denominator).
    """
    out = [len(pred_tokens), len(ref_tokens)]
    for n in NLTK_ORDERS:
        hyp = Counter(ngrams(pred_tokens, n))
        ref = Counter(ngrams(ref_tokens, n))
        matches = sum(min(c, ref[g]) for g, c in hyp.items() if g in ref)
        out += [matches, max(1, sum(hyp.values()))]
    return out


def nltk_corpus_bleu(stats: np.ndarray, order: int) -> np.ndarray:
    """nltk corpus_bleu with uniform weights over orders 1..`order` and smoothing method1.

    `stats`: [R, 6] summed nltk_bleu_stats. Returns R values in [0, 1].
    """
    stats = np.asarray(stats, dtype=np.float64)
    hyp_len, ref_len = stats[:, 0], stats[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        bp = np.where(
            hyp_len > ref_len,
            1.0,
            np.where(hyp_len == 0, 0.0, np.exp(1.0 - ref_len / np.maximum(hyp_len, 1))),
        )
        log_sum = np.zeros(len(stats))
        for i in range(order):
            num, den = stats[:, 2 + 2 * i], stats[:, 3 + 2 * i]
            p = np.where(num == 0, NLTK_EPSILON / den, num / den)
            log_sum += np.log(p) / order
    value = bp * np.exp(log_sum)
    return np.where(stats[:, 2] == 0, 0.0, value)  # nltk: no unigram match -> 0


def sacrebleu_from_stats(stats: np.ndarray) -> np.ndarray:
    """sacrebleu corpus BLEU (default settings) from summed segment statistics, 0..100."""
    from sacrebleu.metrics import BLEU

    stats = np.rint(np.asarray(stats, dtype=np.float64)).astype(np.int64)
    k = SACREBLEU_ORDER
    out = np.empty(len(stats))
    for i, row in enumerate(stats.tolist()):
        out[i] = BLEU.compute_bleu(
            correct=row[2 : 2 + k],
            total=row[2 + k :],
            sys_len=row[0],
            ref_len=row[1],
            smooth_method="exp",
            effective_order=False,
            max_ngram_order=k,
        ).score
    return out


@dataclass
class DistinctIndex:
    """n-gram ids of every prediction, laid out so unique counts of any subset are cheap.

    An n-gram found in one example only is present exactly when that example is selected, so
    those are counted per example (`singles`, a matrix product). The others ("shared") are kept
    as (example, n-gram) pairs sorted by n-gram; a shared n-gram is present when any of its
    examples is selected: a logical-or over its run of pairs.
    """

    n: int
    totals: np.ndarray  # [N] n-gram count per example, repeats included
    singles: np.ndarray  # [N] distinct n-grams found in this example only
    shared_owner: np.ndarray  # [P] example of each (example, shared n-gram) pair, by n-gram
    shared_starts: np.ndarray  # [S] first position of each shared n-gram's run
    n_distinct: int

    @classmethod
    def build(cls, token_lists: Sequence[Sequence[str]], n: int) -> DistinctIndex:
        vocab: dict[tuple[str, ...], int] = {}
        id_sets: list[list[int]] = []
        totals = np.zeros(len(token_lists), dtype=np.float64)
        for e, tokens in enumerate(token_lists):
            grams = ngrams(tokens, n)
            totals[e] = len(grams)
            id_sets.append([vocab.setdefault(g, len(vocab)) for g in set(grams)])
        return cls.from_id_sets(id_sets, totals, n)

    @classmethod
    def from_id_sets(
        cls, id_sets: Sequence[Sequence[int]], totals: Sequence[float], n: int
    ) -> DistinctIndex:
        """From each example's distinct n-gram ids (any run-local numbering) and n-gram count
        with repeats: all distinct-n needs, so a text-free score file can carry it."""
        ids: list[int] = []
        owners: list[int] = []
        for e, example_ids in enumerate(id_sets):
            ids.extend(int(i) for i in set(example_ids))
            owners.extend([e] * len(set(example_ids)))
        id_arr = np.asarray(ids, dtype=np.int64)
        owner_arr = np.asarray(owners, dtype=np.int64)
        n_vocab = int(id_arr.max()) + 1 if len(id_arr) else 0
        doc_freq = np.bincount(id_arr, minlength=n_vocab)
        single = doc_freq[id_arr] == 1
        singles = np.bincount(owner_arr[single], minlength=len(id_sets)).astype(np.float64)
        shared_ids = id_arr[~single]
        order = np.argsort(shared_ids, kind="stable")
        shared_ids = shared_ids[order]
        shared_owner = owner_arr[~single][order]
        if len(shared_ids):
            starts = np.flatnonzero(np.r_[True, shared_ids[1:] != shared_ids[:-1]])
        else:
            starts = np.zeros(0, dtype=np.int64)
        n_distinct = int(np.count_nonzero(doc_freq))
        totals_arr = np.asarray(totals, dtype=np.float64)
        return cls(n, totals_arr, singles, shared_owner, starts, n_distinct)

    def unique_counts(self, selected: np.ndarray) -> np.ndarray:
        """[R] number of distinct n-grams among the selected examples of each row."""
        counts = selected.astype(np.float64) @ self.singles
        if len(self.shared_starts):
            by_example = np.ascontiguousarray(selected.T)  # [N, R]: row gathers are memcpy
            present = np.logical_or.reduceat(
                by_example[self.shared_owner], self.shared_starts, axis=0
            )
            counts += present.sum(axis=0)
        return counts


@dataclass
class ScoreTable:
    """N examples' per-example values and sufficient statistics (see module docstring)."""

    ids: list[str]
    turns: list[int] | None
    values: dict[str, np.ndarray]  # per-example metric values, already in reported scale
    bleu_stats: np.ndarray  # [N, 2 + 2*4] sacrebleu: hyp_len, ref_len, correct_1..4, total_1..4
    nltk_stats: np.ndarray  # [N, 6] see nltk_bleu_stats
    pred_tokens: list[list[str]] | None  # None when read from a text-free score file
    ppl_stats: np.ndarray | None = None  # [N, 2] ref_nll_sum, ref_n_tokens
    # text-free distinct-n statistics: {n: ([N] n-gram counts, per-example distinct ids)}
    ngram_sets: dict[int, tuple[np.ndarray, list[list[int]]]] | None = None
    _distinct: dict[int, DistinctIndex] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_per_example(cls, rows: Sequence[dict]) -> ScoreTable:
        """Rebuild from ScoreReport.per_example rows (example_scores.jsonl) or from the rows of
        a text-free score file (example_stats.jsonl: n-gram ids instead of the prediction)."""
        if not rows:
            raise ValueError("no examples")
        textfree = "prediction" not in rows[0]
        present = [m for m in _EXAMPLE_METRIC_ORDER if m in rows[0]]
        values = {m: np.asarray([r[m] for r in rows], dtype=np.float64) for m in present}
        has_ppl = "ref_nll_sum" in rows[0]
        return cls(
            ids=[str(r["id"]) for r in rows],
            turns=[int(r["turn"]) for r in rows] if "turn" in rows[0] else None,
            values=values,
            bleu_stats=np.asarray([r["bleu_stats"] for r in rows], dtype=np.float64),
            nltk_stats=np.asarray([r["nltk_bleu_stats"] for r in rows], dtype=np.float64),
            pred_tokens=None if textfree else [r["prediction"].split() for r in rows],
            ppl_stats=(
                np.asarray([[r["ref_nll_sum"], r["ref_n_tokens"]] for r in rows], dtype=float)
                if has_ppl
                else None
            ),
            ngram_sets=(
                {
                    n: (
                        np.asarray([r[f"ngrams{n}"][0] for r in rows], dtype=np.float64),
                        [list(r[f"ngrams{n}"][1]) for r in rows],
                    )
                    for n in DISTINCT_ORDERS
                }
                if textfree
                else None
            ),
        )

    def textfree_ngrams(self) -> list[dict[str, list]]:
        """Per example {"ngrams<n>": [count with repeats, sorted distinct ids]}: distinct-n's
        sufficient statistics without the text (ids numbered by first occurrence in this run)."""
        out: list[dict[str, list]] = [{} for _ in self.ids]
        for n in DISTINCT_ORDERS:
            if self.ngram_sets is not None:
                totals, id_sets = self.ngram_sets[n]
                for e, (t, ids) in enumerate(zip(totals, id_sets, strict=True)):
                    out[e][f"ngrams{n}"] = [int(t), sorted(int(i) for i in set(ids))]
                continue
            vocab: dict[tuple[str, ...], int] = {}
            for e, tokens in enumerate(self.pred_tokens or []):
                grams = ngrams(tokens, n)
                ids = {vocab.setdefault(g, len(vocab)) for g in grams}
                out[e][f"ngrams{n}"] = [len(grams), sorted(ids)]
        return out

    def metric_names(self) -> list[str]:
        """The metrics this table can report, in registry order."""
        available = set(self.values) | {"bleu", "bleu1", "bleu2", "dist1", "dist2"}
        if self.ppl_stats is not None:
            available.add("ppl")
        return [m.name for m in METRICS if m.name in available]

    def take(self, index: np.ndarray) -> ScoreTable:
        index = np.asarray(index, dtype=np.int64)
        return ScoreTable(
            ids=[self.ids[i] for i in index],
            turns=[self.turns[i] for i in index] if self.turns is not None else None,
            values={m: v[index] for m, v in self.values.items()},
            bleu_stats=self.bleu_stats[index],
            nltk_stats=self.nltk_stats[index],
            pred_tokens=(
                [self.pred_tokens[i] for i in index] if self.pred_tokens is not None else None
            ),
            ppl_stats=self.ppl_stats[index] if self.ppl_stats is not None else None,
            ngram_sets=(
                {
                    n: (totals[index], [ids[i] for i in index])
                    for n, (totals, ids) in self.ngram_sets.items()
                }
                if self.ngram_sets is not None
                else None
            ),
        )

    def distinct_index(self, n: int) -> DistinctIndex:
        if n not in self._distinct:
            if self.pred_tokens is not None:
                self._distinct[n] = DistinctIndex.build(self.pred_tokens, n)
            elif self.ngram_sets is not None:
                totals, id_sets = self.ngram_sets[n]
                self._distinct[n] = DistinctIndex.from_id_sets(id_sets, totals, n)
            else:
                raise ValueError("score table has neither predictions nor n-gram statistics")
        return self._distinct[n]

    def evaluate(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Every metric under R example weightings: weights [R, N] -> {metric: [R]}.

        Example-level metrics are weighted means; BLEU and perplexity are recomputed from
        weighted sums of sufficient statistics; distinct-n from the set of examples with
        weight > 0, each counted once.
        """
        weights = np.asarray(weights, dtype=np.float64)
        wsum = weights.sum(axis=1)
        out: dict[str, np.ndarray] = {}
        if self.values:
            names = list(self.values)
            means = weights @ np.stack([self.values[m] for m in names], axis=1) / wsum[:, None]
            out.update({m: means[:, i] for i, m in enumerate(names)})
        out["bleu"] = sacrebleu_from_stats(weights @ self.bleu_stats)
        nltk_sums = weights @ self.nltk_stats
        out["bleu1"] = 100.0 * nltk_corpus_bleu(nltk_sums, 1)
        out["bleu2"] = 100.0 * nltk_corpus_bleu(nltk_sums, 2)
        # distinct-n over the examples with weight > 0, each once: a repeated bootstrap draw
        # repeats text, it adds no new n-grams, so it must not dilute the ratio (bootstrap.py
        # turns these subset values into an interval by delete-d jackknife scaling).
        selected = weights > 0
        for n in DISTINCT_ORDERS:
            index = self.distinct_index(n)
            total = selected @ index.totals
            unique = index.unique_counts(selected)
            with np.errstate(divide="ignore", invalid="ignore"):
                out[f"dist{n}"] = np.where(total > 0, 100.0 * unique / total, 0.0)
        if self.ppl_stats is not None:
            sums = weights @ self.ppl_stats
            out["ppl"] = np.exp(sums[:, 0] / sums[:, 1])
        return {m: out[m] for m in self.metric_names()}

    def point(self) -> dict[str, float]:
        values = self.evaluate(np.ones((1, len(self))))
        return {m: float(v[0]) for m, v in values.items()}


_EXAMPLE_METRIC_ORDER = [m.name for m in METRICS if m.level == "example"]
