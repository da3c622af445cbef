"""Our training step timed: one optimiser step through `Method.training_loss`, as the shared
loop runs it, and the figures an entry of the training table carries."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spt_bench.bench.profiling import PeakMemory, peak_memory_gb, profile_once, time_steps
from spt_bench.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from spt_bench.bench.settings import BenchSettings
    from spt_bench.models import Backbone

LEAN_OFF_LABEL = " without lean activations"


@dataclass
class TrainFigures:
    name: str
    kind: str  # "ours" | "plain"
    k: int
    step_s: float
    step_s_all: list[float]
    examples_per_s: float
    tokens_per_s: float
    peak_memory_bytes: int | None
    memory_kind: str
    first_loss: float | None
    logits: str  # which logits the loss computes

    def to_json(self) -> dict:
        d = asdict(self)
        d["peak_memory_gb"] = peak_memory_gb(self.peak_memory_bytes)
        return d


def train_figures(
    name: str, kind: str, k: int, times: list[float], batch: Any, mem: PeakMemory,
    first_loss: float | None, logits: str,
) -> TrainFigures:  # fmt: skip
    """Median step time and the rates it gives for `batch`."""
    med = statistics.median(times)
    return TrainFigures(
        name=name,
        kind=kind,
        k=k,
        step_s=med,
        step_s_all=[round(x, 5) for x in times],
        examples_per_s=len(batch) / med,
        tokens_per_s=int(batch.attention_mask.sum()) / med,
        peak_memory_bytes=mem.peak_bytes,
        memory_kind=mem.kind,
        first_loss=first_loss,
        logits=logits,
    )


def build_bench_method(backbone: Backbone, name: str, settings: BenchSettings, train: list) -> Any:
    """A registered method over `backbone`, seeded, with the options its `bench_options` hook
    takes from the bench's knobs (K, prompt length)."""
    from spt_bench.methods import get_method, make_options
    from spt_bench.session import method_over

    cls = get_method(name)
    options = make_options(cls, cls.bench_options(settings.method_knobs()))
    return method_over(backbone, cls, options, train, seed=settings.seed)


def soft_prompts(method: Any) -> torch.Tensor | None:
    """The method's prompt tensor [K, L, d] if it has one (for the plain reference)."""
    prompts = method.soft_prompts()
    return None if prompts is None else prompts.detach().float()


def checkpointing_label(fraction: float) -> str:
    """Entry-name suffix: '' (off), ' + activation checkpointing' (all layers) or with a share."""
    if not fraction:
        return ""
    if fraction >= 1:
        return " + activation checkpointing"
    return f" + activation checkpointing ({fraction:.0%} of layers)"


def bench_method_step(
    method: Any,
    batch: Any,
    settings: BenchSettings,
    device: torch.device,
    *,
    checkpointing: float = 0.0,
    lean: bool = True,
) -> TrainFigures:
    """Our training step: Method.training_loss + backward + AdamW, as spt_bench.train runs it.
    `checkpointing`: the fraction of decoder layers whose activations are recomputed in backward
    instead of kept (the loop's --activation-checkpointing; same loss, less memory, more time).
    `lean`: the loop's lean RMSNorm/MLP backward (on by default, as in the loop)."""
    import torch

    from spt_bench.lean_autograd import set_lean_activations
    from spt_bench.models import autocast, set_activation_checkpointing

    params = [p for p in method.trainable_parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f"method {method.name!r} has no trainable parameters to benchmark")
    opt = torch.optim.AdamW(params, lr=1e-4)
    model = method.backbone.model
    if checkpointing:
        set_activation_checkpointing(model, checkpointing)
    set_lean_activations(model, lean)
    method.set_train_mode(True)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with autocast(device):
            loss, comps = method.training_loss(batch)
        loss.backward()
        opt.step()
        return float(comps.get("nll", loss.detach()))

    with PeakMemory(device) as mem:
        times, losses = time_steps(step, settings.reps, settings.warmup, device)
    if settings.profile_dir and method.bench.profile and not checkpointing and lean:
        profile_once(step, device, Path(settings.profile_dir) / "train_profile.txt")
    if checkpointing:
        set_activation_checkpointing(model, 0.0)
    set_lean_activations(model, False)  # the plain reference runs transformers' own modules
    method.set_train_mode(False)
    k = int(getattr(method.options, "k", 1))
    name = method.name + checkpointing_label(checkpointing) + ("" if lean else LEAN_OFF_LABEL)
    return train_figures(name, "ours", k, times, batch, mem, losses[0], "response positions")
