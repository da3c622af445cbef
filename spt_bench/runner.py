"""Run folders: train (if the method trains), decode the test split, score, report.

A run folder (``<out>/<name>/``) holds:

- config.json - the fully resolved RunConfig (method options included), enough to repeat it;
- env.json - package versions, git commit, device;
- train_log.jsonl, checkpoint/ - see spt_bench.train (absent for methods that do not train);
- predictions.jsonl - one row per test example (id, dialog_id, turn, persona, history,
  reference, prediction, raw_prediction, stop, n_new_tokens + the method's row_info);
- example_scores.jsonl, metrics.json - the scorer's output (+ method summary, timings);
- report.md - a human-readable summary.

Every file is written atomically or appended line by line, so a killed run can be resumed with
`--resume` (training continues from its last checkpoint, decoding skips rows already written).
User-given run names are single folder names: they never lead outside the output folder, and an
existing run folder is never replaced without `--overwrite`.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from spt_bench.config import RunConfig, check_run_name, coerce_dataclass, config_from_dict
from spt_bench.errors import ConfigError
from spt_bench.io import append_jsonl, atomic_write_json, atomic_write_text

DEFAULT_OUT = "runs"
RUN_FILES = ("config.json", "env.json", "predictions.jsonl", "metrics.json", "report.md")


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


def resolve_run_dir(config: RunConfig) -> Path:
    """out/name when both are given; out alone is the run folder; name alone goes under runs/."""
    if config.name is not None:
        check_run_name(config.name)
    if config.out is not None and config.name is None:
        return Path(config.out)
    root = Path(config.out if config.out is not None else DEFAULT_OUT)
    name = config.name or default_run_name(config.method)
    run_dir = root / name
    if run_dir.resolve().parent != root.resolve():  # belt and braces (symlinked names etc.)
        raise ConfigError(f"run name {name!r} leads outside {root}")
    return run_dir


def _looks_like_run(path: Path) -> bool:
    return (path / "config.json").is_file()


def prepare_run_dir(run_dir: Path, *, overwrite: bool, resume: bool) -> None:
    if overwrite and resume:
        raise ConfigError("--overwrite and --resume exclude each other")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} exists and is not a folder")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if resume:
            if not _looks_like_run(run_dir):
                raise ConfigError(f"cannot resume {run_dir}: it holds no config.json")
            return
        if not overwrite:
            raise ConfigError(
                f"run folder {run_dir} already exists; use --overwrite to replace it, "
                "--resume to continue it, or another --name"
            )
        if not _looks_like_run(run_dir):
            raise ConfigError(
                f"refusing to overwrite {run_dir}: it is not an spt-bench run folder "
                "(no config.json)"
            )
        shutil.rmtree(run_dir)
    elif resume:
        raise ConfigError(f"cannot resume {run_dir}: no such run")
    run_dir.mkdir(parents=True, exist_ok=True)


# Settings that change how much memory or time a run needs, not what it trains or predicts (the
# decode engines give the same outputs, tested): a run killed for memory can resume with them
# changed (recorded in resume_log.jsonl and the rewritten config.json).
RESUME_ADJUSTABLE = (
    "activation_checkpointing",
    "lean_activations",
    "eval_batch_size",
    "decode_engine",
)


def resume_config(run_dir: Path, overrides: dict[str, Any]) -> RunConfig:
    """The saved config of a run; explicit flags must agree with it (out/name excepted, and the
    memory settings of RESUME_ADJUSTABLE, which may change)."""
    path = run_dir / "config.json"
    if not path.is_file():
        raise ConfigError(f"cannot resume {run_dir}: it holds no config.json")
    stored = json.loads(path.read_text(encoding="utf-8"))
    changed = []
    adjusted = {}
    for key, value in overrides.items():
        if value is None or key in ("out", "name", "methods"):
            continue
        if key in RESUME_ADJUSTABLE:
            if stored.get(key) != value:
                adjusted[key] = {"from": stored.get(key), "to": value}
                stored[key] = value
            continue
        if key == "method_options":
            for k, v in (value or {}).items():
                if v is not None and stored.get("method_options", {}).get(k) != v:
                    changed.append(f"{k} ({stored.get('method_options', {}).get(k)!r} -> {v!r})")
            continue
        if stored.get(key) != value:
            changed.append(f"{key} ({stored.get(key)!r} -> {value!r})")
    if changed:
        raise ConfigError(
            f"cannot resume {run_dir} with changed settings: {', '.join(changed)}; "
            "start a new run instead"
        )
    config = config_from_dict(stored)
    if adjusted:
        append_jsonl(run_dir / "resume_log.jsonl", [{"time": time.time(), "changed": adjusted}])
    return config


# ---------------------------------------------------------------------------- data


def limit_examples(examples: list, n: int | None, seed: int) -> list:
    """A seeded subset of n examples in their original order (same for every method)."""
    if n is None or n >= len(examples):
        return list(examples)
    keep = sorted(random.Random(seed).sample(range(len(examples)), n))
    return [examples[i] for i in keep]


def load_run_data(config: RunConfig) -> tuple[list, list, list, dict]:
    from spt_bench.data import load_splits

    splits = load_splits(
        config.data,
        train_data=config.train_data,
        test_data=config.test_data,
        protocol=config.split_protocol,
        seed=config.split_seed,
    )
    train = limit_examples(splits.train, config.train_limit, config.split_seed)
    dev = limit_examples(splits.dev, config.dev_limit, config.split_seed)
    test = limit_examples(splits.test, config.eval_limit, config.split_seed)
    desc = dict(splits.description)
    desc["used"] = {"train": len(train), "dev": len(dev), "test": len(test)}
    desc["limits"] = {
        "train_limit": config.train_limit,
        "dev_limit": config.dev_limit,
        "eval_limit": config.eval_limit,
    }
    return train, dev, test, desc


# ---------------------------------------------------------------------------- pieces


def finalize_config(config: RunConfig) -> tuple[RunConfig, type, Any]:
    """Fill in what defaults depend on (lr from the method, full method options)."""
    import dataclasses

    from spt_bench.methods import get_method, make_options

    cls = get_method(config.method)
    options = make_options(cls, config.options_for_method())
    values = config.to_dict()
    values["method_options"] = dataclasses.asdict(options)
    if values["lr"] is None:
        values["lr"] = cls.default_lr
    return coerce_dataclass(RunConfig, values), cls, options


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
        config.model,
        device=resolve_process_device(config.device),
        dtype=config.dtype,
        trust_remote_code=config.trust_remote_code,
        seed=config.seed,
    )
    torch.manual_seed(config.seed)
    method = cls(backbone, options)
    if not (from_checkpoint and cls.trains):
        method.setup(train_examples, seed=config.seed, formatter=make_formatter(method, config))
    return method


def check_decode_engine(config: RunConfig, backbone: Any) -> None:
    """Refuse --decode-engine static for a model it cannot run, before any work is done."""
    if config.decode_engine == "static" and config.decoding != "beam":
        from spt_bench.static_decode import unsupported_reason

        reason = unsupported_reason(backbone)
        if reason is not None:
            raise ConfigError(f"{config.model}: {reason}")


def make_formatter(method: Any, config: RunConfig) -> Any:
    return method.build_formatter(
        max_input_tokens=config.max_input_tokens,
        max_history_turns=config.max_history_turns,
        max_response_tokens=config.max_response_tokens,
    )


def train_settings(config: RunConfig) -> Any:
    from spt_bench.train import TrainSettings

    assert config.lr is not None
    return TrainSettings(
        seed=config.seed,
        epochs=config.epochs,
        max_steps=config.max_steps,
        batch_size=config.batch_size,
        grad_accum=config.grad_accum,
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup_ratio=config.warmup_ratio,
        max_grad_norm=config.max_grad_norm,
        eval_every=config.eval_every,
        save_every=config.save_every,
        early_stopping_patience=config.early_stopping_patience,
        log_every=config.log_every,
        bucket_by_length=config.bucket_by_length,
        activation_checkpointing=config.activation_checkpointing,
        lean_activations=config.lean_activations,
    )


def decode_settings(config: RunConfig) -> Any:
    from spt_bench.decode import DecodeSettings

    return DecodeSettings(
        mode=config.decoding,
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        num_beams=config.num_beams,
        batch_size=config.eval_batch_size,
        seed=config.seed,
        engine=config.decode_engine,
        clean=config.clean,
    )


def dev_batches(formatter: Any, dev: list, batch_size: int, pad_id: int) -> list:
    from spt_bench.data.formatting import collate_train

    encoded = sorted((formatter.encode_train(ex) for ex in dev), key=lambda e: -len(e.input_ids))
    return [
        collate_train(encoded[i : i + batch_size], pad_id)
        for i in range(0, len(encoded), batch_size)
    ]


def score_and_write(
    run_dir: Path,
    rows: list[dict],
    config: RunConfig,
    extra: dict,
) -> tuple[dict, Any]:
    from metrics import BertScoreOptions, score_predictions, write_example_scores

    report = score_predictions(
        rows, bertscore=BertScoreOptions() if config.bertscore else None, seed=config.seed
    )
    payload = report.to_json()
    payload.update(extra)
    payload["clean_rule"] = config.clean  # the post-processing the scores were computed under
    payload["predictions_file"] = "predictions.jsonl"
    payload["example_scores_file"] = "example_scores.jsonl"
    write_example_scores(report, run_dir / "example_scores.jsonl")
    atomic_write_json(run_dir / "metrics.json", payload)
    return payload, report


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
    """Train (if the method trains), decode the test split, score; everything into the run folder.
    Under `accelerate launch` with several processes: DDP training, sharded decoding, and the
    files and scores written once by the main process (spt_bench.distributed)."""
    from spt_bench.distributed import get_dist
    from spt_bench.env import collect_env
    from spt_bench.train import load_trained_weights, read_checkpoint_state, train

    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    dist = get_dist()
    run_dir = resolve_run_dir(config)
    if dist.enabled:  # every process uses the main process's folder (default names hold a time)
        run_dir = Path(dist.all_gather(str(run_dir))[0])
    if dist.is_main:
        prepare_run_dir(run_dir, overwrite=overwrite, resume=resume)
    dist.wait()
    config, cls, options = finalize_config(config)
    if config.name is None and config.out is None:
        config = coerce_dataclass(RunConfig, {**config.to_dict(), "name": run_dir.name})
    if dist.is_main:
        atomic_write_json(run_dir / "config.json", config.to_dict())

    t = time.perf_counter()
    train_ex, dev_ex, test_ex, data_desc = load_run_data(config)
    timings["data_s"] = time.perf_counter() - t
    if not test_ex:
        raise ConfigError("the test split is empty: nothing to evaluate")

    t = time.perf_counter()
    checkpoint = read_checkpoint_state(run_dir) if resume else None
    method = build_method(
        config, cls, options, train_ex, from_checkpoint=bool(checkpoint and checkpoint.get("last"))
    )
    timings["model_load_s"] = time.perf_counter() - t
    check_decode_engine(config, method.backbone)  # before training, not after it
    backbone = method.backbone
    if dist.is_main:
        env = collect_env(backbone.device, backbone.dtype)
        atomic_write_json(run_dir / "env.json", {**env, "distributed": dist.info()})
    formatter = make_formatter(method, config)

    train_result = None
    if cls.trains:
        t = time.perf_counter()
        if not (checkpoint and checkpoint.get("finished")):
            encoded = [formatter.encode_train(ex) for ex in train_ex]
            dev = dev_batches(formatter, dev_ex, config.eval_batch_size, backbone.pad_token_id)
            train_result = train(
                method,
                encoded,
                dev,
                train_settings(config),
                run_dir,
                pad_id=backbone.pad_token_id,
                resume=resume,
                progress=progress,
                console=console,
                on_step=on_train_step,
            )
        timings["train_s"] = time.perf_counter() - t
        load_trained_weights(method, run_dir, "final")

    return _decode_score_report(
        method, formatter, test_ex, config, run_dir, timings, t_all,
        train_result=train_result,
        extra={"data": data_desc, "train": _train_json(train_result, run_dir)},
        progress=progress, console=console,
    )  # fmt: skip


def _train_json(result: Any, run_dir: Path) -> dict | None:
    from spt_bench.train import read_checkpoint_state

    state = read_checkpoint_state(run_dir)
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
            }
        )
    if result is not None:
        out.update(
            {
                "seconds": round(result.seconds, 3),
                "mean_step_seconds": result.mean_step_seconds,
                "examples_per_s": result.examples_per_s,
            }
        )
    return out


def evaluate_run(
    run_dir: str | Path,
    *,
    bertscore: bool | None = None,
    device: str | None = None,
    dtype: str | None = None,
    eval_batch_size: int | None = None,
    model_metrics: bool | None = None,
    hits_k: list[int] | None = None,
    decode_engine: str | None = None,
    clean: str | None = None,
    console: Any = None,
    progress: bool = True,
) -> RunResult:
    """Re-decode and re-score a saved run from its checkpoint (replacing its predictions)."""
    from spt_bench.decode import PREDICTIONS_FILE
    from spt_bench.distributed import get_dist
    from spt_bench.methods import get_method, make_options
    from spt_bench.train import load_trained_weights, read_checkpoint_state

    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no config.json)")
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: invalid JSON ({e.msg})") from None
    changes = {"bertscore": bertscore, "device": device, "dtype": dtype,
               "eval_batch_size": eval_batch_size, "model_metrics": model_metrics,
               "hits_k": hits_k, "decode_engine": decode_engine, "clean": clean}  # fmt: skip
    stored.update({k: v for k, v in changes.items() if v is not None})
    config = config_from_dict(stored)
    if clean is not None:
        atomic_write_json(path, config.to_dict())  # the rule the new predictions are cleaned by
    cls = get_method(config.method)
    options = make_options(cls, config.method_options)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    train_ex, _, test_ex, data_desc = load_run_data(config)
    method = build_method(config, cls, options, train_ex, from_checkpoint=True)
    check_decode_engine(config, method.backbone)
    formatter = make_formatter(method, config)
    loaded = None
    if cls.trains:
        state = read_checkpoint_state(run_dir)
        if not state or not state.get("last"):
            raise ConfigError(f"{run_dir} has no checkpoint to evaluate (was training finished?)")
        loaded = load_trained_weights(method, run_dir, "final")
    dist = get_dist()
    if dist.is_main:
        for name in (PREDICTIONS_FILE, "example_scores.jsonl"):
            (run_dir / name).unlink(missing_ok=True)
    dist.wait()
    extra = {
        "data": data_desc,
        "train": _train_json(None, run_dir),
        "evaluated_from": loaded,
        "evaluation_overrides": {k: v for k, v in changes.items() if v is not None},
    }
    return _decode_score_report(
        method, formatter, test_ex, config, run_dir, timings, t_all,
        train_result=None, extra=extra, progress=progress, console=console,
    )  # fmt: skip


def _decode_score_report(
    method: Any,
    formatter: Any,
    test_ex: list,
    config: RunConfig,
    run_dir: Path,
    timings: dict[str, float],
    t_all: float,
    *,
    train_result: Any,
    extra: dict[str, Any],
    progress: bool,
    console: Any,
) -> RunResult:
    """The tail shared by `run` and `evaluate`: decode the test split (sharded over processes),
    then on the main process add ppl/hits@k, score, and write metrics.json and report.md."""
    from spt_bench.decode import PREDICTIONS_FILE
    from spt_bench.distributed import decode_all, get_dist
    from spt_bench.model_metrics import model_metrics_for_run
    from spt_bench.report import write_report

    dist = get_dist()
    t = time.perf_counter()
    rows, dstats = decode_all(
        method,
        formatter,
        test_ex,
        decode_settings(config),
        run_dir / PREDICTIONS_FILE,
        progress=progress,
        console=console,
    )
    timings["decode_s"] = time.perf_counter() - t
    if not dist.is_main:  # scores and reports are the main process's job
        return RunResult(run_dir, config, {}, train_result, dstats, timings, None)
    t = time.perf_counter()
    model_metrics = model_metrics_for_run(
        method, formatter, test_ex, rows, run_dir / PREDICTIONS_FILE, config,
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
    metrics, report = score_and_write(run_dir, rows, config, extra)
    timings["score_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t_all
    metrics["timings"] = {k: round(v, 3) for k, v in timings.items()}
    atomic_write_json(run_dir / "metrics.json", metrics)
    write_report(run_dir, config, metrics, rows)
    return RunResult(run_dir, config, metrics, train_result, dstats, timings, report)


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
    every prediction is re-cleaned from its `raw_prediction` by that rule (predictions.jsonl
    rewritten): the decoder's stop rules leave the same cleaned text under either rule."""
    from spt_bench.decode import PREDICTIONS_FILE, clean_response
    from spt_bench.io import read_jsonl
    from spt_bench.report import write_report

    run_dir = Path(run_dir)
    config_path, metrics_path = run_dir / "config.json", run_dir / "metrics.json"
    pred_path = run_dir / PREDICTIONS_FILE
    for path in (config_path, pred_path):
        if not path.is_file():
            raise ConfigError(f"{run_dir} is not a finished run folder (no {path.name})")
    try:
        stored = json.loads(config_path.read_text(encoding="utf-8"))
        old = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else {}
    except json.JSONDecodeError as e:
        raise ConfigError(f"{run_dir}: invalid JSON ({e.msg})") from None
    if bertscore is not None:
        stored["bertscore"] = bertscore
    if clean is not None:
        stored["clean"] = clean
    config = config_from_dict(stored)
    rows = list(read_jsonl(pred_path))
    if clean is not None:
        missing = sum("raw_prediction" not in r for r in rows)
        if missing:
            raise ConfigError(
                f"{pred_path}: {missing} rows have no raw_prediction to re-clean with --clean"
            )
        for r in rows:
            r["prediction"] = clean_response(r["raw_prediction"], clean)
        atomic_write_text(
            pred_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        )
    atomic_write_json(config_path, config.to_dict())
    score_keys = {"overall", "ci95", "by_turn", "by_turn_ci95", "bertscore_model",
                  "bertscore_layer", "bertscore_idf", "n", "metrics_meta", "scorer"}  # fmt: skip
    extra = {k: v for k, v in old.items() if k not in score_keys}
    t = time.perf_counter()
    metrics, report = score_and_write(run_dir, rows, config, extra)
    timings = dict(old.get("timings") or {})
    timings["rescore_s"] = round(time.perf_counter() - t, 3)
    metrics["timings"] = timings
    atomic_write_json(metrics_path, metrics)
    write_report(run_dir, config, metrics, rows)
    return RunResult(run_dir, config, metrics, None, None, timings, report)


