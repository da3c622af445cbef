"""Runs: validate, then train (if the method trains), decode the test split, score, report.

Files live in a run folder owned by `spt_bench.run_folder.RunFolder` (names, lock, atomic
writes). The order of `run` keeps results safe:

1. everything that can be checked is checked before the folder is made: the config, the
   method and its options, the data, the backbone (device, dtype), the decode engine;
2. the folder is created and locked (one process per folder; a second one fails at once);
3. training and decoding append/replace files atomically, so a killed run resumes with
   `--resume` (training from its last checkpoint, decoding skipping rows already written), and
   `--resume` writes only into the folder named on the command line (config.json holds no
   location);
4. metrics.json's timings are sums over every process of the run (processes.jsonl keeps each).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from spt_bench.config import (
    RunConfig,
    check_run_name,
    config_from_dict,
    flatten,
    get_dotted,
    merge_layer,
    resolve_layers,
)
from spt_bench.errors import ConfigError
from spt_bench.run_folder import RunFolder, command_line

DEFAULT_OUT = "runs"


@dataclass
class RunResult:
    run_dir: Path
    config: RunConfig
    metrics: dict
    train: Any = None
    decode: Any = None
    timings: dict = field(default_factory=dict)
    report: Any = None


# ---------------------------------------------------------------------------- run folder


def default_run_name(method: str, now: datetime | None = None) -> str:
    now = now or datetime.now()
    return f"{method}-{now.strftime('%Y%m%d-%H%M%S')}"


def resolve_run_dir(config: RunConfig) -> RunFolder:
    """out/name when both are given; out alone is the run folder; name alone goes under runs/."""
    out, name = config.output.out, config.output.name
    if name is not None:
        check_run_name(name)
    if out is not None and name is None:
        return RunFolder(out)
    root = Path(out if out is not None else DEFAULT_OUT)
    name = name or default_run_name(config.method.name)
    run_dir = root / name
    if run_dir.resolve().parent != root.resolve():  # belt and braces (symlinked names etc.)
        raise ConfigError(f"run name {name!r} leads outside {root}")
    return RunFolder(run_dir)


def check_run_dir_usable(folder: RunFolder, *, overwrite: bool, resume: bool) -> None:
    """The cheap checks on the target folder, done first (a busy or existing folder fails at
    once, before any model is loaded) and again under the lock."""
    if overwrite and resume:
        raise ConfigError("--overwrite and --resume exclude each other")
    path = folder.path
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} exists and is not a folder")
    if folder.is_locked():
        raise folder.busy_error()
    if resume:
        if not folder.is_run():
            what = "no such run" if folder.is_empty() else "it holds no config.json"
            raise ConfigError(f"cannot resume {path}: {what}")
        return
    if not folder.is_empty():
        if not overwrite:
            raise ConfigError(
                f"run folder {path} already exists; use --overwrite to replace it, "
                "--resume to continue it, or another --name"
            )
        if not folder.is_run():
            raise ConfigError(
                f"refusing to overwrite {path}: it is not an spt-bench run folder (no config.json)"
            )


# Settings that change how much memory or time a run needs, not what it trains or predicts (the
# decode engines give the same outputs, tested): a run killed for memory can resume with them
# changed (recorded in resume_log.jsonl and the rewritten config.json).
RESUME_ADJUSTABLE = (
    "train.activation_checkpointing",
    "train.lean_activations",
    "decode.batch_size",
    "decode.engine",
    "decode.vllm_kv_cache_gb",
    "decode.vllm_tensor_parallel_size",
    "decode.vllm_data_parallel_size",
)


def resume_config(folder: RunFolder, layers: dict[str, Any]) -> RunConfig:
    """The saved config of a run, checked against what the command line resolves to.

    Every key the command line sets (preset, config file, flags, --set) must agree with the
    saved config - so a script can re-run its own command with `--resume` appended - except
    the output location and the memory/speed settings of RESUME_ADJUSTABLE, which may change
    (recorded in resume_log.jsonl). Real changes are refused, listed.
    """
    stored = folder.read_config().to_dict(with_output=False)
    given = flatten({k: v for k, v in layers.items() if k != "output"})
    stored_flat = flatten(stored)
    changed, adjusted = [], {}
    for key, value in given.items():
        if isinstance(value, dict) and not value:
            continue  # an empty options block sets nothing
        if key.startswith("method.by_method."):
            method_key = "method.options." + key.split(".", 3)[3]
            if key.split(".")[2] != stored["method"]["name"]:
                continue  # another method's defaults do not apply
            key = method_key
        before = stored_flat.get(key, get_dotted(stored, key))
        if value is None and key == "train.lr":
            continue  # unset lr resolves to the method default, as stored
        if before == value:
            continue
        if key in RESUME_ADJUSTABLE:
            adjusted[key] = {"from": before, "to": value}
            continue
        changed.append(f"{key} ({before!r} -> {value!r})")
    if changed:
        raise ConfigError(
            f"cannot resume {folder.path} with changed settings: {', '.join(changed)}; "
            "start a new run instead"
        )
    for key, change in adjusted.items():
        section, name = key.split(".")
        stored[section][name] = change["to"]
    config = config_from_dict(stored)
    if adjusted:
        folder.append(folder.RESUME_LOG, [{"time": time.time(), "changed": adjusted}])
        folder.write_config(config)
    return config


def config_for_run(
    layers: dict[str, Any],
    *,
    preset: str | None = None,
    config_file: str | None = None,
    resume: bool = False,
) -> RunConfig:
    """The RunConfig of `spt-bench run`: defaults < preset < config file < flags/--set; when
    resuming, the run's saved config (checked against the same layers)."""
    from spt_bench.cli_flags import preflight_method

    merged = resolve_layers(preset=preset, config_file=config_file, overrides=layers)
    config = config_from_dict(merged)
    # the method and its options are checked now, before torch loads (seconds on a busy CPU)
    preflight_method(config.method.name, config.method.resolved_options())
    if not resume:
        return config
    if config.output.out is None and config.output.name is None:
        raise ConfigError("--resume needs the run folder: give --out (and/or --name)")
    folder = resolve_run_dir(config)
    if folder.is_locked():  # a run still going is never resumed (nor read half-written)
        raise folder.busy_error()
    resumed = resume_config(folder, merged)
    return config_from_dict({**resumed.to_dict(), "output": config.to_dict()["output"]})


