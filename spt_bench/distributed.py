"""Several processes (GPUs, nodes) through Hugging Face Accelerate.

Launch any `spt-bench` command with Accelerate's launcher; the library notices the launch from
the environment (WORLD_SIZE > 1) and does the rest:

    accelerate launch --num_processes 4 -m cli run --method spt ...   # 4 GPUs
    accelerate launch --cpu --num_processes 2 -m cli run ...         # 2 CPU procs

- The process group and each process's device come from `accelerate.PartialState` (NCCL on
  CUDA, gloo on CPU; multi-node settings from `accelerate config` / launcher flags).
- Training: each micro-batch of the global batch (`--batch-size` keeps its meaning: examples
  per micro-batch over all processes) is split across processes, the trainable parameters are
  wrapped in torch's DistributedDataParallel so gradients are averaged, and every process takes
  the same optimiser step. Only the main process writes train_log.jsonl and checkpoints; logged
  losses are the mean over processes. Dev loss is computed by every process on the whole dev
  set (identical values, so all agree on the best checkpoint and on early stopping).
- Decoding: the test prompts are sorted by length and cut into the batches one process would
  decode; the batches are dealt round-robin to the processes, so every row is decoded in
  exactly the batch it would have been in a single-process run (same padding, same result).
  Each process appends to its own part file (resumable); the main process merges them into
  predictions.jsonl in dataset order, every example exactly once. Scores, metrics.json and
  report.md are computed and written once, by the main process.

A single process (no launcher, or WORLD_SIZE=1) never imports accelerate and behaves exactly as
before.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from spt_bench.methods import Method


def launched_world_size() -> int:
    """Processes in this launch according to the environment (1 when not launched)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


@dataclass
class Dist:
    """This process's place in the launch. A single process: world_size 1, rank 0."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    device: Any = None  # the device Accelerate assigned (None for a single process)
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wait(self) -> None:
        """Barrier: every process reaches this point before any goes on."""
        if self.enabled:
            import torch.distributed as td

            td.barrier()

    def all_gather(self, obj: Any) -> list[Any]:
        """[obj of rank 0, obj of rank 1, ...] on every process (picklable objects)."""
        if not self.enabled:
            return [obj]
        import torch.distributed as td

        out: list[Any] = [None] * self.world_size
        td.all_gather_object(out, obj)
        return out

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Mean over processes of each value (for logging); keys present on every process."""
        if not self.enabled:
            return dict(values)
        gathered = self.all_gather(values)
        keys = [k for k in values if all(k in g for g in gathered)]
        return {k: sum(float(g[k]) for g in gathered) / len(gathered) for k in keys}

    def sum(self, value: float) -> float:
        if not self.enabled:
            return value
        return float(sum(self.all_gather(value)))

    def info(self) -> dict[str, Any]:
        return {"num_processes": self.world_size, "backend": self.backend}


_DIST: Dist | None = None


def get_dist() -> Dist:
    """This process's Dist; initialises the process group through Accelerate on first use when
    the process was started by a launcher with more than one process."""
    global _DIST
    if _DIST is not None:
        return _DIST
    if launched_world_size() <= 1:
        _DIST = Dist()
        return _DIST
    import torch
    from accelerate import PartialState

    # gloo on CPU: asked for (`accelerate launch --cpu`), or no GPU under a torchrun-style launch
    cpu = os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true", "yes")
    state = PartialState(cpu=cpu or not torch.cuda.is_available())
    # Tear the process group down before the interpreter exits: left to C++ static destructors,
    # gloo's threads can abort a finished process ("terminate called without an active
    # exception", SIGABRT), which turns a successful launch into a failed one.
    atexit.register(_destroy_process_group)
    _DIST = Dist(
        world_size=int(state.num_processes),
        rank=int(state.process_index),
        local_rank=int(state.local_process_index),
        device=state.device,
        backend=str(state.backend) if state.backend is not None else None,
    )
    return _DIST


def _destroy_process_group() -> None:
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.destroy_process_group()


def resolve_process_device(requested: str | None) -> str | None:
    """The device this process should load the model on: with several processes and CUDA
    (requested auto/cuda), the GPU Accelerate assigned to this process; else `requested`."""
    dist = get_dist()
    if not dist.enabled or dist.device is None:
        return requested
    if getattr(dist.device, "type", None) == "cuda" and requested in (None, "", "auto", "cuda"):
        return str(dist.device)
    return requested


# ---------------------------------------------------------------------------- training


def shard_rows(indices: list[int], dist: Dist | None = None) -> list[int]:
    """This process's rows of a global micro-batch: rows rank, rank + W, ... Every process
    needs at least one row (DDP steps together), so when the batch has fewer rows than
    processes, the processes without one repeat its last row (documented deviation)."""
    dist = dist or get_dist()
    if not dist.enabled:
        return list(indices)
    mine = list(indices[dist.rank :: dist.world_size])
    return mine or list(indices[-1:])


def ddp_wrap(method: Method, params: list[torch.nn.Parameter]) -> Any:
    """A DistributedDataParallel module over the method's trainable parameters whose forward is
    `method.training_loss(batch)`; gradients of those parameters are averaged across processes
    during backward. Returns None for a single process (call training_loss directly)."""
    dist = get_dist()
    if not dist.enabled:
        return None
    import torch
    from torch.nn.parallel import DistributedDataParallel

    class LossModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.trainable = torch.nn.ParameterList(params)

        def forward(self, batch: Any) -> Any:
            return method.training_loss(batch)

    device = method.backbone.device
    ids = None
    if device.type == "cuda":
        ids = [device.index if device.index is not None else torch.cuda.current_device()]
    return DistributedDataParallel(
        LossModule(),
        device_ids=ids,
        # Method options can switch loss terms off, leaving some parameters without gradient.
        find_unused_parameters=True,
    )


# ---------------------------------------------------------------------------- decoding
