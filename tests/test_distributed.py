"""Several processes through `accelerate launch` (2 CPU processes, gloo): DDP training follows the
single-process loss curve, sharded decoding gives the single-process predictions, every example
exactly once and in order, and the scores are written once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spt_bench.batches import length_sorted_batches
from spt_bench.data import Example, write_examples_jsonl
from spt_bench.distributed import Dist, shard_rows
from spt_bench.io import append_jsonl, read_jsonl
from spt_bench.sharded_decode import merge_part_files, part_path

REPO = Path(__file__).resolve().parents[1]
# Loss curves of 1 and 2 processes: the same global batches, gradients averaged over shards
# instead of over the whole batch (token-mean per shard), so equal up to float rounding when the
# shards hold equally many tokens and close otherwise.
LOSS_TOLERANCE = 2e-3
RUN_FLAGS = [
    "--method", "prompt-tuning", "--model", "tiny-random", "--max-steps", "4",
    "--batch-size", "4", "--lr", "0.05", "--eval-batch-size", "3", "--max-new-tokens", "6",
    "--no-bertscore",
]  # fmt: skip


def _examples(n_dialogues: int, turns: int, tag: str) -> list[Example]:
    foods = ["tea", "dogs", "rain", "jazz", "maps"]
    return [
        Example(
            f"{tag}{d}", t, (f"i am person {d}.", f"i like {foods[d % 5]}."),
            tuple(f"{tag} line {j} of {d}" for j in range(2 * t + 1)), f"reply {d} {t}",
        )
        for d in range(n_dialogues)
        for t in range(turns)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[str, str, list[str]]:
    root = tmp_path_factory.mktemp("dist-data")
    train, test = root / "train.jsonl", root / "test.jsonl"
    write_examples_jsonl(_examples(10, 2, "a"), train)
    test_examples = _examples(5, 2, "b")
    write_examples_jsonl(test_examples, test)
    return str(train), str(test), [ex.id for ex in test_examples]


@pytest.fixture()
def one_thread():
    """The launched processes run one thread each; match it so float sums agree."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _run_in_process(args: list[str]) -> None:
    from typer.testing import CliRunner

    from cli import app

    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output


def _launch_command(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """`accelerate launch` of 2 CPU processes (gloo) running `cli args`, and its environment."""
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", "0", "-m", "cli", *args,
    ]  # fmt: skip
    return cmd, {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}


def _launch_two(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    cmd, env = _launch_command(args)
    res = subprocess.run(
        cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def _train_losses(run: Path) -> list[float]:
    return [r["loss"] for r in read_jsonl(run / "train_log.jsonl") if r["type"] == "train"]


def _prompts(run: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    state = json.loads((run / "checkpoint" / "state.json").read_text())
    return load_file(str(run / "checkpoint" / state["last"] / "trained.safetensors"))[
        "prompt_pool.prompts"
    ]


# slow (two processes through accelerate launch): the fast suite keeps the sharding rules - rows
# split across processes, the single-process batches, part files merged once and in order
@pytest.mark.slow
def test_two_processes_train_like_one_and_decode_every_example_once(data, tmp_path, one_thread):
    train, test, test_ids = data
    flags = [*RUN_FLAGS, "--train-data", train, "--test-data", test]
    single, double = tmp_path / "single", tmp_path / "double"
    _run_in_process(["run", *flags, "--out", str(single)])
    res = _launch_two(["run", *flags, "--out", str(double)], tmp_path)

    # one report for the launch, written by the main process (the folder is named first and
    # again under the report)
    assert res.stdout.count("run folder:") == 2
    metrics = json.loads((double / "metrics.json").read_text())
    assert metrics["distributed"] == {"num_processes": 2, "backend": "gloo"}
    assert metrics["n"] == len(test_ids)
    assert metrics["decode"]["engine"] == "hf" and metrics["decode"]["engine_start_s"] == 0

    # training: the same loss curve, and the curve moves far more than the tolerance
    one, two = _train_losses(single), _train_losses(double)
    assert len(one) == len(two) == 4
    assert max(abs(a - b) for a, b in zip(one, two, strict=True)) < LOSS_TOLERANCE
    assert one[0] - one[-1] > 20 * LOSS_TOLERANCE
    assert torch.allclose(_prompts(single), _prompts(double), atol=1e-3)

    # decoding: every test example exactly once, in dataset order, no part files left behind
    rows = list(read_jsonl(double / "predictions.jsonl"))
    assert [r["id"] for r in rows] == test_ids
    assert not list(double.glob("predictions.jsonl.part-*"))

    # the same checkpoint decoded by one process gives the same predictions as two
    copy = tmp_path / "double-re-decoded"
    shutil.copytree(double, copy)
    _run_in_process(["evaluate", str(copy), "--no-bertscore"])
    again = list(read_jsonl(copy / "predictions.jsonl"))
    assert [r["prediction"] for r in again] == [r["prediction"] for r in rows]
    assert [r["raw_prediction"] for r in again] == [r["raw_prediction"] for r in rows]


def test_rows_of_a_micro_batch_are_split_across_processes():
    idx = [7, 3, 9, 1, 4]
    assert shard_rows(idx, Dist(world_size=2, rank=0)) == [7, 9, 4]
    assert shard_rows(idx, Dist(world_size=2, rank=1)) == [3, 1]
    assert shard_rows([5], Dist(world_size=2, rank=1)) == [5]  # nobody steps without a row
    assert shard_rows(idx, Dist()) == idx


def test_sharded_batches_are_the_single_process_batches():
    lengths = [5, 9, 9, 2, 7, 9]
    assert length_sorted_batches(lengths, 2) == [[1, 2], [5, 4], [0, 3]]


def test_part_files_of_a_killed_sharded_decode_merge_once_in_order(tmp_path):
    out = tmp_path / "predictions.jsonl"
    append_jsonl(out, [{"id": "x:1", "prediction": "a"}])
    append_jsonl(part_path(out, 0), [{"id": "x:0", "prediction": "b"}])
    append_jsonl(part_path(out, 1), [{"id": "x:2", "prediction": "c"}, {"id": "x:1", "p": "dup"}])
    with part_path(out, 1).open("a") as f:
        f.write('{"id": "x:3", "predic')  # a kill mid-write
    rows = merge_part_files(out, ["x:0", "x:1", "x:2", "x:3"])
    assert [r["id"] for r in rows] == ["x:0", "x:1", "x:2"]
    assert rows[1]["prediction"] == "a"
    assert [r["id"] for r in read_jsonl(out)] == ["x:0", "x:1", "x:2"]
    assert not list(tmp_path.glob("*.part-*"))
