"""Scorer figures: `metrics.score_predictions` timed on our decoder's predictions; "n/a" where
the scorer's libraries are not installed (e.g. on a bare GPU box)."""

from __future__ import annotations

import importlib.util
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from spt_bench.bench.settings import BenchSettings

SCORER_MODULES = ("sacrebleu", "rouge_score")


def scorer_available() -> tuple[bool, str | None]:
    missing = [m for m in SCORER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        return False, f"n/a ({', '.join(missing)} not installed here; score the predictions on CPU)"
    return True, None


def bench_scoring(rows: list[dict], settings: BenchSettings) -> dict[str, Any]:
    ok, why = scorer_available()
    if not ok:
        return {"seconds": None, "note": why}
    if settings.bertscore and importlib.util.find_spec("bert_score") is None:
        return {"seconds": None, "note": "n/a (bert-score not installed here)"}
    from spt_bench.metrics import BertScoreOptions, score_predictions

    t0 = time.perf_counter()
    report = score_predictions(rows, bertscore=BertScoreOptions() if settings.bertscore else None)
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "rows": len(rows),
        "rows_per_s": len(rows) / seconds if seconds > 0 else None,
        "bertscore": settings.bertscore,
        "stages": {k: round(v, 4) for k, v in report.timings.items()},
        "overall": {k: round(v, 4) for k, v in report.overall.items()},
    }
