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
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spt_bench.config import TrainConfig
from spt_bench.errors import SptBenchError
from spt_bench.io import append_jsonl, atomic_write_json, read_jsonl
from spt_bench.models import autocast
from spt_bench.progress import ProgressBar, format_rate
from spt_bench.run_folder import RunFolder

if TYPE_CHECKING:  # pragma: no cover
    from spt_bench.batches import TrainBatch
    from spt_bench.data.formatting import EncodedExample
    from spt_bench.methods import Method

STATE_FILE = "state.json"
WEIGHTS_FILE = "trained.safetensors"
ADAPTER_DIR = "adapter"  # PEFT methods: save_pretrained's folder, next to WEIGHTS_FILE
TRAINER_FILE = "trainer_state.pt"


class TrainingDiverged(SptBenchError):
    """The loss or gradient became NaN/inf; the last good checkpoint is kept."""


@dataclass
class TrainSettings(TrainConfig):
    """The run config's `train` section plus the run's seed: a knob added to TrainConfig
    reaches the loop with no other edit. Library defaults: epochs (no step cap), batch 8."""

    seed: int = 0
    max_steps: int | None = None
    batch_size: int = 8
    lr: float | None = 1e-4

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


# ---------------------------------------------------------------------------- checkpoints


def _rng_state() -> dict[str, Any]:
    import random

    import numpy as np
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    state["python"] = json.dumps(random.getstate())
    np_state = np.random.get_state()
    state["numpy"] = (torch.from_numpy(np_state[1].astype("int64")), int(np_state[2]))
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    py = json.loads(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    keys, pos = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype("uint32"), pos))


def read_checkpoint_state(run_dir: str | Path | RunFolder) -> dict | None:
    path = RunFolder.of(run_dir).checkpoint_dir / STATE_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def save_trained_state(method: Method, folder: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in method.trained_state().items()}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"method": method.name})
    method.save_adapter(folder / ADAPTER_DIR)  # PEFT methods: a folder plain PEFT loads


def load_trained_weights(
    method: Method, run_dir: str | Path | RunFolder, which: str = "final"
) -> str | None:
    """Load the run's checkpoint into `method` ('final' = best if any, else last).
    Returns the folder name loaded, or None when the run has no checkpoint."""
    from safetensors.torch import load_file

    state = read_checkpoint_state(run_dir)
    if state is None:
        return None
    key = which
    if which == "final":
        key = "best" if state.get("best") else "last"
    name = state.get(key)
    if not name:
        return None
    path = RunFolder.of(run_dir).checkpoint_dir / name / WEIGHTS_FILE
    tensors = load_file(str(path), device=str(method.backbone.device))
    method.load_trained_state(tensors)
    return name


