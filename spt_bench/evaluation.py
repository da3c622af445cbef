"""`spt-bench evaluate`: re-decode and re-score a saved run from its checkpoint, on the data
it recorded (checked by sha256), or only re-score its saved predictions (`--rescore`). The
results an evaluation replaces move to the run's history/<time>/ first."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from spt_bench.config import RunConfig
from spt_bench.data.run_data import load_run_data
from spt_bench.errors import ConfigError
from spt_bench.outcome import (
    NoProcessLog,
    RunResult,
    decode_score_report,
    train_json,
    warner,
)
from spt_bench.process_log import command_line
from spt_bench.run_folder import RunFolder
from spt_bench.session import build_method, check_decode_engine, make_formatter


def evaluate_run(
    run_dir: str | Path,
    *,
    changes: dict[str, Any] | None = None,
    data: dict[str, str | None] | None = None,
    console: Any = None,
    progress: bool = True,
) -> RunResult:
    """Re-decode and re-score a saved run from its checkpoint. `changes`: dotted config keys
    to change for this evaluation (e.g. {"decode.batch_size": 8}). `data`: where the run's
    data files are now ({"source": path}), accepted only with the recorded content. The
    results it replaces move to history/<time>/ first."""
    from spt_bench.checkpoints import load_trained_weights, read_checkpoint_state
    from spt_bench.distributed import get_dist
    from spt_bench.methods import get_method, make_options

    folder = RunFolder(run_dir)
    started = time.time()
    config = folder.read_config()
    changes = {k: v for k, v in (changes or {}).items() if v is not None}
    if changes:
        config = config.replace(**changes)
    config, input_notes = _evaluation_inputs(folder, config, data or {}, console)
    cls = get_method(config.method.name)
    options = make_options(cls, config.method.options)
    dist = get_dist()
    if dist.is_main:
        if folder.is_locked():
            raise folder.busy_error()
        folder.acquire(command_line(), warn=warner(console))
    plog: Any = NoProcessLog({})
    try:
        if dist.is_main:
            plog = folder.start_process_log("evaluate", started)
        with plog.stage("data_s"):
            train_ex, _, test_ex, data_desc = load_run_data(config)
        with plog.stage("model_load_s"):
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
            "train": train_json(None, folder),
            "evaluated_from": loaded,
            "evaluation_overrides": changes,
            "evaluation_inputs": input_notes,
            "previous_results": None
            if archived is None
            else str(archived.relative_to(folder.path)),
        }
        return decode_score_report(
            method, formatter, test_ex, config, folder, plog,
            train_result=None, extra=extra, progress=progress, console=console,
            kind="evaluate",
        )  # fmt: skip
    finally:
        folder.release()


def _evaluation_inputs(
    folder: RunFolder, config: RunConfig, data: dict[str, str | None], console: Any
) -> tuple[RunConfig, list[str]]:
    """The data an evaluation reads: the run's recorded files, checked by sha256 (a moved copy
    given through `data` is accepted when its content matches). Runs made before inputs.json
    existed are read as their config names them, with a warning."""
    from spt_bench.inputs import bind_recorded_inputs, model_drift

    data = {k: v for k, v in data.items() if v is not None}
    if not folder.has(folder.INPUTS):
        notes = [
            f"{folder.path} records no input hashes (made before inputs.json): its data is "
            "read as its config names it, unchecked"
        ]
        warner(console)(notes[0])
        changes = {f"data.{r}": p for r, p in data.items()}
        return (config.replace(**changes) if changes else config), notes
    recorded = folder.read_json(folder.INPUTS)
    unknown = sorted(set(data) - set(recorded.get("data") or {}))
    if unknown:
        raise ConfigError(f"this run read no {unknown[0]} data (it recorded: "
                          f"{', '.join(recorded.get('data') or {})})")  # fmt: skip
    use, notes = bind_recorded_inputs(recorded, data)
    drift = model_drift(recorded, config.model.name)
    for note in [*notes, *([drift] if drift else [])]:
        warner(console)(note)
    changes = {f"data.{r}": p for r, p in use.items() if getattr(config.data, r) != p}
    return (config.replace(**changes) if changes else config), [*notes, *([drift] if drift else [])]
