"""The metric registry: every metric spt-bench reports, with its direction and level.

The names are the user-facing contract (keys of metrics.json); the registry rejects duplicates so
two pieces of code can never silently define "f1" two ways.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

Level = Literal["example", "corpus"]


@dataclass(frozen=True)
class Metric:
    """One reported number.

    `level="example"`: the value is the mean of a per-example score (its bootstrap resamples
    per-example values); `level="corpus"`: the value is a function of corpus-wide sums (BLEU,
    distinct-n, perplexity), recomputed from per-example sufficient statistics on each resample.
    """

    name: str
    higher_is_better: bool | None  # None: descriptive, no better direction (avg_len)
    level: Level
    description: str
    scaled_x100: bool = True
    requires: str = ""  # row fields that must be present for the metric to be reported

    def __post_init__(self) -> None:
        if self.level not in ("example", "corpus"):
            raise ValueError(f"metric {self.name!r}: level must be 'example' or 'corpus'")


class MetricRegistry:
    """Ordered name -> Metric map that refuses to register a name twice."""

    def __init__(self) -> None:
        self._metrics: dict[str, Metric] = {}

    def register(self, metric: Metric) -> Metric:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name!r} is already registered")
        self._metrics[metric.name] = metric
        return metric

    def __getitem__(self, name: str) -> Metric:
        try:
            return self._metrics[name]
        except KeyError:
            raise KeyError(f"unknown metric {name!r}; known: {', '.join(self._metrics)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._metrics

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._metrics.values())

    def __len__(self) -> int:
        return len(self._metrics)

    def names(self) -> list[str]:
        return list(self._metrics)

    def meta(self, names: list[str] | None = None) -> dict[str, dict]:
        """{name: {"higher_is_better", "level"}} for metrics.json."""
        chosen = self.names() if names is None else names
        return {
            n: {"higher_is_better": self[n].higher_is_better, "level": self[n].level}
            for n in chosen
        }


METRICS = MetricRegistry()

# Hits@k fields a predictions row may carry (ranking over candidates, filled by the harness):
# defined with the score.hits_k setting that chooses among them.
from spt_bench.config import HITS_KS  # noqa: E402


def _register_builtin() -> None:
    r = METRICS.register
    r(Metric("f1", True, "example", "token F1 after ParlAI normalisation, mean over examples"))
    r(Metric("f1_raw", True, "example", "token F1 on raw whitespace tokens (SPT paper's F1)"))
    r(Metric("bleu", True, "corpus", "sacrebleu corpus BLEU, default settings (SPT paper's BLEU)"))
    r(Metric("bleu1", True, "corpus", "nltk corpus BLEU-1 on whitespace tokens, smoothing method1"))
    r(Metric("bleu2", True, "corpus", "nltk corpus BLEU-2 on whitespace tokens, smoothing method1"))
    r(Metric("rouge1", True, "example", "rouge-score ROUGE-1 F-measure, no stemming"))
    r(Metric("rouge2", True, "example", "rouge-score ROUGE-2 F-measure, no stemming"))
    r(Metric("rougeL", True, "example", "rouge-score ROUGE-L F-measure, no stemming"))
    r(Metric("bertscore_p", True, "example", "BERTScore precision (encoder in metrics.json)"))
    r(Metric("bertscore_r", True, "example", "BERTScore recall (encoder in metrics.json)"))
    r(Metric("bertscore_f1", True, "example", "BERTScore F1 (encoder in metrics.json)"))
    r(Metric("dist1", True, "corpus", "distinct unigrams / unigrams over all predictions"))
    r(Metric("dist2", True, "corpus", "distinct bigrams / bigrams over all predictions"))
    r(
        Metric(
            "avg_len",
            None,
            "example",
            "mean prediction length in whitespace tokens (descriptive: no better direction)",
            scaled_x100=False,
        )
    )
    r(
        Metric(
            "persona_f1",
            True,
            "example",
            "best normalised token F1 of the prediction against one persona sentence,"
            " stop words removed, mean over examples",
            requires="persona",
        )
    )
    r(
        Metric(
            "ppl",
            False,
            "corpus",
            "reference perplexity exp(sum nll / sum tokens)",
            scaled_x100=False,
            requires="ref_nll_sum,ref_n_tokens",
        )
    )


def _register_consistency() -> None:
    """The model-based instruments (metrics.nli, metrics.judge; docs/metrics.md "Persona
    consistency")."""
    r = METRICS.register
    r(
        Metric(
            "c_score",
            True,
            "example",
            "NLI consistency C = sum over persona sentences of +1 entailed / 0 / -1 contradicted"
            " (Madotto et al. 2019), mean over examples",
            scaled_x100=False,
            requires="persona",
        )
    )
    r(
        Metric(
            "c_entail_rate",
            True,
            "example",
            "share of responses entailing at least one persona sentence (NLI)",
            requires="persona",
        )
    )
    r(
        Metric(
            "c_contradict_rate",
            False,
            "example",
            "share of responses contradicting at least one persona sentence (NLI)",
            requires="persona",
        )
    )
    for criterion in ("consistency", "coherence"):
        r(
            Metric(
                f"judge_{criterion}",
                True,
                "example",
                f"LLM judge {criterion} 1..5, G-Eval probability-weighted mean, mean over examples",
                scaled_x100=False,
            )
        )


def _register_hits() -> None:
    for k in HITS_KS:
        METRICS.register(
            Metric(
                f"hits@{k}",
                True,
                "example",
                f"gold response ranked in the top {k}",
                requires=f"hits@{k}",
            )
        )


_register_builtin()
_register_consistency()
_register_hits()  # last: metrics.json and tables keep their column order
