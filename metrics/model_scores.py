"""Model-based per-example scores (NLI C-score, LLM judge) with their calibration controls.

`add_model_scores` scores the predictions, the gold references and the gold references
shuffled across dialogues (metrics.calibration) with each instrument the options ask for, puts
the predictions' scores into the per-example rows (so the usual CIs, turn tables, paired tests
and plots cover them), and returns what metrics.json records: each instrument's description
(model fingerprint, rubric hashes, engine) and its calibration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from spt_bench.errors import ConfigError
from spt_bench.metrics.calibration import RULE_TEXT, calibrate, shuffled_sources
from spt_bench.metrics.judge import JudgeOptions, JudgeScorer, metric_name
from spt_bench.metrics.nli import NliOptions, NliScorer
from spt_bench.metrics.score_cache import ScoreCache

CACHE_NAME = "model_scores.jsonl"  # in a run folder, or beside standalone scores


@dataclass(frozen=True)
class ModelScoring:
    """Which instruments to run; cache: the per-example score cache file (None: in memory)."""

    nli: NliOptions | None = None
    judge: JudgeOptions | None = None
    cache: str | Path | None = None

    @property
    def active(self) -> bool:
        return self.nli is not None or self.judge is not None


def scoring_from_config(score: object, cache: str | Path | None) -> ModelScoring | None:
    """ModelScoring from a ScoreConfig's consistency/nli_model/judge settings (None: none)."""
    bs = int(getattr(score, "model_score_batch_size", 16))
    nli = None
    if getattr(score, "consistency", None) == "nli":
        nli = NliOptions(getattr(score, "nli_model", None), batch_size=bs)
    judge_model = getattr(score, "judge", None)
    judge = (
        JudgeOptions(judge_model, getattr(score, "judge_engine", "hf"), bs) if judge_model else None
    )
    scoring = ModelScoring(nli, judge, cache)
    return scoring if scoring.active else None


def check_scoring(scoring: ModelScoring) -> list:
    """Create the scorers (configuration errors and a missing NLI model before any work)."""
    scorers: list = []
    if scoring.nli is not None:
        scorers.append(NliScorer.create(scoring.nli))
    if scoring.judge is not None:
        scorers.append(JudgeScorer.create(scoring.judge))
    return scorers


def add_model_scores(
    rows: Sequence[dict],
    per_example: list[dict],
    scoring: ModelScoring,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    scorers: list | None = None,
) -> dict:
    """Score `rows` (validated prediction rows) in place of `per_example`; returns
    {"instruments": {...}, "calibration": {metric: {...}}}."""
    if "persona" not in rows[0]:
        raise ConfigError("persona consistency scores need the persona on every row")
    scorers = scorers if scorers is not None else check_scoring(scoring)
    personas = [list(r["persona"]) for r in rows]
    histories = [list(r.get("history") or []) for r in rows]
    refs = [r["reference"] for r in rows]
    skipped: dict = {}
    sets = {"prediction": [r["prediction"] for r in rows]}
    try:  # the controls need another dialogue's reference for every example
        source = shuffled_sources([r.get("dialog_id") for r in rows], seed)
        sets.update(gold=refs, shuffled=[refs[j] for j in source])
    except ValueError as e:
        skipped = {"status": "not computed", "reason": str(e)}
    cache = ScoreCache(scoring.cache)
    instruments: dict = {}
    calibration: dict = {}
    for scorer in scorers:
        info = scorer.describe()
        if isinstance(scorer, NliScorer):
            got = {name: scorer.score(texts, personas, cache) for name, texts in sets.items()}
            for ex, v in zip(per_example, got["prediction"], strict=True):
                ex["c_score"] = float(v["c"])
                ex["c_entail_rate"] = 100.0 * v["e"]
                ex["c_contradict_rate"] = 100.0 * v["x"]
            calibration["c_score"] = _calibrate(
                got, lambda v: float(v["c"]), n_resamples, seed, skipped
            )
            info["pairs_classified"] = scorer.pairs_classified
            instruments["nli"] = info
            continue
        for criterion in scorer.options.rubric_map():
            name = metric_name(criterion)
            got = {
                key: scorer.score(
                    criterion, list(zip(personas, histories, texts, strict=True)), cache
                )
                for key, texts in sets.items()
            }
            for ex, v in zip(per_example, got["prediction"], strict=True):
                ex[name] = v
            calibration[name] = _calibrate(got, float, n_resamples, seed, skipped)
        scorer.close()
        info["responses_judged"] = scorer.responses_judged
        instruments["judge"] = info
    for c in calibration.values():
        c["rule"] = RULE_TEXT
    return {"instruments": instruments, "calibration": calibration}


def _calibrate(got: dict, value, n_resamples: int, seed: int, skipped: dict) -> dict:
    if "gold" not in got:
        return dict(skipped)
    gold = [value(v) for v in got["gold"]]
    shuffled = [value(v) for v in got["shuffled"]]
    return calibrate(gold, shuffled, n_resamples=n_resamples, seed=seed)