# ---------------------------------------------------------------------------- data


# How each limit samples (spt_bench/data/sampling.py): the test subset is whole dialogues so
# that turn analyses of small runs cover every turn; recorded in the run's data description.
LIMIT_SAMPLERS = {"train": "examples", "dev": "examples", "test": "dialogues"}


def limit_examples(examples: list, n: int | None, seed: int, sampler: str = "examples") -> list:
    """A seeded subset of n examples in their original order (same for every method)."""
    from spt_bench.data.sampling import sample_dialogues, sample_examples

    pick = sample_dialogues if sampler == "dialogues" else sample_examples
    return pick(examples, n, seed)


def load_run_data(config: RunConfig) -> tuple[list, list, list, dict]:
    from spt_bench.data.splits import splits_for_config

    data = config.data
    splits = splits_for_config(data)
    seed, how = data.split_seed, LIMIT_SAMPLERS
    train = limit_examples(splits.train, data.train_limit, seed, how["train"])
    dev = limit_examples(splits.dev, data.dev_limit, seed, how["dev"])
    test = limit_examples(splits.test, data.eval_limit, seed, how["test"])
    desc = dict(splits.description)
    desc["used"] = {"train": len(train), "dev": len(dev), "test": len(test)}
    desc["limits"] = {
        "train_limit": data.train_limit,
        "dev_limit": data.dev_limit,
        "eval_limit": data.eval_limit,
        "samplers": dict(LIMIT_SAMPLERS),
    }
    return train, dev, test, desc


# ---------------------------------------------------------------------------- pieces


def finalize_config(config: RunConfig) -> tuple[RunConfig, type, Any]:
    """Fill in what defaults depend on (lr from the method, full method options)."""
    import dataclasses

    from spt_bench.methods import get_method, make_options

    cls = get_method(config.method.name)
    options = make_options(cls, config.method.resolved_options())
    values = config.to_dict()
    values["method"]["options"] = dataclasses.asdict(options)
    if values["train"]["lr"] is None:
        values["train"]["lr"] = cls.default_lr
    return config_from_dict(values), cls, options


