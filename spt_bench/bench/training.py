"""Training-step figures: every benchmarked method on the loop's typical batch, the variants its
`bench` hook asks for (lean activations off, activation checkpointing), its plain reference,
and the ratios between them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from spt_bench.bench.plain import bench_plain_step
from spt_bench.bench.profiling import free
from spt_bench.bench.steps import (
    LEAN_OFF_LABEL,
    TrainFigures,
    bench_method_step,
    build_bench_method,
    checkpointing_label,
    soft_prompts,
)

if TYPE_CHECKING:  # pragma: no cover
    from spt_bench.bench.settings import BenchSettings
    from spt_bench.data.example import Example
    from spt_bench.models import Backbone


def _announcer(
    entries: list[TrainFigures], say: Callable[[str], None] | None
) -> Callable[[TrainFigures], None]:
    """`add(entry)`: keep the entry and log a line about it as it is measured."""

    def add(e: TrainFigures) -> None:
        entries.append(e)
        if say is not None:
            mem = "n/a" if e.peak_memory_bytes is None else f"{e.peak_memory_bytes / 2**30:.2f} GiB"
            say(f"train {e.name}: {e.step_s * 1000:.1f} ms/step, {e.examples_per_s:.1f} ex/s, "
                f"peak {mem} ({e.memory_kind})")  # fmt: skip

    return add


def _variants(method: Any, settings: BenchSettings) -> Iterator[dict[str, Any]]:
    """The steps timed for a method: as the loop runs it, then what its `bench` hook allows -
    without lean activations, and with activation checkpointing at each fraction."""
    entry = method.bench
    yield {}
    if entry.lean_compare and settings.lean_compare:
        yield {"lean": False}
    for fraction in settings.checkpointing if entry.checkpointing else ():
        yield {"checkpointing": fraction}


def _typical_batch(
    method: Any, examples: list[Example], settings: BenchSettings, encoded_by_template: dict
) -> tuple[Any, dict[str, float]]:
    """The loop's typical batch under the method's prompt template (examples encoded once per
    template), on the device, and the epoch's padding figures."""
    from spt_bench.data.formatting import collate_train

    backbone = method.backbone
    formatter = method.build_formatter()
    if formatter.template_used not in encoded_by_template:
        encoded_by_template[formatter.template_used] = [
            formatter.encode_train(ex) for ex in examples
        ]
    encoded = encoded_by_template[formatter.template_used]
    rows, padding = typical_train_batch(encoded, settings.batch_size, settings.seed)
    batch = collate_train([encoded[i] for i in rows], backbone.pad_token_id)
    return batch.to(backbone.device), padding


