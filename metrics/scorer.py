"""score_predictions: every metric, overall, per turn, with bootstrap intervals.

Heavy libraries (sacrebleu, rouge-score, bert-score/torch) are imported inside the functions
that use them, so `import metrics` stays cheap.
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from spt_bench.metrics.bertscore import BertScoreOptions, compute_bertscore, resolve_encoder
from spt_bench.metrics.bootstrap import bootstrap_ci
from spt_bench.metrics.model_scores import ModelScoring, add_model_scores, check_scoring
from spt_bench.metrics.predictions import validate_rows
from spt_bench.metrics.registry import HITS_KS, METRICS
from spt_bench.metrics.table import ScoreTable, nltk_bleu_stats
from spt_bench.metrics.text import (
    normalized_tokens,
    persona_f1,
    reference_sha,
    token_f1,
    whitespace_tokens,
)
from spt_bench.metrics.turns import RULE_TEXT, min_bucket_size, turn_buckets

_CARRIED_FIELDS = ("dialog_id", "turn")  # plus the methods' carried row fields


def carried_fields() -> tuple[str, ...]:
    """Prediction-row fields copied into each per-example row: the dialogue position and the
    row fields a registered method marks `carry` (spt_bench.methods.RowField)."""
    from spt_bench.methods import carried_row_fields

    return (*_CARRIED_FIELDS, *carried_row_fields())


@dataclass
class ScoreReport:
    """The scorer's result. `to_json()` is the metrics.json / `score --json` contract."""

    overall: dict[str, float]
    ci95: dict[str, tuple[float, float]]
    by_turn: dict[str, dict[str, float]]  # label -> {metric: value, "n": count}
    by_turn_ci95: dict[str, dict[str, tuple[float, float]]]
    n: int
    bertscore_model: str | None
    bertscore_layer: int | None
    bertscore_idf: bool | None
    per_example: list[dict] = field(repr=False)
    scorer: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage; not in JSON
    # model-based instruments: {"instruments": {...}, "calibration": {metric: {...}}} or {}
    model_scores: dict = field(default_factory=dict)

    @property
    def metric_names(self) -> list[str]:
        return list(self.overall)

    def to_json(self) -> dict:
        return {
            "overall": dict(self.overall),
            "ci95": {m: [lo, hi] for m, (lo, hi) in self.ci95.items()},
            "by_turn": {t: dict(v) for t, v in self.by_turn.items()},
            "by_turn_ci95": {
                t: {m: [lo, hi] for m, (lo, hi) in ci.items()}
                for t, ci in self.by_turn_ci95.items()
            },
            "bertscore_model": self.bertscore_model,
            "bertscore_layer": self.bertscore_layer,
            "bertscore_idf": self.bertscore_idf,
            "n": self.n,
            "metrics_meta": METRICS.meta(self.metric_names),
            "scorer": dict(self.scorer),
            **{k: v for k, v in self.model_scores.items() if v},
        }


def score_predictions(
    rows: Sequence[dict],
    *,
    bertscore: BertScoreOptions | None = BertScoreOptions(),
    n_resamples: int = 1000,
    seed: int = 0,
    by_turn: bool = True,
    model_scoring: ModelScoring | None = None,
) -> ScoreReport:
    """Score predictions against references with every registered metric that applies.

    rows: dicts with id, reference, prediction (+ optional fields, see metrics.predictions).
    bertscore: None skips BERTScore (never reported as zeros). n_resamples=0 skips intervals.
    by_turn needs a `turn` on the rows; without one the per-turn analysis is empty.
    model_scoring: the NLI C-score and/or LLM judge with their calibration (metrics.model_scores).
    """
    if n_resamples < 0:
        raise ValueError("n_resamples must be >= 0")
    if bertscore is not None:
        resolve_encoder(bertscore)  # configuration errors before any work
    scorers = check_scoring(model_scoring) if model_scoring is not None else None
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    rows = validate_rows(rows)
    per_example = _per_example_scores(rows)
    timings["text_metrics"] = time.perf_counter() - t0

    encoder = None
    if bertscore is not None:
        t = time.perf_counter()
        preds = [r["prediction"] for r in rows]
        refs = [r["reference"] for r in rows]
        p, r, f, encoder = compute_bertscore(preds, refs, bertscore)
        for ex, pv, rv, fv in zip(per_example, p, r, f, strict=True):
            ex["bertscore_p"], ex["bertscore_r"], ex["bertscore_f1"] = (
                100.0 * float(pv),
                100.0 * float(rv),
                100.0 * float(fv),
            )
        timings["bertscore"] = time.perf_counter() - t

    model_scores: dict = {}
    if model_scoring is not None and scorers:
        t = time.perf_counter()
        model_scores = add_model_scores(
            rows, per_example, model_scoring, n_resamples=n_resamples, seed=seed, scorers=scorers
        )
        timings["model_scores"] = time.perf_counter() - t

    t = time.perf_counter()
    table = ScoreTable.from_per_example(per_example)
    overall = table.point()
    ci95 = bootstrap_ci(table, n_resamples, seed)
    timings["overall_and_ci"] = time.perf_counter() - t

    t = time.perf_counter()
    turns_by_bucket: dict[str, dict[str, float]] = {}
    turns_ci: dict[str, dict[str, tuple[float, float]]] = {}
    if by_turn and table.turns is not None:
        for k, (label, index) in enumerate(turn_buckets(table.turns)):
            sub = table.take(index)
            turns_by_bucket[label] = {**sub.point(), "n": len(index)}
            turns_ci[label] = bootstrap_ci(sub, n_resamples, [seed, k + 1])
    timings["by_turn"] = time.perf_counter() - t

    return ScoreReport(
        overall=overall,
        ci95=ci95,
        by_turn=turns_by_bucket,
        by_turn_ci95=turns_ci,
        n=len(rows),
        bertscore_model=encoder.label if encoder else None,
        bertscore_layer=encoder.layer if encoder else None,
        bertscore_idf=bertscore.idf if bertscore is not None else None,
        per_example=per_example,
        scorer=_scorer_settings(rows, n_resamples, seed, bertscore),
        timings=timings,
        model_scores=model_scores,
    )