def build_method(
    config: RunConfig,
    cls: type,
    options: Any,
    train_examples: list,
    *,
    from_checkpoint: bool = False,
) -> Any:
    """The configured method over its backbone, set up with the train split - unless it is a
    trained method about to be loaded from a checkpoint, whose trained state holds whatever
    `setup` would compute (`from_checkpoint`)."""
    import torch

    from spt_bench.distributed import resolve_process_device
    from spt_bench.models import load_backbone

    backbone = load_backbone(
        config.model.name,
        device=resolve_process_device(config.model.device),
        dtype=config.model.dtype,
        trust_remote_code=config.model.trust_remote_code,
        seed=config.seed,
    )
    torch.manual_seed(config.seed)
    method = cls(backbone, options)
    if not (from_checkpoint and cls.trains):
        method.setup(train_examples, seed=config.seed, formatter=make_formatter(method, config))
    return method


def check_decode_engine(config: RunConfig, method: Any) -> None:
    """Refuse a decode engine (or decoding mode) that cannot serve the method or run the model,
    before any work is done."""
    refusal = method.engine_refusal(config.decode.engine, config.decode.mode)
    if refusal is not None:
        raise ConfigError(refusal)
    if config.decode.engine == "vllm" and config.decode.mode != "beam":
        from spt_bench.vllm_engine import check_single_process, require_vllm

        require_vllm()
        check_single_process()


def check_decode_length(config: RunConfig, method: Any, n_examples: int, console: Any) -> None:
    """decode.max_new_tokens within the model's context (else ConfigError, before the folder
    exists); a warning with the worst-case volume when it is large."""
    from spt_bench.decode import check_max_new_tokens

    note = check_max_new_tokens(
        method.backbone,
        config.data.max_input_tokens,
        config.decode.max_new_tokens,
        prefix_tokens=method.prefix_length(),
        n_examples=n_examples,
    )
    if note:
        _warner(console)(note)


def make_formatter(method: Any, config: RunConfig) -> Any:
    return method.build_formatter(
        max_input_tokens=config.data.max_input_tokens,
        max_history_turns=config.data.max_history_turns,
        max_response_tokens=config.data.max_response_tokens,
    )


def train_settings(config: RunConfig) -> Any:
    from spt_bench.train import TrainSettings

    return TrainSettings.from_config(config.train, config.seed)


def decode_settings(config: RunConfig) -> Any:
    from spt_bench.decode import DecodeSettings

    return DecodeSettings.from_config(config.decode, config.seed)


def dev_batches(formatter: Any, dev: list, batch_size: int, pad_id: int) -> list:
    from spt_bench.data.formatting import collate_train

    encoded = sorted((formatter.encode_train(ex) for ex in dev), key=lambda e: -len(e.input_ids))
    return [
        collate_train(encoded[i : i + batch_size], pad_id)
        for i in range(0, len(encoded), batch_size)
    ]