def bench_training(
    backbone: Backbone, examples: list[Example], settings: BenchSettings,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Every method in `settings.methods` and its plain reference, on one batch. `say` gets a
    line per entry as it is measured (a run cut off later still leaves its figures in the log)."""
    device = backbone.device
    entries: list[TrainFigures] = []
    add = _announcer(entries, say)
    batch = None
    encoded_by_template: dict[str, list] = {}
    padding: dict[str, float] = {}
    for name in settings.methods:
        method = build_bench_method(backbone, name, settings, examples)
        batch, padding = _typical_batch(method, examples, settings, encoded_by_template)
        prompts = soft_prompts(method) if settings.plain_reference else None
        if prompts is not None:  # as initialised: the plain reference starts from the same prompts
            prompts = prompts.clone()
        for i, variant in enumerate(list(_variants(method, settings))):
            if i:  # every variant starts from a freshly built (same-seed) method
                del method
                free(device)
                method = build_bench_method(backbone, name, settings, examples)
            add(bench_method_step(method, batch, settings, device, **variant))
        del method
        free(device)
        if prompts is not None:
            plain = bench_plain_step(backbone, prompts, batch, settings, device)
            plain.name = f"plain transformers, same prompts as {name} (K={prompts.shape[0]})"
            add(plain)
            free(device)
    assert batch is not None
    by = {e.name: e for e in entries}
    return {
        "batch_size": len(batch),
        "batch": "the training loop's micro-batch of median padded length (epoch 0)",
        "padded_length": int(batch.input_ids.shape[1]),
        "epoch_padding": padding,
        "tokens": int(batch.attention_mask.sum()),
        "response_tokens": int((batch.labels != -100).sum()),
        "reps": settings.reps,
        "warmup": settings.warmup,
        "entries": [e.to_json() for e in by.values()],
        "ratios": train_ratios(entries, settings),
    }


def _ratio_pair(ratios: dict[str, float], key: str, a: TrainFigures, b: TrainFigures) -> None:
    """`key_time` (a's step time over b's) and, where both were measured, `key_memory`."""
    ratios[f"{key}_time"] = a.step_s / b.step_s
    if a.peak_memory_bytes and b.peak_memory_bytes:
        ratios[f"{key}_memory"] = a.peak_memory_bytes / b.peak_memory_bytes


def train_ratios(entries: list[TrainFigures], settings: BenchSettings) -> dict[str, float]:
    """Method over the method its bench hook names (`relative_to`), lean over transformers' own
    autograd, checkpointed over not, and each method against its plain reference."""
    from spt_bench.methods import get_method

    ours = {e.name: e for e in entries if e.kind == "ours"}
    ratios: dict[str, float] = {}
    for name in settings.methods:
        other = get_method(name).bench.relative_to
        if other and name in ours and other in ours:
            key = f"{name}_over_{other}".replace("-", "_")
            _ratio_pair(ratios, key, ours[name], ours[other])
    for name in settings.methods:
        plain_autograd = ours.get(name + LEAN_OFF_LABEL)
        if plain_autograd is not None and name in ours:
            _ratio_pair(ratios, f"{name}_lean_over_plain_autograd", ours[name], plain_autograd)
    for fraction in settings.checkpointing:
        for name in settings.methods:
            ckpt = ours.get(name + checkpointing_label(fraction))
            if ckpt is None or name not in ours:
                continue
            key = f"{name}_checkpointing" + ("" if fraction >= 1 else f"_{fraction:g}")
            _ratio_pair(ratios, f"{key}_over_{name}", ckpt, ours[name])
    for e in entries:
        if e.kind != "plain":
            continue
        for name, o in ours.items():
            if e.name.endswith(f"as {name} (K={o.k})"):
                ratios[f"{name}_speedup_over_plain"] = e.step_s / o.step_s
                if o.peak_memory_bytes and e.peak_memory_bytes:
                    ratios[f"{name}_memory_over_plain"] = o.peak_memory_bytes / e.peak_memory_bytes
    return ratios


def typical_train_batch(
    encoded: list, batch_size: int, seed: int
) -> tuple[list[int], dict[str, float]]:
    """Rows of a typical batch of the shared training loop (its length-bucketed epoch-0
    micro-batches; the full one of median padded length), and the epoch's padding: padded
    tokens per real token with length bucketing (as the loop runs) and without it."""
    from spt_bench.train import MicroBatchStream, TrainSettings

    lengths = [len(e.input_ids) for e in encoded]
    real = sum(lengths)
    settings = TrainSettings(batch_size=batch_size, seed=seed)
    padding: dict[str, float] = {}
    chosen: list[int] = []
    for label, lens in (("bucketed", lengths), ("random", None)):
        stream = MicroBatchStream(len(encoded), settings, lens)
        batches = [stream.micro_batches(s)[0][1] for s in range(stream.per_epoch)]
        padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
        padding[f"{label}_padded_over_real_tokens"] = padded / real
        if label == "bucketed":
            full = [b for b in batches if len(b) == batch_size] or batches
            full.sort(key=lambda b: max(lengths[i] for i in b))
            chosen = sorted(full[len(full) // 2])
    return chosen, padding