class _Checkpointer:
    def __init__(self, run_dir: RunFolder) -> None:
        self.root = run_dir.checkpoint_dir
        self.root.mkdir(parents=True, exist_ok=True)
        self.state: dict[str, Any] = read_checkpoint_state(run_dir) or {}

    def save(self, method: Method, trainer: dict[str, Any], step: int, *, best: bool) -> None:
        import torch

        name = f"step-{step:06d}"
        folder = self.root / name
        tmp = self.root / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_trained_state(method, tmp)
        torch.save(trainer, tmp / TRAINER_FILE)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        self.state["last"] = name
        self.state["last_step"] = step
        if best:
            self.state["best"] = name
            self.state["best_step"] = step
        self.state["method"] = method.name
        self.state["train_seconds"] = trainer.get("train_seconds")
        atomic_write_json(self.root / STATE_FILE, self.state)
        keep = {self.state.get("last"), self.state.get("best")}
        for d in self.root.glob("step-*"):
            if d.name not in keep:
                shutil.rmtree(d, ignore_errors=True)

    def mark_best(self, dev_loss: float, step: int) -> None:
        self.state["best_dev_loss"] = dev_loss
        self.state["best_step"] = step

    def finish(self, result: TrainResult) -> None:
        self.state["finished"] = True
        self.state["steps"] = result.steps
        self.state["stopped_early"] = result.stopped_early
        self.state["train_seconds"] = round(result.total_seconds, 3)
        atomic_write_json(self.root / STATE_FILE, self.state)


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
    import torch

    from spt_bench.data.formatting import collate_train
    from spt_bench.distributed import ddp_wrap, get_dist, shard_rows

    folder = RunFolder.of(run_dir)
    if settings.lr is None:
        raise SptBenchError("train.lr is unset: resolve the run config first")
    if not train_encoded:
        raise SptBenchError("the train split is empty: nothing to train on")
    params = [p for p in method.trainable_parameters() if p.requires_grad]
    if not params:
        raise SptBenchError(f"method {method.name!r} reports no trainable parameters")
    device = method.backbone.device
    # Several processes (accelerate launch): each takes its rows of every micro-batch and DDP
    # averages the gradients; only the main process writes logs and checkpoints.
    dist = get_dist()
    ddp = ddp_wrap(method, params)
    loss_fn = ddp if ddp is not None else method.training_loss
    n_total = total_steps(len(train_encoded), settings)
    warmup = int(round(settings.warmup_ratio * n_total))
    lengths = [len(e.input_ids) for e in train_encoded] if settings.bucket_by_length else None
    stream = MicroBatchStream(len(train_encoded), settings, lengths)
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(s, n_total, warmup, settings.lr_schedule)
    )
    eval_every = settings.eval_every
    save_every = settings.save_every or eval_every
    ckpt = _Checkpointer(folder)
    log_path = folder.train_log

    start_step = 0
    prior_seconds = 0.0  # training time of earlier processes, up to the checkpoint resumed
    best_loss = float("inf")
    bad_evals = 0
    if resume and ckpt.state.get("last"):
        folder = ckpt.root / ckpt.state["last"]
        from safetensors.torch import load_file

        method.load_trained_state(load_file(str(folder / WEIGHTS_FILE), device=str(device)))
        trainer = torch.load(folder / TRAINER_FILE, weights_only=True, map_location="cpu")
        optimizer.load_state_dict(trainer["optimizer"])
        scheduler.load_state_dict(trainer["scheduler"])
        _set_rng_state(trainer["rng"])
        start_step = int(trainer["step"])
        best_loss = float(trainer.get("best_loss", float("inf")))
        bad_evals = int(trainer.get("bad_evals", 0))
        prior_seconds = float(trainer.get("train_seconds") or 0.0)
        if log_path.is_file() and dist.is_main:  # rows after the checkpoint are written again
            rows = [r for r in read_jsonl(log_path, tolerate_truncated_tail=True)]
            kept = [r for r in rows if int(r.get("step", 0)) <= start_step]
            tmp = log_path.with_suffix(".jsonl.tmp")
            tmp.unlink(missing_ok=True)
            append_jsonl(tmp, kept)
            tmp.replace(log_path)
    else:
        ckpt.state = {}
        if dist.is_main:
            log_path.unlink(missing_ok=True)
            for d in ckpt.root.glob("step-*"):
                shutil.rmtree(d, ignore_errors=True)
            (ckpt.root / STATE_FILE).unlink(missing_ok=True)
        torch.manual_seed(settings.seed)
    dist.wait()

    def trainer_state(step: int) -> dict[str, Any]:
        return {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_state(),
            "step": step,
            "best_loss": best_loss,
            "bad_evals": bad_evals,
            "train_seconds": prior_seconds + (time.perf_counter() - t_start),
        }

    result = TrainResult(steps=start_step)
    t_start = time.perf_counter()
    if start_step >= n_total and ckpt.state.get("finished"):
        result.total_seconds = float(ckpt.state.get("train_seconds") or prior_seconds)
        result.best_step = ckpt.state.get("best_step")
        result.best_dev_loss = ckpt.state.get("best_dev_loss")
        return result

    if settings.activation_checkpointing:
        from spt_bench.models import set_activation_checkpointing

        set_activation_checkpointing(method.backbone.model, settings.activation_checkpointing)
    if settings.lean_activations:
        from spt_bench.lean_autograd import set_lean_activations

        set_lean_activations(method.backbone.model, True)
    bar = _progress(progress and dist.is_main, console, n_total, start_step)
    step_times: list[float] = []
    n_seen = 0
    stopped_early = False
    step = start_step
    try:
        while step < n_total:
            t0 = time.perf_counter()
            method.set_train_mode(True)
            micro = stream.micro_batches(step)
            n_micro = len(micro)
            comps_sum: dict[str, float] = {}
            loss_sum = 0.0
            n_ex = n_tok = 0
            optimizer.zero_grad(set_to_none=True)
            for m, (_, idx) in enumerate(micro):
                idx = shard_rows(idx, dist)
                batch = collate_train([train_encoded[i] for i in idx], pad_id).to(device)
                # DDP: average gradients once per optimiser step, at its last micro-batch
                sync = ddp is None or m == n_micro - 1
                with autocast(device), contextlib.nullcontext() if sync else ddp.no_sync():
                    loss, comps = loss_fn(batch)
                finite = bool(torch.isfinite(loss.detach()).all())
                if not (all(dist.all_gather(finite)) if dist.enabled else finite):
                    raise TrainingDiverged(_diverged_msg(step + 1, "loss", ckpt.state))
                with contextlib.nullcontext() if sync else ddp.no_sync():
                    (loss / n_micro).backward()
                loss_sum += float(loss.detach())
                for k, v in comps.items():
                    comps_sum[k] = comps_sum.get(k, 0.0) + float(v)
                n_ex += len(batch)
                n_tok += int(batch.attention_mask.sum())
            if settings.max_grad_norm > 0:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm))
            else:
                grad_norm = float(
                    torch.linalg.vector_norm(
                        torch.stack([p.grad.norm() for p in params if p.grad is not None])
                    )
                )
            if not math.isfinite(grad_norm):
                raise TrainingDiverged(_diverged_msg(step + 1, "gradient", ckpt.state))
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            step += 1
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            dt = time.perf_counter() - t0
            step_times.append(dt)
            row_loss = loss_sum / n_micro
            comps_mean = {k: v / n_micro for k, v in comps_sum.items()}
            if dist.enabled:  # log the mean over processes, count every process's rows
                means = dist.mean({"loss": row_loss, **comps_mean})
                row_loss = means.pop("loss")
                comps_mean = means
                n_ex, n_tok = int(dist.sum(n_ex)), int(dist.sum(n_tok))
            n_seen += n_ex
            if dist.is_main and (step % settings.log_every == 0 or step == n_total):
                row = {
                    "type": "train",
                    "step": step,
                    "epoch": round(stream.epoch_float(step - 1), 4),
                    "lr": lr,
                    "loss": row_loss,
                    **comps_mean,
                    "grad_norm": grad_norm,
                    "examples_per_s": n_ex / dt,
                    "tokens_per_s": n_tok / dt,
                    "step_seconds": dt,
                }
                append_jsonl(log_path, [row])
            if bar is not None:
                bar.update(step, loss=f"{row_loss:.3f}", speed=format_rate(n_ex, dt))

            is_last = step == n_total
            do_eval = bool(dev_batches) and (
                is_last or (eval_every is not None and step % eval_every == 0)
            )
            improved = False
            if do_eval:
                dev = evaluate_dev(method, dev_batches)
                dev_loss = float(dev["dev_loss"])
                improved = dev_loss < best_loss
                if improved:
                    best_loss = dev_loss
                    bad_evals = 0
                    ckpt.mark_best(dev_loss, step)
                else:
                    bad_evals += 1
                if dist.is_main:
                    dev_row = {"type": "dev", "step": step, **dev, "best": improved}
                    append_jsonl(log_path, [dev_row])
                result.final_dev = dev
                if (
                    settings.early_stopping_patience is not None
                    and bad_evals >= settings.early_stopping_patience
                ):
                    stopped_early = True
            do_save = is_last or stopped_early or improved
            do_save = do_save or (save_every is not None and step % save_every == 0)
            if do_save and dist.is_main:
                ckpt.save(method, trainer_state(step), step, best=improved)
            if do_save:
                dist.wait()
            if on_step is not None:
                on_step(step)
            if stopped_early:
                break
    finally:
        if bar is not None:
            bar.close()
        if settings.activation_checkpointing:
            set_activation_checkpointing(method.backbone.model, 0.0)
        if settings.lean_activations:
            set_lean_activations(method.backbone.model, False)
    result.steps = step
    result.stopped_early = stopped_early
    result.best_step = ckpt.state.get("best_step")
    result.best_dev_loss = best_loss if math.isfinite(best_loss) else None
    result.seconds = time.perf_counter() - t_start
    result.total_seconds = prior_seconds + result.seconds
    if step_times:
        timed = step_times[1:] or step_times  # the first step pays one-off warm-up costs
        result.mean_step_seconds = sum(timed) / len(timed)
        result.examples_per_s = n_seen / sum(step_times)
    if dist.is_main:
        ckpt.finish(result)
    dist.wait()
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