def score_and_write(
    folder: RunFolder,
    rows: list[dict],
    config: RunConfig,
    extra: dict,
) -> tuple[dict, Any]:
    from metrics import (
        BertScoreOptions,
        score_predictions,
        write_example_scores,
        write_example_stats,
    )

    report = score_predictions(
        rows, bertscore=BertScoreOptions() if config.score.bertscore else None, seed=config.seed
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


def summed_timings(folder: RunFolder, current: dict[str, float]) -> dict[str, Any]:
    """Per-phase seconds summed over the run's processes (processes.jsonl + this one)."""
    total: dict[str, float] = {}
    by_process = []
    for row in folder.processes():
        t = row.get("timings") or {}
        by_process.append({"command": row.get("command"), "pid": row.get("pid"), **t})
        for k, v in t.items():
            if isinstance(v, int | float):
                total[k] = total.get(k, 0.0) + float(v)
    for k, v in current.items():
        total[k] = total.get(k, 0.0) + v
    by_process.append(
        {
            "command": command_line(),
            "pid": os.getpid(),
            **{k: round(v, 3) for k, v in current.items()},
        }
    )
    out: dict[str, Any] = {k: round(v, 3) for k, v in total.items()}
    out["processes"] = len(by_process)
    return out | {"by_process": by_process}


# ---------------------------------------------------------------------------- run / evaluate


def run(
    config: RunConfig,
    *,
    overwrite: bool = False,
    resume: bool = False,
    console: Any = None,
    progress: bool = True,
    on_train_step: Any = None,
) -> RunResult:
    """Validate, then train (if the method trains), decode the test split, score; everything
    into the run folder. Under `accelerate launch` with several processes: DDP training,
    sharded decoding, and the files and scores written once by the main process."""
    from spt_bench.distributed import get_dist

    started = time.time()
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    dist = get_dist()
    folder = resolve_run_dir(config)
    if dist.enabled:  # every process uses the main process's folder (default names hold a time)
        folder = RunFolder(dist.all_gather(str(folder.path))[0])
    if dist.is_main and console is not None:  # first, not only at the end (issue 23, item 10)
        console.print(f"run folder: {folder.path}", highlight=False, soft_wrap=True)
    if dist.is_main:
        check_run_dir_usable(folder, overwrite=overwrite, resume=resume)
        if resume:  # the folder exists: hold it while reading its state
            folder.acquire(command_line(), warn=_warner(console))
    try:
        return _run_locked(
            config, folder, overwrite=overwrite, resume=resume, console=console,
            progress=progress, on_train_step=on_train_step, timings=timings, t_all=t_all,
            started=started,
        )  # fmt: skip
    finally:
        folder.release()


def _warner(console: Any) -> Any:
    def warn(msg: str) -> None:
        if console is not None:
            console.print(f"[yellow]warning:[/yellow] {msg}", highlight=False)

    return warn


def _run_locked(
    config: RunConfig,
    folder: RunFolder,
    *,
    overwrite: bool,
    resume: bool,
    console: Any,
    progress: bool,
    on_train_step: Any,
    timings: dict[str, float],
    t_all: float,
    started: float,
) -> RunResult:
    from spt_bench.distributed import get_dist
    from spt_bench.env import collect_env
    from spt_bench.train import load_trained_weights, read_checkpoint_state, train

    dist = get_dist()
    config, cls, options = finalize_config(config)

    # -- everything that can fail on bad input fails here, before the folder exists
    t = time.perf_counter()
    train_ex, dev_ex, test_ex, data_desc = load_run_data(config)
    timings["data_s"] = time.perf_counter() - t
    if not test_ex:
        raise ConfigError("the test split is empty: nothing to evaluate")
    if cls.trains and not train_ex:
        raise ConfigError(f"the train split is empty: method {cls.name!r} has nothing to train on")
    t = time.perf_counter()
    checkpoint = read_checkpoint_state(folder) if resume else None
    method = build_method(
        config, cls, options, train_ex, from_checkpoint=bool(checkpoint and checkpoint.get("last"))
    )
    timings["model_load_s"] = time.perf_counter() - t
    check_decode_engine(config, method)
    check_decode_length(config, method, len(test_ex), console)

    # -- the run starts: create and lock the folder (a fresh run), write its config
    if dist.is_main and not resume:
        check_run_dir_usable(folder, overwrite=overwrite, resume=False)
        folder.acquire(command_line(), warn=_warner(console))
        if overwrite and not folder.is_empty():
            folder.clear_for_overwrite()
        elif not folder.is_empty():  # made by someone else since the first check
            raise ConfigError(f"run folder {folder.path} already exists")
        folder.write_config(config)
    dist.wait()
    backbone = method.backbone
    if dist.is_main:
        env = collect_env(backbone.device, backbone.dtype)
        folder.write_json(folder.ENV, {**env, "distributed": dist.info()})
    formatter = make_formatter(method, config)

    train_result = None
    if cls.trains:
        t = time.perf_counter()
        if not (checkpoint and checkpoint.get("finished")):
            encoded = [formatter.encode_train(ex) for ex in train_ex]
            dev = dev_batches(formatter, dev_ex, config.decode.batch_size, backbone.pad_token_id)
            train_result = train(
                method, encoded, dev, train_settings(config), folder,
                pad_id=backbone.pad_token_id, resume=resume, progress=progress,
                console=console, on_step=on_train_step,
            )  # fmt: skip
        timings["train_s"] = time.perf_counter() - t
        load_trained_weights(method, folder, "final")

    return _decode_score_report(
        method, formatter, test_ex, config, folder, timings, t_all, started,
        train_result=train_result,
        extra={"data": data_desc, "train": _train_json(train_result, folder)},
        progress=progress, console=console,
    )  # fmt: skip


def _train_json(result: Any, folder: RunFolder) -> dict | None:
    from spt_bench.train import read_checkpoint_state

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
            }
        )
    return out


