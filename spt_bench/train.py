"""The one training loop every method goes through.

AdamW on `method.trainable_parameters()`, linear warm-up then linear decay to 0, gradient
clipping, gradient accumulation, a fixed number of optimiser steps (`max_steps`, or `epochs`
over the train set), bf16 autocast on CUDA, dev evaluation every `eval_every` steps (and at the
end) keeping the best checkpoint, optional early stopping.

Determinism: the data order of optimiser step s is a function of (seed, s) only - every epoch is
a permutation drawn from its own seeded generator - so a resumed run sees exactly the batches the
uninterrupted run would have seen; the global torch RNG (dropout) is saved in checkpoints.

Checkpoints live in ``<run>/checkpoint/``: one folder per saved step (``step-000012/`` holding
``trained.safetensors`` = method.trained_state(), for PEFT methods ``adapter/`` = PEFT's own
``save_pretrained`` format, and ``trainer_state.pt`` = optimiser, scheduler
and RNG state, loaded with ``weights_only=True``) and ``state.json`` naming the ``last`` and
``best`` folders. state.json is replaced atomically after a folder is complete, so a kill at any
moment leaves a loadable checkpoint; folders no longer named are deleted.

train_log.jsonl: one row per logging step (``type: "train"``: step, epoch, lr, loss and every
component the method returns, grad_norm, examples/s, tokens/s) and one per evaluation
(``type: "dev"``: dev_loss and whatever `method.dev_metrics` adds).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spt_bench.checkpoints import (  # noqa: F401 - re-exported (callers load weights via train)
    ADAPTER_DIR,
    STATE_FILE,
    TRAINER_FILE,
    WEIGHTS_FILE,
    _Checkpointer,
    _rng_state,
    _set_rng_state,
    load_trained_weights,
    read_checkpoint_state,
    save_trained_state,
)
from spt_bench.config import TrainConfig
from spt_bench.errors import SptBenchError
from spt_bench.io import append_jsonl, read_jsonl
from spt_bench.models import autocast
from spt_bench.progress import ProgressBar, format_rate
from spt_bench.run_folder import RunFolder

if TYPE_CHECKING:  # pragma: no cover
    from spt_bench.batches import TrainBatch
    from spt_bench.data.formatting import EncodedExample
    from spt_bench.methods import Method


class TrainingDiverged(SptBenchError):
    """The loss or gradient became NaN/inf; the last good checkpoint is kept."""


@dataclass
class TrainSettings(TrainConfig):
    """The run config's `train` section plus the run's seed: a knob added to TrainConfig
    reaches the loop with no other edit, and every default is the schema's (one place)."""

    seed: int = 0

    @classmethod
    def from_config(cls, train: TrainConfig, seed: int) -> TrainSettings:
        return cls(**dataclasses.asdict(train), seed=seed)


@dataclass
class TrainResult:
    steps: int
    stopped_early: bool = False
    best_step: int | None = None
    best_dev_loss: float | None = None
    final_dev: dict = field(default_factory=dict)
    seconds: float = 0.0  # this process
    total_seconds: float = 0.0  # all processes of the run, up to the checkpoint resumed
    mean_step_seconds: float | None = None
    examples_per_s: float | None = None
    sharded: bool = False  # FSDP left the method's layers sharded: reload it to decode
    strategy: str | None = None  # ddp / fsdp with several processes, None for one
    # per process: bytes of the model's parameters it holds, of the trainable ones, of AdamW
    memory_per_process: list[dict[str, int]] = field(default_factory=list)


# ---------------------------------------------------------------------------- data order


def steps_per_epoch(n_examples: int, settings: TrainSettings) -> int:
    micro = math.ceil(n_examples / settings.batch_size)
    return max(1, math.ceil(micro / settings.grad_accum))


def total_steps(n_examples: int, settings: TrainSettings) -> int:
    if settings.max_steps is not None:
        return settings.max_steps
    return max(1, math.ceil(settings.epochs * steps_per_epoch(n_examples, settings)))


