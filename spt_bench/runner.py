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

import time
from typing import Any

from spt_bench.config import RunConfig
from spt_bench.data.run_data import load_run_data
from spt_bench.errors import ConfigError
from spt_bench.launch import check_run_dir_usable, resolve_run_dir
from spt_bench.outcome import NoProcessLog, RunResult, decode_score_report, train_json, warner
from spt_bench.process_log import command_line
from spt_bench.run_folder import RunFolder
from spt_bench.session import (
    build_method,
    check_decode_engine,
    check_decode_length,
    check_split_sizes,
    dev_batches,
    finalize_config,
    make_formatter,
    train_settings,
)


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
    dist = get_dist()
    folder = resolve_run_dir(config)
    if dist.enabled:  # every process uses the main process's folder (default names hold a time)
        folder = RunFolder(dist.all_gather(str(folder.path))[0])
    if dist.is_main and console is not None:  # first, not only at the end (issue 23, item 10)
        console.print(f"run folder: {folder.path}", highlight=False, soft_wrap=True)
    if dist.is_main:
        check_run_dir_usable(folder, overwrite=overwrite, resume=resume)
        if resume:  # the folder exists: hold it while reading its state
            folder.acquire(command_line(), warn=warner(console))
    try:
        return _run_locked(
            config, folder, overwrite=overwrite, resume=resume, console=console,
            progress=progress, on_train_step=on_train_step, timings=timings, started=started,
        )  # fmt: skip
    finally:
        folder.release()  # also stops this process's heartbeat in processes.jsonl


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
    started: float,
) -> RunResult:
    from spt_bench.distributed import get_dist
    from spt_bench.inputs import describe_inputs
    from spt_bench.train import load_trained_weights, read_checkpoint_state, train

    dist = get_dist()
    config, cls, options = finalize_config(config)
    plog: Any = NoProcessLog(timings)
    if dist.is_main and resume:  # recorded before any work: a killed resume still counts
        plog = folder.start_process_log("run", started, timings)
        config = _bind_resumed_inputs(folder, config, console)

    # -- everything that can fail on bad input fails here, before the folder exists
    with plog.stage("data_s"):
        train_ex, dev_ex, test_ex, data_desc = load_run_data(config)
        check_split_sizes(config, cls, train_ex, test_ex)
        inputs = describe_inputs(config.data, config.model.name) if dist.is_main else None
    checkpoint = read_checkpoint_state(folder) if resume else None
    with plog.stage("model_load_s"):
        method = build_method(
            config, cls, options, train_ex,
            from_checkpoint=bool(checkpoint and checkpoint.get("last")),
        )  # fmt: skip
    check_decode_engine(config, method)
    check_decode_length(config, method, len(test_ex), console)

    # -- the run starts: create and lock the folder (a fresh run), write its config
    if dist.is_main and not resume:
        check_run_dir_usable(folder, overwrite=overwrite, resume=False)
        folder.acquire(command_line(), warn=warner(console))
        if overwrite and not folder.is_empty():
            folder.clear_for_overwrite()
        elif not folder.is_empty():  # made by someone else since the first check
            raise ConfigError(f"run folder {folder.path} already exists")
        folder.write_config(config)
        plog = folder.start_process_log("run", started, timings)
    if dist.is_main and inputs is not None and (not resume or not folder.has(folder.INPUTS)):
        folder.write_json(folder.INPUTS, inputs)
    dist.wait()
    backbone = method.backbone
    if dist.is_main:
        folder.write_env(backbone.device, backbone.dtype, distributed=dist.info())
    formatter = make_formatter(method, config)

    train_result = None
    if cls.trains:
        with plog.stage("train_s"):
            if not (checkpoint and checkpoint.get("finished")):
                encoded = [formatter.encode_train(ex) for ex in train_ex]
                dev = dev_batches(formatter, dev_ex, config, backbone.pad_token_id)
                train_result = train(
                    method, encoded, dev, train_settings(config), folder,
                    pad_id=backbone.pad_token_id, resume=resume, progress=progress,
                    console=console, on_step=on_train_step,
                )  # fmt: skip
            if train_result is not None and train_result.sharded:
                # FSDP left the layers sharded; decoding shards examples and needs whole
                # weights on every process: a fresh model from the final checkpoint
                del method
                method = build_method(config, cls, options, train_ex, from_checkpoint=True)
                formatter = make_formatter(method, config)
            load_trained_weights(method, folder, "final")

    return decode_score_report(
        method, formatter, test_ex, config, folder, plog,
        train_result=train_result,
        extra={"data": data_desc, "train": train_json(train_result, folder)},
        progress=progress, console=console,
    )  # fmt: skip


def _bind_resumed_inputs(folder: RunFolder, config: RunConfig, console: Any) -> RunConfig:
    """The resumed run reads the data it recorded (checked by sha256); see spt_bench.inputs."""
    from spt_bench.inputs import DATA_ROLES, bind_recorded_inputs, model_drift

    if not folder.has(folder.INPUTS):
        return config
    recorded = folder.read_json(folder.INPUTS)
    given = {r: getattr(config.data, r) for r in DATA_ROLES if getattr(config.data, r)}
    use, notes = bind_recorded_inputs(recorded, given)
    for note in notes:
        warner(console)(note)
    drift = model_drift(recorded, config.model.name)
    if drift:
        warner(console)(drift)
    changes = {f"data.{r}": p for r, p in use.items() if getattr(config.data, r) != p}
    return config.replace(**changes) if changes else config