def evaluate_run(
    run_dir: str | Path,
    *,
    changes: dict[str, Any] | None = None,
    console: Any = None,
    progress: bool = True,
) -> RunResult:
    """Re-decode and re-score a saved run from its checkpoint. `changes`: dotted config keys
    to change for this evaluation (e.g. {"decode.batch_size": 8}). The results it replaces
    move to history/<time>/ first."""
    from spt_bench.distributed import get_dist
    from spt_bench.methods import get_method, make_options
    from spt_bench.train import load_trained_weights, read_checkpoint_state

    folder = RunFolder(run_dir)
    started = time.time()
    config = folder.read_config()
    changes = {k: v for k, v in (changes or {}).items() if v is not None}
    if changes:
        config = config.replace(**changes)
    cls = get_method(config.method.name)
    options = make_options(cls, config.method.options)
    dist = get_dist()
    if dist.is_main:
        if folder.is_locked():
            raise folder.busy_error()
        folder.acquire(command_line(), warn=_warner(console))
    try:
        timings: dict[str, float] = {}
        t_all = time.perf_counter()
        train_ex, _, test_ex, data_desc = load_run_data(config)
        method = build_method(config, cls, options, train_ex, from_checkpoint=True)
        check_decode_engine(config, method)
        formatter = make_formatter(method, config)
        loaded = None
        if cls.trains:
            state = read_checkpoint_state(folder)
            if not state or not state.get("last"):
                raise ConfigError(
                    f"{run_dir} has no checkpoint to evaluate (was training finished?)"
                )
            loaded = load_trained_weights(method, folder, "final")
        archived = None
        if dist.is_main:
            archived = folder.archive_results()
        dist.wait()
        extra = {
            "data": data_desc,
            "train": _train_json(None, folder),
            "evaluated_from": loaded,
            "evaluation_overrides": changes,
            "previous_results": None
            if archived is None
            else str(archived.relative_to(folder.path)),
        }
        return _decode_score_report(
            method, formatter, test_ex, config, folder, timings, t_all, started,
            train_result=None, extra=extra, progress=progress, console=console,
            sum_processes=False,
        )  # fmt: skip
    finally:
        folder.release()


