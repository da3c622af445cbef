"""FSDP training (`--strategy fsdp`, 2 CPU processes with gloo through `accelerate launch`) and
perplexity/Hits@1 sharded over processes: the losses and weights of one process, half the
decoder-layer bytes of DDP per process, a killed run resuming to the uninterrupted result, a
checkpoint that decodes in one process, and model metrics equal to one process's."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from test_distributed import (
    _launch_command,
    _launch_two,
    _run_in_process,
    _train_losses,
    data,
    one_thread,
)

from spt_bench.io import read_jsonl

__all__ = ["data", "one_thread"]  # fixtures shared with test_distributed

LOSS_TOLERANCE = 2e-3
FLAGS = [
    "--model", "tiny-random", "--batch-size", "4", "--eval-batch-size", "3",
    "--max-new-tokens", "6", "--no-bertscore",
]  # fmt: skip
METHOD_FLAGS = {
    "full-ft": ["--method", "full-ft", "--lr", "0.001"],
    # no dropout: each process draws its own masks (as under DDP), which no tolerance covers
    "lora": ["--method", "lora", "--lr", "0.01", "--lora-dropout", "0"],
    "spt": ["--method", "spt", "--lr", "0.05"],
}
# FSDP-only flags per case: activation checkpointing recomputes the same math inside FSDP's units
FSDP_FLAGS = {"full-ft": ["--activation-checkpointing", "1.0"]}


def _final_state(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state = json.loads((run / "checkpoint" / "state.json").read_text())
    return load_file(str(run / "checkpoint" / state["last"] / "trained.safetensors"))


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHOD_FLAGS))
def test_fsdp_trains_like_one_process(method, data, tmp_path, one_thread):
    train, test, _ = data
    flags = [*FLAGS, *METHOD_FLAGS[method], "--max-steps", "4",
             "--train-data", train, "--test-data", test]  # fmt: skip
    single, sharded = tmp_path / "single", tmp_path / "fsdp"
    _run_in_process(["run", *flags, "--out", str(single)])
    fsdp_flags = ["--strategy", "fsdp", *FSDP_FLAGS.get(method, [])]
    _launch_two(["run", *flags, *fsdp_flags, "--out", str(sharded)], tmp_path)

    train_json = _metrics(sharded)["train"]
    assert train_json["strategy"] == "fsdp"
    one, two = _train_losses(single), _train_losses(sharded)
    assert len(one) == len(two) == 4
    assert max(abs(a - b) for a, b in zip(one, two, strict=True)) < LOSS_TOLERANCE
    assert abs(one[0] - one[-1]) > 10 * LOSS_TOLERANCE  # the curve moves: a real comparison
    a, b = _final_state(single), _final_state(sharded)
    assert set(a) == set(b)  # the gathered checkpoint holds what one process saves
    for name in a:
        # AdamW at lr 0.05 turns float-order noise in near-zero gradients into steps of up to
        # lr (SPT's retriever: 7.7e-4 after 4 steps; FSDP's weights equal DDP's exactly)
        torch.testing.assert_close(b[name], a[name], atol=2e-3, rtol=1e-3, msg=name)


@pytest.mark.slow
def test_fsdp_processes_hold_half_the_decoder_layer_and_adamw_bytes_of_ddp(data, tmp_path):
    train, test, _ = data
    flags = [*FLAGS, *METHOD_FLAGS["full-ft"], "--max-steps", "1", "--no-model-metrics",
             "--train-data", train, "--test-data", test]  # fmt: skip
    mem = {}
    for strategy in ("ddp", "fsdp"):
        out = tmp_path / strategy
        _launch_two(["run", *flags, "--strategy", strategy, "--out", str(out)], tmp_path)
        mem[strategy] = _metrics(out)["train"]["memory_per_process"]
    ddp, fsdp = mem["ddp"], mem["fsdp"]
    assert len(ddp) == len(fsdp) == 2
    for d, f in zip(ddp, fsdp, strict=True):
        # the layers' shards: half (dim 0 split in two; tiny-random's are all even)
        assert f["decoder_layers"] == d["decoder_layers"] // 2
        # embedding and (tied) head stay whole on every process (spt_bench.fsdp's doc)
        assert f["params"] - f["decoder_layers"] == d["params"] - d["decoder_layers"]
        # full-ft: AdamW keeps two fp32 moments per trainable value, of the local shards
        assert f["optimizer"] == 2 * f["trainable"] and d["optimizer"] == 2 * d["trainable"]
        assert f["optimizer"] < d["optimizer"]
    # `spt-bench plan` predicts these bytes exactly (fp32 on the CPU)
    from spt_bench.memory_plan import footprint, plan_rows

    fp = footprint("full-ft", "tiny-random", dtype="float32")
    ddp_plan, fsdp_plan = plan_rows(fp, 2, batch_size=4, seq_len=16, gpu_gb=80)
    assert (ddp[0]["params"], ddp[0]["optimizer"]) == (ddp_plan.params, ddp_plan.optimizer)
    assert (fsdp[0]["params"], fsdp[0]["optimizer"]) == (fsdp_plan.params, fsdp_plan.optimizer)


def _launch_and_kill_after_checkpoint(args: list[str], run: Path, cwd: Path) -> None:
    """Start a 2-process launch and kill the whole process group once a checkpoint exists."""
    cmd, env = _launch_command(args)
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    state = run / "checkpoint" / "state.json"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if state.is_file() and json.loads(state.read_text()).get("last_step", 0) >= 2:
                break
            time.sleep(0.02)
    finally:  # the launcher and every worker it started (they may sit in other groups)
        import psutil

        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        for p in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGKILL)
        proc.wait()
        psutil.wait_procs(family, timeout=30)
    saved = json.loads(state.read_text())
    assert not saved.get("finished"), "the run ended before it was killed"


@pytest.mark.slow
def test_killed_fsdp_run_resumes_to_the_uninterrupted_result_and_decodes_in_one_process(
    data, tmp_path
):
    train, test, _ = data
    flags = [*FLAGS, *METHOD_FLAGS["full-ft"], "--max-steps", "30", "--save-every", "2",
             "--strategy", "fsdp", "--train-data", train, "--test-data", test]  # fmt: skip
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    _launch_two(["run", *flags, "--out", str(whole)], tmp_path)
    _launch_and_kill_after_checkpoint(["run", *flags, "--out", str(killed)], killed, tmp_path)
    sharded = json.loads((killed / "checkpoint" / "state.json").read_text())["last"]
    assert (killed / "checkpoint" / sharded / "sharded" / ".metadata").is_file()
    _launch_two(["run", *flags, "--out", str(killed), "--resume"], tmp_path)

    assert _train_losses(killed) == pytest.approx(_train_losses(whole), abs=1e-6)
    a, b = _final_state(whole), _final_state(killed)
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=0, msg=name)
    # the gathered checkpoint loads in one process: evaluate decodes what 2 processes did
    launched = {r["id"]: r["prediction"] for r in read_jsonl(whole / "predictions.jsonl")}
    _run_in_process(["evaluate", str(whole), "--no-model-metrics"])
    alone = {r["id"]: r["prediction"] for r in read_jsonl(whole / "predictions.jsonl")}
    assert alone == launched


@pytest.mark.slow
def test_two_processes_score_ppl_and_hits_exactly_like_one(data, tmp_path, one_thread):
    train, test, test_ids = data
    flags = [*FLAGS, "--method", "text-prompt", "--train-data", train, "--test-data", test]
    one, two = tmp_path / "one", tmp_path / "two"
    _run_in_process(["run", *flags, "--out", str(one)])
    _launch_two(["run", *flags, "--out", str(two)], tmp_path)
    keys = ("ref_nll_sum", "ref_n_tokens", "hits@1", "gold_rank", "n_candidates")
    rows = {}
    for run in (one, two):
        rows[run.name] = [
            {k: r[k] for k in ("id", *keys)} for r in read_jsonl(run / "predictions.jsonl")
        ]
    assert [r["id"] for r in rows["two"]] == test_ids  # every example once, in order
    assert rows["two"] == rows["one"]  # bit-identical: the same batches, split by process
    assert not list(two.glob("model_metrics.part-*"))
    assert _metrics(two)["model_metrics"]["n_examples"] == len(test_ids)


def test_a_launch_asking_for_fsdp_is_refused_unless_the_run_says_fsdp(monkeypatch):
    from spt_bench.errors import ConfigError
    from spt_bench.fsdp import check_launcher_strategy

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ConfigError, match="add --strategy fsdp"):
        check_launcher_strategy("ddp", launched=True)
    check_launcher_strategy("fsdp", launched=True)
    check_launcher_strategy("ddp", launched=False)  # one process: nothing to shard
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    check_launcher_strategy("ddp", launched=True)