class MicroBatchStream:
    """Deterministic micro-batch index lists: step s uses micro-batches [s*ga, (s+1)*ga).

    Each epoch is a seeded permutation. With `lengths`, the permutation is cut into windows of
    `BUCKET_WINDOW` micro-batches, each window sorted by length before being split, and the
    resulting micro-batches shuffled again: rows of similar length share a batch (little
    padding) while the order stays random and depends only on (seed, epoch).
    """

    BUCKET_WINDOW = 16

    def __init__(
        self, n_examples: int, settings: TrainSettings, lengths: list[int] | None = None
    ) -> None:
        self.n = n_examples
        self.bs = settings.batch_size
        self.ga = settings.grad_accum
        self.seed = settings.seed
        self.lengths = lengths
        self.per_epoch = math.ceil(n_examples / self.bs)
        self._cache: dict[int, list[list[int]]] = {}

    def _epoch(self, epoch: int) -> list[list[int]]:
        if epoch not in self._cache:
            import torch

            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            perm = torch.randperm(self.n, generator=g).tolist()
            if self.lengths is None:
                batches = [perm[i : i + self.bs] for i in range(0, self.n, self.bs)]
            else:
                window = self.bs * self.BUCKET_WINDOW
                batches = []
                for w in range(0, self.n, window):
                    chunk = sorted(perm[w : w + window], key=lambda i: self.lengths[i])
                    batches += [chunk[i : i + self.bs] for i in range(0, len(chunk), self.bs)]
                order = torch.randperm(len(batches), generator=g).tolist()
                batches = [batches[i] for i in order]
            self._cache = {epoch: batches}
        return self._cache[epoch]

    def micro_batches(self, step: int) -> list[tuple[int, list[int]]]:
        """[(epoch, example indices)] of the micro-batches of optimiser step `step` (0-based).
        Within an epoch an optimiser step takes `ga` micro-batches; the last step of an epoch
        may take fewer, and epochs never mix inside a step."""
        steps_epoch = math.ceil(self.per_epoch / self.ga)
        epoch, s = divmod(step, steps_epoch)
        mbs = self._epoch(epoch)[s * self.ga : (s + 1) * self.ga]
        return [(epoch, mb) for mb in mbs]

    def epoch_float(self, step: int) -> float:
        steps_epoch = math.ceil(self.per_epoch / self.ga)
        return (step + 1) / steps_epoch


# ---------------------------------------------------------------------------- the loop


def _lr_factor(step: int, total: int, warmup: int, schedule: str = "linear") -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    left = max(0.0, (total - step) / max(1, total - warmup))  # 1 -> 0 after warm-up
    return 0.5 * (1.0 - math.cos(math.pi * left)) if schedule == "cosine" else left


def evaluate_dev(method: Method, dev_batches: list[TrainBatch]) -> dict[str, Any]:
    method.set_train_mode(False)
    with autocast(method.backbone.device):
        return method.dev_metrics([b.to(method.backbone.device) for b in dev_batches])


