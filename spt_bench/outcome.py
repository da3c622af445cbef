"""The tail every run and evaluation shares: decode the test split (sharded over processes),
add perplexity/hits@k, score, and write predictions, per-example scores, metrics.json (with
the timings of every process) and report.md into the run folder."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spt_bench.config import RunConfig
from spt_bench.process_log import ProcessLog
from spt_bench.run_folder import RunFolder
from spt_bench.session import decode_settings


@dataclass
class RunResult:
    run_dir: Path
    config: RunConfig
    metrics: dict
    train: Any = None
    decode: Any = None
    timings: dict = field(default_factory=dict)
    report: Any = None


def score_and_write(
    folder: RunFolder,
    rows: list[dict],
    config: RunConfig,
    extra: dict,
) -> tuple[dict, Any]:
    from spt_bench.metrics import BertScoreOptions, score_predictions
    from spt_bench.metrics.files import write_example_scores, write_example_stats
    from spt_bench.metrics.model_scores import scoring_from_config

    report = score_predictions(
        rows,
        bertscore=BertScoreOptions() if config.score.bertscore else None,
        seed=config.seed,
        # model-based scores are cached in the run folder: a killed scoring resumes
        model_scoring=scoring_from_config(config.score, folder.path / folder.MODEL_SCORES),
    )
    payload = report.to_json()
    payload.update(extra)
    payload["clean_rule"] = config.decode.clean  # the post-processing the scores were made under
    payload["predictions_file"] = folder.PREDICTIONS
    payload["example_scores_file"] = folder.EXAMPLE_SCORES
    write_example_scores(report, folder.example_scores)
    write_example_stats(report.per_example, folder.example_stats)  # text-free, to commit
    folder.write_json(folder.METRICS, payload)
    return payload, report


def warner(console: Any) -> Any:
    def warn(msg: str) -> None:
        if console is not None:
            console.print(f"[yellow]warning:[/yellow] {msg}", highlight=False)

    return warn


class NoProcessLog:
    """Stands in for the ProcessLog on processes that do not write the folder."""

    timings: dict[str, float]

    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t

    def stop(self, finished: bool) -> None:
        pass


def train_json(result: Any, folder: RunFolder) -> dict | None:
    from spt_bench.checkpoints import read_checkpoint_state

    state = read_checkpoint_state(folder)
    if result is None and state is None:
        return None
    out: dict[str, Any] = {}
    if state:
        out.update(
            {
                "steps": state.get("steps"),
                "best_step": state.get("best_step"),
                "best_dev_loss": state.get("best_dev_loss"),
                "stopped_early": state.get("stopped_early"),
                "checkpoint_used": state.get("best") or state.get("last"),
                # every process's training time, up to the checkpoint each one left
                "seconds": state.get("train_seconds"),
            }
        )
    if result is not None:
        out.update(
            {
                "seconds": round(result.total_seconds, 3),
                "seconds_this_process": round(result.seconds, 3),
                "mean_step_seconds": result.mean_step_seconds,
                "examples_per_s": result.examples_per_s,
                "strategy": result.strategy,
                "memory_per_process": result.memory_per_process,
            }
        )
    return out


def decode_score_report(
    method: Any,
    formatter: Any,
    test_ex: list,
    config: RunConfig,
    folder: RunFolder,
    plog: Any,
    *,
    train_result: Any,
    extra: dict[str, Any],
    progress: bool,
    console: Any,
    kind: str = "run",
) -> RunResult:
    """The tail shared by `run` and `evaluate`: decode the test split (sharded over processes),
    then on the main process add ppl/hits@k, score, and write metrics.json and report.md."""
    from spt_bench.distributed import get_dist
    from spt_bench.model_metrics import model_metrics_for_run
    from spt_bench.report import write_report
    from spt_bench.sharded_decode import decode_all

    dist = get_dist()
    with plog.stage("decode_s"):
        rows, dstats = decode_all(
            method, formatter, test_ex, decode_settings(config), folder.predictions,
            progress=progress, console=console,
        )  # fmt: skip
        if (
            config.decode.engine != "vllm" and dist.is_main
        ):  # an export left by an earlier vllm decode is of no further use
            folder.drop_vllm_export()
    model_metrics = None
    if config.score.model_metrics:  # every process scores its share of the examples
        with plog.stage("model_metrics_s"):
            model_metrics = model_metrics_for_run(
                method, formatter, test_ex, rows, folder.predictions, config,
                progress=progress, console=console,
            )  # fmt: skip
    if not dist.is_main:  # scores and reports are the main process's job
        return RunResult(folder.path, config, {}, train_result, dstats, plog.timings, None)
    decode_json = dstats.to_json()
    if kind == "run":  # rows decoded by earlier (killed) processes of the run count too
        decode_json["n_decoded_this_process"] = decode_json["n_decoded"]
        decode_json["n_decoded"] = len(rows)
    extra = {
        "method": method.summary(),
        "template_used": formatter.template_used,
        **extra,
        "decode": decode_json,
        "model_metrics": model_metrics,
        "distributed": dist.info(),
        "diagnostics": method.prediction_diagnostics(rows),
    }
    with plog.stage("score_s"):
        metrics, report = score_and_write(folder, rows, config, extra)
    if isinstance(plog, ProcessLog) and kind == "run":
        plog.stop(finished=True)  # the `end` row: this process's work is done
        summed = folder.process_timings("run")
    elif isinstance(plog, ProcessLog):  # evaluate: its own decode and scoring only
        summed = plog.own_timings()
        plog.stop(finished=True)
    else:
        summed = {k: round(v, 3) for k, v in plog.timings.items()}
    if kind == "run" and "decode_s" in summed:
        decode_json["seconds"] = summed["decode_s"]  # every process's decoding time
    metrics["decode"] = decode_json
    metrics["timings"] = summed
    folder.write_json(folder.METRICS, metrics)
    write_report(folder, config, metrics, rows, type(method))
    return RunResult(folder.path, config, metrics, train_result, dstats, summed, report)
