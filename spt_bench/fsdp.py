"""Training with FSDP (`train.strategy: fsdp`, several processes): PyTorch's `fully_shard`
(FSDP2) on every decoder layer of the backbone.

What is sharded and what is not, and why:

- Each decoder layer (the model's `_no_split_modules` classes) is its own FSDP unit: its
  weights, their gradients and their AdamW state live 1/N on each of N processes and are
  all-gathered for that layer's forward and backward only. Frozen weights (prompt tuning, SPT,
  PEFT adapters' base) are sharded too; PEFT adapters injected into a layer are sharded with it.
- The token embedding, the final norm and the (often tied) output head stay whole on every
  process: the methods call the embedding outside the model's forward (soft prompts are
  spliced into its output), and a tied head shares that weight. Their gradients (full-ft), and
  those of trainables outside the backbone (soft prompts, SPT's retriever), are averaged over
  processes by an all-reduce after backward, exactly what DDP does. Every process so takes
  the step a single process would take on the whole batch (up to float summation order).
- Checkpoints: the trained state and AdamW state are saved sharded with
  torch.distributed.checkpoint (`sharded/` in the step folder: each process writes its
  shards, frozen weights are not saved) for resume, and the trained state is also gathered
  into the usual trained.safetensors (+ PEFT's adapter folder), which loads in one process:
  `evaluate`, `chat` and the vllm engine use an FSDP-trained run unchanged.
- After training the sharded model is dropped and the run decodes with a fresh, whole model
  loaded from the final checkpoint (decoding shards examples, not weights).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spt_bench.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from spt_bench.distributed import Dist
    from spt_bench.methods import Method

SHARDED_DIR = "sharded"  # torch.distributed.checkpoint folder inside a checkpoint step folder


def check_launcher_strategy(strategy: str, launched: bool) -> None:
    """`accelerate launch --use_fsdp` (or an `accelerate config` with FSDP) asks for FSDP; the
    run's train.strategy decides, so a mismatch is refused rather than silently trained DDP."""
    wants_fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true", "yes")
    if launched and wants_fsdp and strategy != "fsdp":
        raise ConfigError(
            "accelerate launch asks for FSDP (--use_fsdp / accelerate config) but "
            f"train.strategy is {strategy!r}: add --strategy fsdp (spt-bench shards the layers "
            "itself; Accelerate's FSDP settings are not read)"
        )


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's decoder layers: modules of the classes transformers never splits."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    # fully_shard swaps a layer's class for a subclass (FSDPLlamaDecoderLayer): match the MRO
    layers = [m for m in model.modules() if any(c.__name__ in names for c in type(m).__mro__)]
    if not layers:
        raise ConfigError(
            f"train.strategy fsdp: {type(model).__name__} names no decoder-layer class "
            "(_no_split_modules), so there is nothing to shard; use train.strategy ddp"
        )
    return layers


class ShardedTraining:
    """The FSDP state of one training loop: the sharded layers and the replicated trainables."""

    def __init__(self, method: Method, dist: Dist) -> None:
        import torch
        from torch.distributed.fsdp import fully_shard

        self.method, self.dist = method, dist
        self.layers = decoder_layers(method.backbone.model)
        for layer in self.layers:
            fully_shard(layer)
        # Parameter objects change under fully_shard: ask the method only now.
        self.params = [p for p in method.trainable_parameters() if p.requires_grad]
        self.replicated = [p for p in self.params if not _is_dtensor(p)]
        in_model = {id(p) for p in method.backbone.model.parameters()}
        # One module over everything that trains, for torch.distributed.checkpoint's names.
        self.holder = torch.nn.Module()
        self.holder.add_module("backbone", method.backbone.model)
        self.holder.extra = torch.nn.ParameterList(
            [p for p in self.params if id(p) not in in_model]
        )

    def optimizer(self, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        import torch

        # foreach kernels refuse a list mixing DTensor and plain tensors
        return torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay, foreach=False)

    def average_replicated_grads(self) -> None:
        """DDP's gradient average for the trainables FSDP does not shard (same order on every
        process; a parameter without gradient on one process counts as zero there)."""
        import torch
        import torch.distributed as td

        for p in self.replicated:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            td.all_reduce(p.grad, op=td.ReduceOp.SUM)
            p.grad.div_(self.dist.world_size)

    def clip_grad_norm(self, max_norm: float) -> float:
        """The global gradient norm (shards summed over processes, replicated ones counted
        once), then clip like torch.nn.utils.clip_grad_norm_."""
        import torch
        import torch.distributed as td

        def sum_sq(grads: list[Any]) -> Any:  # on the grads' device: one transfer, not one each
            if not grads:
                return torch.zeros((), dtype=torch.float64, device=self.method.backbone.device)
            return torch.stack([g.double().pow(2).sum() for g in grads]).sum()

        grads = [p.grad for p in self.params if p.grad is not None]
        sharded = sum_sq([g.to_local() for g in grads if _is_dtensor(g)])
        whole = sum_sq([g for g in grads if not _is_dtensor(g)])
        td.all_reduce(sharded, op=td.ReduceOp.SUM)  # gloo on CPU, NCCL on the GPU tensor
        norm = math.sqrt(float(sharded + whole))
        if max_norm > 0 and math.isfinite(norm):
            coef = min(1.0, max_norm / (norm + 1e-6))
            if coef < 1.0:
                for p in self.params:
                    if p.grad is not None:
                        p.grad.mul_(coef)
        return norm

    @contextlib.contextmanager
    def whole_weights(self) -> Iterator[None]:
        """Every layer's full weights on every process (to gather the trained state)."""
        for layer in self.layers:
            layer.unshard()
        try:
            yield
        finally:
            for layer in self.layers:
                layer.reshard()

    def _state(self, optimizer: Any) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        opts = StateDictOptions(ignore_frozen_params=True)
        model_state, optim_state = get_state_dict(self.holder, optimizer, options=opts)
        return {"model": model_state, "optim": optim_state}

    def save_sharded(self, folder: Path, optimizer: Any) -> None:
        """Trained weights and AdamW state, each process writing its shards (collective)."""
        import torch.distributed.checkpoint as dcp

        dcp.save(self._state(optimizer), checkpoint_id=str(folder / SHARDED_DIR))

    def load_sharded(self, folder: Path, optimizer: Any) -> None:
        """Inverse of save_sharded, into the sharded model and optimizer (collective)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        state = self._state(optimizer)
        dcp.load(state, checkpoint_id=str(folder / SHARDED_DIR))
        set_state_dict(
            self.holder, optimizer, model_state_dict=state["model"],
            optim_state_dict=state["optim"],
            options=StateDictOptions(ignore_frozen_params=True),
        )  # fmt: skip


def local_bytes(params: list[torch.nn.Parameter], optimizer: Any = None) -> dict[str, int]:
    """Bytes this process holds for `params` (their local shards) and their AdamW state."""

    import torch

    def size(t: Any) -> int:
        t = t.to_local() if _is_dtensor(t) else t
        return t.numel() * t.element_size()

    out = {"params": sum(size(p) for p in params)}
    if optimizer is not None:  # the moments; AdamW's scalar step counters are left out
        states = [v for s in optimizer.state.values() for v in s.values()]
        out["optimizer"] = sum(size(v) for v in states if isinstance(v, torch.Tensor) and v.dim())
    return out


def _is_dtensor(t: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)