def _per_example_scores(rows: list[dict]) -> list[dict]:
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import BLEU

    preds = [r["prediction"] for r in rows]
    refs = [r["reference"] for r in rows]
    # force=True only silences sacrebleu's "looks tokenised" warning (ConvAI2 text is
    # tokenised); it is not part of the signature and changes no number.
    bleu_stats = BLEU(force=True)._extract_corpus_statistics(preds, [refs])
    rouge = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    hits_fields = [f"hits@{k}" for k in HITS_KS if f"hits@{k}" in rows[0]]

    out = []
    carried = carried_fields()
    for row, stats in zip(rows, bleu_stats, strict=True):
        pred, ref = row["prediction"], row["reference"]
        pred_ws, ref_ws = whitespace_tokens(pred), whitespace_tokens(ref)
        rg = rouge.score(ref, pred)
        ex: dict = {"id": row["id"]}
        ex.update({k: row[k] for k in carried if k in row})
        ex["reference_sha"] = reference_sha(ref)  # text-free: compare checks references match
        ex["prediction"] = pred
        ex["f1"] = 100.0 * token_f1(normalized_tokens(pred), normalized_tokens(ref))
        ex["f1_raw"] = 100.0 * token_f1(pred_ws, ref_ws)
        ex["rouge1"] = 100.0 * rg["rouge1"].fmeasure
        ex["rouge2"] = 100.0 * rg["rouge2"].fmeasure
        ex["rougeL"] = 100.0 * rg["rougeL"].fmeasure
        ex["avg_len"] = float(len(pred_ws))
        if "persona" in row:
            ex["persona_f1"] = 100.0 * persona_f1(pred, row["persona"])
        for h in hits_fields:
            ex[h] = 100.0 * row[h]
        if "ref_nll_sum" in row:
            ex["ref_nll_sum"] = float(row["ref_nll_sum"])
            ex["ref_n_tokens"] = int(row["ref_n_tokens"])
        ex["bleu_stats"] = [int(x) for x in stats]
        ex["nltk_bleu_stats"] = nltk_bleu_stats(pred_ws, ref_ws)
        out.append(ex)
    return out


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _scorer_settings(
    rows: list[dict], n_resamples: int, seed: int, bertscore: BertScoreOptions | None
) -> dict:
    from sacrebleu.metrics import BLEU

    probe = BLEU(force=True)
    probe.corpus_score([rows[0]["prediction"]], [[rows[0]["reference"]]])
    versions = {d: _version(d) for d in ("sacrebleu", "rouge-score", "numpy")}
    if bertscore is not None:
        versions.update({d: _version(d) for d in ("bert-score", "transformers", "torch")})
    return {
        "ci": (
            f"95% percentile bootstrap over examples, {n_resamples} resamples, seed {seed}; "
            "dist1/dist2 from the drawn subsets with delete-d jackknife scaling"
        ),
        "n_resamples": n_resamples,
        "seed": seed,
        "turn_buckets": RULE_TEXT,
        "min_turn_bucket": min_bucket_size(len(rows)),
        "sacrebleu_signature": str(probe.get_signature()),
        "bleu12": "nltk corpus_bleu definition on whitespace tokens, SmoothingFunction().method1",
        "rouge": "rouge-score F-measure, use_stemmer=False, default tokenizer",
        "n_empty_predictions": sum(1 for r in rows if not r["prediction"].strip()),
        "versions": versions,
    }