# ---------------------------------------------------------------------------- CLI glue


def config_for_cli(
    overrides: dict[str, Any],
    *,
    preset: str | None,
    config_file: str | None,
    resume: bool,
) -> RunConfig:
    """The RunConfig of `spt-bench run`: layered, or the saved one when resuming."""
    from spt_bench.config import resolve_config

    if not resume:
        return resolve_config(preset=preset, config_file=config_file, overrides=overrides)
    if preset or config_file:
        raise ConfigError(
            "--resume continues with the run's saved config.json; drop --preset/--config"
        )
    if overrides.get("out") is None and overrides.get("name") is None:
        raise ConfigError("--resume needs the run folder: give --out (and/or --name)")
    probe = RunConfig(out=overrides.get("out"), name=overrides.get("name"), method="spt")
    return resume_config(resolve_run_dir(probe), overrides)


def print_result(result: RunResult, console: Any) -> None:
    from metrics import render_score_report
    from spt_bench.distributed import get_dist

    if not get_dist().is_main:  # one report per launch, not one per process
        return

    if result.report is not None:
        title = f"{result.config.method} on {result.config.model}: {result.report.n} test examples"
        render_score_report(result.report, console, title=title)
    from spt_bench.model_metrics import model_metrics_note

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

    table = Table(title="methods")
    for col in ("name", "trains", "template", "description", "options"):
        table.add_column(col)
    for cls in list_methods():
        opts = ", ".join(f.name for f in dataclasses.fields(cls.Options)) or "-"
        table.add_row(cls.name, "yes" if cls.trains else "no", cls.template, cls.description, opts)
    console.print(table)
