"""`spt-bench evaluate --rescore`: re-score a run's saved predictions without the model (e.g.
BERTScore added where its encoder is installed, or predictions re-cleaned by another rule); the
results it replaces move to history/<time>/ first."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from spt_bench.errors import ConfigError
from spt_bench.outcome import RunResult, score_and_write, warner
from spt_bench.process_log import command_line
from spt_bench.run_folder import RunFolder


def rescore_run(
    run_dir: str | Path,
    *,
    bertscore: bool | None = None,
    clean: str | None = None,
    score_changes: dict[str, Any] | None = None,
    console: Any = None,
) -> RunResult:
    """Re-score a run's saved predictions without the model (e.g. BERTScore added on a machine
    that has its encoder, for runs decoded where it was missing). Keeps the per-example model
    metrics already in predictions.jsonl and every non-score field of metrics.json. With `clean`
    every prediction is re-cleaned from its `raw_prediction` by that rule (the decoder's stop
    rules leave the same cleaned text under either rule); the results it replaces move to
    history/<time>/ first. `score_changes`: other score.* settings for this scoring (e.g.
    score.judge, score.consistency); without `clean`, the earlier scores are copied to
    history/<time>/ before they are replaced."""
    import json

    from spt_bench.decode import clean_response
    from spt_bench.io import atomic_write_text, read_jsonl
    from spt_bench.methods import get_method
    from spt_bench.report import write_report

    folder = RunFolder(run_dir)
    if not folder.predictions.is_file() or not folder.is_run():
        raise ConfigError(f"{run_dir} is not a finished run folder (no predictions.jsonl)")
    config = folder.read_config()
    old = folder.read_metrics() if folder.is_finished() else {}
    if bertscore is not None:
        config = config.replace(**{"score.bertscore": bertscore})
    if clean is not None:
        config = config.replace(**{"decode.clean": clean})
    if score_changes:
        config = config.replace(**score_changes)
    if folder.is_locked():
        raise folder.busy_error()
    with folder.locked(command_line(), warn=warner(console)):
        rows = list(read_jsonl(folder.predictions))
        if clean is not None:
            missing = sum("raw_prediction" not in r for r in rows)
            if missing:
                raise ConfigError(
                    f"{folder.predictions}: {missing} rows have no raw_prediction to re-clean"
                )
            for r in rows:
                r["prediction"] = clean_response(r["raw_prediction"], clean)
            folder.archive_results()
            atomic_write_text(
                folder.predictions,
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
            )
        else:  # the predictions stay; the scores they had move to history/ as copies
            folder.archive_scores()
        folder.write_config(config)
        score_keys = {"overall", "ci95", "by_turn", "by_turn_ci95", "bertscore_model",
                      "bertscore_layer", "bertscore_idf", "n", "metrics_meta", "scorer",
                      "clean_rule", "instruments", "calibration"}  # fmt: skip
        extra = {k: v for k, v in old.items() if k not in score_keys}
        t = time.perf_counter()
        metrics, report = score_and_write(folder, rows, config, extra)
        timings = dict(old.get("timings") or {})
        timings["rescore_s"] = round(time.perf_counter() - t, 3)
        metrics["timings"] = timings
        folder.write_json(folder.METRICS, metrics)
        write_report(folder, config, metrics, rows, get_method(config.method.name))
    return RunResult(folder.path, config, metrics, None, None, timings, report)