def _decode_score_report(
    method: Any,
    formatter: Any,
    test_ex: list,
    config: RunConfig,
    folder: RunFolder,
    timings: dict[str, float],
    t_all: float,
    started: float,
    *,
    train_result: Any,
    extra: dict[str, Any],
    progress: bool,
    console: Any,
    sum_processes: bool = True,
) -> RunResult:
    """The tail shared by `run` and `evaluate`: decode the test split (sharded over processes),
    then on the main process add ppl/hits@k, score, and write metrics.json and report.md."""
    from spt_bench.distributed import get_dist
    from spt_bench.model_metrics import model_metrics_for_run
    from spt_bench.report import write_report
    from spt_bench.sharded_decode import decode_all

    dist = get_dist()
    t = time.perf_counter()
    rows, dstats = decode_all(
        method,
        formatter,
        test_ex,
        decode_settings(config),
        folder.predictions,
        progress=progress,
        console=console,
    )
    timings["decode_s"] = time.perf_counter() - t
    if config.decode.engine == "vllm":  # free its memory and worker processes for scoring
        from spt_bench.vllm_engine import shutdown_engine

        shutdown_engine()
    if not dist.is_main:  # scores and reports are the main process's job
        return RunResult(folder.path, config, {}, train_result, dstats, timings, None)
    t = time.perf_counter()
    model_metrics = model_metrics_for_run(
        method, formatter, test_ex, rows, folder.predictions, config,
        progress=progress, console=console,
    )  # fmt: skip
    if model_metrics is not None:
        timings["model_metrics_s"] = time.perf_counter() - t
    extra = {
        "method": method.summary(),
        "template_used": formatter.template_used,
        **extra,
        "decode": dstats.to_json(),
        "model_metrics": model_metrics,
        "distributed": dist.info(),
        "diagnostics": method.prediction_diagnostics(rows),
    }
    t = time.perf_counter()
    metrics, report = score_and_write(folder, rows, config, extra)
    timings["score_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t_all
    if sum_processes:
        summed = summed_timings(folder, timings)
        train_s = (extra.get("train") or {}).get("seconds")
        if train_s is not None:  # includes processes killed after their last checkpoint
            summed["train_s"] = round(float(train_s), 3)
        metrics["timings"] = summed
    else:
        metrics["timings"] = {k: round(v, 3) for k, v in timings.items()}
    folder.write_json(folder.METRICS, metrics)
    write_report(folder, config, metrics, rows, type(method))
    folder.record_process(command_line(), started, timings)
    return RunResult(folder.path, config, metrics, train_result, dstats, timings, report)


def rescore_run(
    run_dir: str | Path,
    *,
    bertscore: bool | None = None,
    clean: str | None = None,
    console: Any = None,
) -> RunResult:
    """Re-score a run's saved predictions without the model (e.g. BERTScore added on a machine
    that has its encoder, for runs decoded where it was missing). Keeps the per-example model
    metrics already in predictions.jsonl and every non-score field of metrics.json. With `clean`
    every prediction is re-cleaned from its `raw_prediction` by that rule (the decoder's stop
    rules leave the same cleaned text under either rule); the results it replaces move to
    history/<time>/ first."""
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
    if folder.is_locked():
        raise folder.busy_error()
    with folder.locked(command_line(), warn=_warner(console)):
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
        folder.write_config(config)
        score_keys = {"overall", "ci95", "by_turn", "by_turn_ci95", "bertscore_model",
                      "bertscore_layer", "bertscore_idf", "n", "metrics_meta", "scorer",
                      "clean_rule"}  # fmt: skip
        extra = {k: v for k, v in old.items() if k not in score_keys}
        t = time.perf_counter()
        metrics, report = score_and_write(folder, rows, config, extra)
        timings = dict(old.get("timings") or {})
        timings["rescore_s"] = round(time.perf_counter() - t, 3)
        metrics["timings"] = timings
        folder.write_json(folder.METRICS, metrics)
        write_report(folder, config, metrics, rows, get_method(config.method.name))
    return RunResult(folder.path, config, metrics, None, None, timings, report)


# ---------------------------------------------------------------------------- CLI glue


def dry_run_text(config: RunConfig) -> str:
    """The resolved config (method options and lr filled in) as YAML, for --print-config."""
    import yaml

    resolved, _, _ = finalize_config(config)
    folder = resolve_run_dir(resolved)
    text = yaml.safe_dump(resolved.to_dict(with_output=False), sort_keys=False)
    return f"# run folder: {folder.path}\n{text}"


def merged_layers(*layers: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in layers:
        out = merge_layer(out, layer)
    return out


def print_result(result: RunResult, console: Any) -> None:
    from metrics import render_score_report
    from spt_bench.distributed import get_dist
    from spt_bench.model_metrics import model_metrics_note

    if not get_dist().is_main:  # one report per launch, not one per process
        return

    if result.report is not None:
        c = result.config
        title = f"{c.method.name} on {c.model.name}: {result.report.n} test examples"
        render_score_report(result.report, console, title=title)
    note = model_metrics_note((result.metrics or {}).get("model_metrics"))
    if note:
        console.print(f"[dim]{note}[/dim]", highlight=False)
    t = result.timings
    parts = [f"{k[:-2]} {v:.1f}s" for k, v in t.items() if k.endswith("_s")]
    console.print(f"[dim]{' · '.join(parts)}[/dim]")
    console.print(f"run folder: [bold]{result.run_dir}[/bold]")


def methods_table(console: Any) -> None:
    import dataclasses

    from rich.table import Table

    from spt_bench.methods import list_methods
    from spt_bench.peft_method import EXAMPLE_OPTIONS_FOR_COUNTS, trainable_counts_on_meta

    try:  # shapes only: SmolLM2 built on the meta device from its config, no weights loaded
        counts: dict[str, Any] = trainable_counts_on_meta("smollm2-135m")
        note = "trainable: parameters trained on SmolLM2-135M with the default options"
    except Exception as e:  # noqa: BLE001 - e.g. the SmolLM2 asset is not installed
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        counts, note = {}, f"trainable counts unavailable: {first}"
    table = Table(title="methods", caption=note)
    for col in ("name", "trains", "trainable", "template", "description", "options"):
        table.add_column(col, justify="right" if col == "trainable" else "left")
    for cls in list_methods():
        opts = ", ".join(f.name for f in dataclasses.fields(cls.Options)) or "-"
        n = counts.get(cls.name, "-")
        shown = f"{n:,}" if isinstance(n, int) else str(n)
        if cls.name in EXAMPLE_OPTIONS_FOR_COUNTS and isinstance(n, int):
            example = ", ".join(f"{k}={v}" for k, v in EXAMPLE_OPTIONS_FOR_COUNTS[cls.name].items())
            shown += f" ({example})"
        row = (cls.name, "yes" if cls.trains else "no", shown, cls.template, cls.description, opts)
        table.add_row(*row)
    console.print(table)