def train(
    method: Method,
    train_encoded: list[EncodedExample],
    dev_batches: list[TrainBatch],
    settings: TrainSettings,
    run_dir: str | Path | RunFolder,
    *,
    pad_id: int,
    resume: bool = False,
    progress: bool = True,
    console: Any = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train `method` on `train_encoded`; writes train_log.jsonl and checkpoint/ in run_dir.

    `on_step(step)` is called after every optimiser step (1-based step count, after any
    checkpoint for that step was written) - tests use it to simulate a kill.
    """
    if settings.lr is None:
        raise SptBenchError("train.lr is unset: resolve the run config first")
    if not train_encoded:
        raise SptBenchError("the train split is empty: nothing to train on")
    loop = _TrainingLoop(method, train_encoded, dev_batches, settings, RunFolder.of(run_dir),
                         pad_id=pad_id)  # fmt: skip
    if resume and loop.ckpt.state.get("last"):
        loop.restore()
    else:
        loop.start_fresh()
    loop.dist.wait()
    loop.t_start = time.perf_counter()
    if loop.start_step >= loop.n_total and loop.ckpt.state.get("finished"):
        return loop.already_finished()
    with loop.memory_settings():
        bar = _progress(progress and loop.dist.is_main, console, loop.n_total, loop.start_step)
        try:
            loop.run(bar, on_step)
        finally:
            if bar is not None:
                bar.close()
    return loop.finish()


class _TrainingLoop:
    """The state of one `train` call: optimiser, schedule, data order, checkpoints, counters.
    Its methods are the loop's stages (restore, one optimiser step, evaluation, saving)."""

    def __init__(
        self,
        method: Method,
        train_encoded: list[EncodedExample],
        dev_batches: list[TrainBatch],
        settings: TrainSettings,
        folder: RunFolder,
        *,
        pad_id: int,
    ) -> None:
        import torch

        from spt_bench.distributed import ddp_wrap, get_dist
        from spt_bench.fsdp import check_launcher_strategy

        self.method, self.train_encoded, self.dev_batches = method, train_encoded, dev_batches
        self.settings, self.folder, self.pad_id = settings, folder, pad_id
        self.device = method.backbone.device
        # Several processes (accelerate launch): each takes its rows of every micro-batch and
        # DDP averages the gradients (or FSDP shards the layers: spt_bench.fsdp); only the
        # main process writes logs and checkpoints.
        self.dist = get_dist()
        self.sharded = None
        check_launcher_strategy(settings.strategy, self.dist.enabled)
        if settings.strategy == "fsdp" and self.dist.enabled:
            from spt_bench.fsdp import ShardedTraining

            self.sharded = ShardedTraining(method, self.dist)
            self.params = self.sharded.params
        else:
            self.params = [p for p in method.trainable_parameters() if p.requires_grad]
        if not self.params:
            raise SptBenchError(f"method {method.name!r} reports no trainable parameters")
        self.ddp = ddp_wrap(method, self.params) if self.sharded is None else None
        self.loss_fn = self.ddp if self.ddp is not None else method.training_loss
        self.n_total = total_steps(len(train_encoded), settings)
        warmup = int(round(settings.warmup_ratio * self.n_total))
        lengths = [len(e.input_ids) for e in train_encoded] if settings.bucket_by_length else None
        self.stream = MicroBatchStream(len(train_encoded), settings, lengths)
        if self.sharded is not None:
            self.optimizer = self.sharded.optimizer(settings.lr, settings.weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(
                self.params, lr=settings.lr, weight_decay=settings.weight_decay
            )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: _lr_factor(s, self.n_total, warmup, settings.lr_schedule)
        )
        self.eval_every = settings.eval_every
        self.save_every = settings.save_every or settings.eval_every
        self.ckpt = _Checkpointer(folder)
        self.log_path = folder.train_log
        self.start_step = 0
        self.prior_seconds = 0.0  # training time of earlier processes, up to the checkpoint
        self.best_loss = float("inf")
        self.bad_evals = 0
        self.t_start = time.perf_counter()
        self.result = TrainResult(steps=0)
        self.step_times: list[float] = []
        self.n_seen = 0
        self.stopped_early = False
        self.step = 0

    # ---- where training starts

    def restore(self) -> None:
        """Continue from the last checkpoint: weights, optimiser, schedule, RNG, counters."""
        import torch
        from safetensors.torch import load_file

        last = self.ckpt.root / self.ckpt.state["last"]
        trainer = torch.load(last / TRAINER_FILE, weights_only=True, map_location="cpu")
        if self.sharded is not None:  # weights and AdamW state from the sharded checkpoint
            self.sharded.load_sharded(last, self.optimizer)
        elif "optimizer" not in trainer:  # an FSDP checkpoint: AdamW's state is sharded
            raise SptBenchError(
                f"{last} was written by FSDP training (AdamW state in {last.name}/sharded/): "
                "resume it under `accelerate launch` with --strategy fsdp"
            )
        else:
            state = load_file(str(last / WEIGHTS_FILE), device=str(self.device))
            self.method.load_trained_state(state)
            self.optimizer.load_state_dict(trainer["optimizer"])
        self.scheduler.load_state_dict(trainer["scheduler"])
        _set_rng_state(trainer["rng"])
        self.start_step = int(trainer["step"])
        self.best_loss = float(trainer.get("best_loss", float("inf")))
        self.bad_evals = int(trainer.get("bad_evals", 0))
        self.prior_seconds = float(trainer.get("train_seconds") or 0.0)
        if self.log_path.is_file() and self.dist.is_main:  # later rows are written again
            rows = list(read_jsonl(self.log_path, tolerate_truncated_tail=True))
            kept = [r for r in rows if int(r.get("step", 0)) <= self.start_step]
            tmp = self.log_path.with_suffix(".jsonl.tmp")
            tmp.unlink(missing_ok=True)
            append_jsonl(tmp, kept)
            tmp.replace(self.log_path)

    def start_fresh(self) -> None:
        import torch

        self.ckpt.state = {}
        if self.dist.is_main:
            self.log_path.unlink(missing_ok=True)
            for d in self.ckpt.root.glob("step-*"):
                shutil.rmtree(d, ignore_errors=True)
            (self.ckpt.root / STATE_FILE).unlink(missing_ok=True)
        torch.manual_seed(self.settings.seed)

    def already_finished(self) -> TrainResult:
        result = TrainResult(steps=self.start_step, sharded=self.sharded is not None)
        result.total_seconds = float(self.ckpt.state.get("train_seconds") or self.prior_seconds)
        result.best_step = self.ckpt.state.get("best_step")
        result.best_dev_loss = self.ckpt.state.get("best_dev_loss")
        return result

    @contextlib.contextmanager
    def memory_settings(self) -> Any:
        """Activation checkpointing and lean activations for the loop only."""
        model, s = self.method.backbone.model, self.settings
        if s.activation_checkpointing:
            from spt_bench.models import set_activation_checkpointing

            set_activation_checkpointing(model, s.activation_checkpointing)
        if s.lean_activations:
            from spt_bench.lean_autograd import set_lean_activations

            set_lean_activations(model, True)
        try:
            yield
        finally:
            if s.activation_checkpointing:
                set_activation_checkpointing(model, 0.0)
            if s.lean_activations:
                set_lean_activations(model, False)

    # ---- the loop

    def run(self, bar: ProgressBar | None, on_step: Callable[[int], None] | None) -> None:
        self.result.steps = self.step = self.start_step
        while self.step < self.n_total:
            t0 = time.perf_counter()
            loss, comps, grad_norm, lr, n_ex, n_tok = self.optimizer_step()
            dt = time.perf_counter() - t0
            self.step_times.append(dt)
            loss, comps, n_ex, n_tok = self.reduce_over_processes(loss, comps, n_ex, n_tok)
            self.n_seen += n_ex
            self.log_train(loss, comps, grad_norm, lr, n_ex, n_tok, dt)
            if bar is not None:
                bar.update(self.step, loss=f"{loss:.3f}", speed=format_rate(n_ex, dt))
            improved = self.maybe_evaluate()
            self.maybe_save(improved)
            if on_step is not None:
                on_step(self.step)
            if self.stopped_early:
                break

    def optimizer_step(self) -> tuple[float, dict[str, float], float, float, int, int]:
        """One optimiser step over its micro-batches: (mean loss, mean components, grad norm,
        lr used, examples, tokens) of this process."""
        import torch

        from spt_bench.data.formatting import collate_train
        from spt_bench.distributed import shard_rows

        self.method.set_train_mode(True)
        micro = self.stream.micro_batches(self.step)
        n_micro = len(micro)
        comps_sum: dict[str, float] = {}
        loss_sum = 0.0
        n_ex = n_tok = 0
        self.optimizer.zero_grad(set_to_none=True)
        for m, (_, idx) in enumerate(micro):
            idx = shard_rows(idx, self.dist)
            rows = [self.train_encoded[i] for i in idx]
            batch = collate_train(rows, self.pad_id).to(self.device)
            # DDP: average gradients once per optimiser step, at its last micro-batch
            sync = self.ddp is None or m == n_micro - 1
            no_sync = contextlib.nullcontext() if sync else self.ddp.no_sync()
            with autocast(self.device), no_sync:
                loss, comps = self.loss_fn(batch)
            self._check_finite(bool(torch.isfinite(loss.detach()).all()), "loss")
            with contextlib.nullcontext() if sync else self.ddp.no_sync():
                (loss / n_micro).backward()
            loss_sum += float(loss.detach())
            for k, v in comps.items():
                comps_sum[k] = comps_sum.get(k, 0.0) + float(v)
            n_ex += len(batch)
            n_tok += int(batch.attention_mask.sum())
        if self.sharded is not None:
            self.sharded.average_replicated_grads()
        grad_norm = self._grad_norm()
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        comps_mean = {k: v / n_micro for k, v in comps_sum.items()}
        return loss_sum / n_micro, comps_mean, grad_norm, lr, n_ex, n_tok

    def _check_finite(self, finite: bool, what: str) -> None:
        if not (all(self.dist.all_gather(finite)) if self.dist.enabled else finite):
            raise TrainingDiverged(_diverged_msg(self.step + 1, what, self.ckpt.state))

    def _grad_norm(self) -> float:
        import torch

        if self.sharded is not None:
            norm = self.sharded.clip_grad_norm(self.settings.max_grad_norm)
        elif self.settings.max_grad_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.settings.max_grad_norm)
        else:
            grads = [p.grad.norm() for p in self.params if p.grad is not None]
            norm = torch.linalg.vector_norm(torch.stack(grads))
        if not math.isfinite(float(norm)):
            raise TrainingDiverged(_diverged_msg(self.step + 1, "gradient", self.ckpt.state))
        return float(norm)

    def reduce_over_processes(
        self, loss: float, comps: dict[str, float], n_ex: int, n_tok: int
    ) -> tuple[float, dict[str, float], int, int]:
        """The mean over processes of the logged values; every process's rows counted."""
        if not self.dist.enabled:
            return loss, comps, n_ex, n_tok
        means = self.dist.mean({"loss": loss, **comps})
        loss = means.pop("loss")
        return loss, means, int(self.dist.sum(n_ex)), int(self.dist.sum(n_tok))

    def log_train(self, loss: float, comps: dict, grad_norm: float, lr: float, n_ex: int,
                  n_tok: int, dt: float) -> None:  # fmt: skip
        step = self.step
        if not self.dist.is_main or not (
            step % self.settings.log_every == 0 or step == self.n_total
        ):
            return
        row = {
            "type": "train",
            "step": step,
            "epoch": round(self.stream.epoch_float(step - 1), 4),
            "lr": lr,
            "loss": loss,
            **comps,
            "grad_norm": grad_norm,
            "examples_per_s": n_ex / dt,
            "tokens_per_s": n_tok / dt,
            "step_seconds": dt,
        }
        append_jsonl(self.log_path, [row])

    def maybe_evaluate(self) -> bool:
        """Dev loss at evaluation steps (and the last); True when it improved. Sets
        `stopped_early` when the patience runs out."""
        step, every = self.step, self.eval_every
        is_last = step == self.n_total
        if not (self.dev_batches and (is_last or (every is not None and step % every == 0))):
            return False
        dev = evaluate_dev(self.method, self.dev_batches)
        dev_loss = float(dev["dev_loss"])
        improved = dev_loss < self.best_loss
        if improved:
            self.best_loss = dev_loss
            self.bad_evals = 0
            self.ckpt.mark_best(dev_loss, step)
        else:
            self.bad_evals += 1
        if self.dist.is_main:
            append_jsonl(self.log_path, [{"type": "dev", "step": step, **dev, "best": improved}])
        self.result.final_dev = dev
        patience = self.settings.early_stopping_patience
        if patience is not None and self.bad_evals >= patience:
            self.stopped_early = True
        return improved

    def maybe_save(self, improved: bool) -> None:
        step, every = self.step, self.save_every
        do_save = step == self.n_total or self.stopped_early or improved
        do_save = do_save or (every is not None and step % every == 0)
        if do_save and self.sharded is not None:
            self._save_sharded(step, improved)
        elif do_save and self.dist.is_main:
            self.ckpt.save(self.method, self.trainer_state(), step, best=improved)
        if do_save:
            self.dist.wait()

    def _save_sharded(self, step: int, best: bool) -> None:
        """FSDP: every process writes its shards of the trained and AdamW state (resume),
        then the main process the gathered trained state (one-process loading)."""
        import torch

        staging = self.ckpt.staging(step, clear=self.dist.is_main)
        self.dist.wait()
        self.sharded.save_sharded(staging, self.optimizer)
        with self.sharded.whole_weights():
            if self.dist.is_main:
                save_trained_state(self.method, staging)
        self.dist.wait()
        if self.dist.is_main:
            trainer = self.trainer_state()
            torch.save(trainer, staging / TRAINER_FILE)
            self.ckpt.publish(staging, self.method, step, best=best,
                              train_seconds=trainer["train_seconds"])  # fmt: skip

    def trainer_state(self) -> dict[str, Any]:
        return {
            # FSDP: AdamW's state is in the sharded checkpoint
            **({"optimizer": self.optimizer.state_dict()} if self.sharded is None else {}),
            "scheduler": self.scheduler.state_dict(),
            "rng": _rng_state(),
            "step": self.step,
            "best_loss": self.best_loss,
            "bad_evals": self.bad_evals,
            "train_seconds": self.prior_seconds + (time.perf_counter() - self.t_start),
        }

    def memory(self) -> dict[str, int]:
        """Bytes this process holds (local shards under FSDP) for the backbone's and the
        method's parameters, the trainable ones, and AdamW's state."""
        from spt_bench.fsdp import decoder_layers, local_bytes

        trainable = {id(p) for p in self.params}
        model = self.method.backbone.model
        held = list(model.parameters())
        in_model = {id(p) for p in held}
        held += [p for p in self.params if id(p) not in in_model]
        try:
            layers = [p for m in decoder_layers(model) for p in m.parameters()]
        except SptBenchError:
            layers = []
        return {
            "params": local_bytes(held)["params"],
            "decoder_layers": local_bytes(layers)["params"],  # what FSDP shards
            "trainable": local_bytes(self.params)["params"],
            "optimizer": local_bytes([], self.optimizer)["optimizer"],
            "frozen": local_bytes([p for p in held if id(p) not in trainable])["params"],
        }

    def finish(self) -> TrainResult:
        result = self.result
        result.steps = self.step
        result.sharded = self.sharded is not None
        result.strategy = self.settings.strategy if self.dist.enabled else None
        result.memory_per_process = self.dist.all_gather(self.memory())
        result.stopped_early = self.stopped_early
        result.best_step = self.ckpt.state.get("best_step")
        result.best_dev_loss = self.best_loss if math.isfinite(self.best_loss) else None
        result.seconds = time.perf_counter() - self.t_start
        result.total_seconds = self.prior_seconds + result.seconds
        if self.step_times:
            timed = self.step_times[1:] or self.step_times  # step 1 pays one-off warm-up costs
            result.mean_step_seconds = sum(timed) / len(timed)
            result.examples_per_s = self.n_seen / sum(self.step_times)
        if self.dist.is_main:
            self.ckpt.finish(result)
        self.dist.wait()
        return result


def _diverged_msg(step: int, what: str, state: dict) -> str:
    last = state.get("last")
    keep = f"the last good checkpoint ({last}) is kept" if last else "no checkpoint was saved"
    return (
        f"training stopped at step {step}: the {what} became NaN/inf; {keep}. "
        "Try a lower train.lr or a smaller train.max_grad_norm."
    )


def _progress(enabled: bool, console: Any, total: int, done: int) -> ProgressBar | None:
    fields = {"loss": "loss {}", "speed": "{}"}
    return ProgressBar(console, "train", total, done, fields, unit="step") if enabled else None
