"""`spt-bench bench`: speed and memory of our training step, decoding and scoring, measured in one
process on the same inputs against plain PyTorch / transformers.

What is measured (docs/performance.md explains how to read it):

- training: one optimiser step (forward, backward, AdamW) on the same batch of `batch_size`
  examples for `spt` (K prompts, default 4) and `prompt-tuning`, through `Method.training_loss`
  exactly as the shared loop runs it (bf16 autocast on CUDA); and the plain reference: the same
  batch with the same soft prompts prepended through `inputs_embeds`, all K prompts as one batch
  of K x B sequences, loss from `model(...).loss` (full-vocabulary logits at every position).
  Median step time over `reps` steps after `warmup` steps, examples/s, tokens/s (non-padding
  tokens of the batch, as train_log.jsonl counts them), peak memory (CUDA: max allocated; CPU:
  growth of the peak resident set size while stepping, where Linux lets us reset it) and the
  first step's LM loss (ours vs plain must agree: same prompts, same batch).
- decoding: our evaluation decoding (`spt_bench.decode.decode`, the path `spt-bench run` uses,
  predictions file included) vs plain `model.generate` on the same prompts (same soft-prompt
  prefix through `inputs_embeds`, same batch size, greedy, same `max_new_tokens`, stopping at
  EOS or any newline token via the `eos_token_id` list), as responses/s and their ratio, plus
  the fraction of identical responses. Both sort prompts by length and exclude a warm-up batch.
- scoring: `metrics.score_predictions` on our predictions (BERTScore only with `--bertscore`);
  "n/a" when the scorer's libraries are not installed (e.g. on a bare GPU box).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib.util
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spt_bench.batches import longest_first
from spt_bench.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from spt_bench.data.example import Example
    from spt_bench.models import Backbone

AUTO = "auto"
CPU_DEFAULT_N_DECODE = 128
CPU_DEFAULT_DECODE_BATCH = 32
SCORER_MODULES = ("sacrebleu", "rouge_score")


@dataclass
class BenchSettings:
    """Settings of one benchmark run (see the module doc)."""

    model: str = "smollm2-135m"
    data: str | None = None  # None -> the bundled sample
    device: str | None = None
    dtype: str | None = None
    batch_size: int = 32
    reps: int = 5
    warmup: int = 2
    k: int = 4
    prompt_len: int = 8
    methods: tuple[str, ...] = ("spt", "prompt-tuning")
    plain_reference: bool = True
    # decoding: our path at each of `decode_batch_sizes`, plain generate at each of
    # `generate_batch_sizes` (None -> the same sizes as ours); "auto" = largest that fits
    n_decode: int | None = None  # None -> all examples on CUDA, 128 on CPU
    decode_batch_sizes: tuple[int | str, ...] = (AUTO,)
    generate_batch_sizes: tuple[int | str, ...] | None = None
    decode_method: str = "spt"
    decode_reps: int = 1
    # our decoder's engines to time (decode.DECODE_ENGINES); each at every decode batch size
    decode_engines: tuple[str, ...] | str = ("hf",)
    max_new_tokens: int = 32
    plain_generate: bool = True
    score: bool = True
    bertscore: bool = False
    seed: int = 0
    profile_dir: str | None = None  # torch.profiler tables of one spt step and one decode batch
    # also time spt with activation checkpointing of these fractions of the frozen LM's layers
    # (memory for time); True = (1.0,), or "0.25,1" from the command line
    checkpointing: tuple[float, ...] | bool | str = ()
    # also time spt with transformers' own RMSNorm/MLP autograd (what lean activations save)
    lean_compare: bool = True
    train: bool = True  # False: decoding (and scoring) figures only

    def __post_init__(self) -> None:
        for name in ("batch_size", "reps", "k", "prompt_len", "decode_reps", "max_new_tokens"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"bench: {name.replace('_', '-')} must be >= 1")
        if self.warmup < 0:
            raise ConfigError("bench: warmup must be >= 0")
        self.checkpointing = parse_checkpointing(self.checkpointing)
        if self.n_decode is not None and self.n_decode < 0:
            raise ConfigError("bench: --n-decode must be >= 0")
        self.decode_batch_sizes = parse_batch_sizes(self.decode_batch_sizes, "--decode-batch-size")
        self.decode_engines = parse_engines(self.decode_engines)
        if self.generate_batch_sizes is not None:
            self.generate_batch_sizes = parse_batch_sizes(
                self.generate_batch_sizes, "--generate-batch-size"
            )


def parse_engines(values: Any) -> tuple[str, ...]:
    """'hf,vllm' / ['hf'] -> ('hf', 'vllm'); unknown names are a clear error."""
    from spt_bench.config import DECODE_ENGINES

    if isinstance(values, str):
        values = [v.strip().lower() for v in values.split(",") if v.strip()]
    out = tuple(dict.fromkeys(values))
    bad = [v for v in out if v not in DECODE_ENGINES]
    if bad or not out:
        raise ConfigError(
            f"--decode-engine: {', '.join(bad) or 'nothing given'}; "
            f"choose from {', '.join(DECODE_ENGINES)}"
        )
    return out


def parse_batch_sizes(values: Any, flag: str) -> tuple[int | str, ...]:
    """'auto,256' / ['auto', 256] -> ('auto', 256); rejects anything else with a clear error."""
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    out: list[int | str] = []
    for v in values:
        v = v.strip().lower() if isinstance(v, str) else v
        if v == AUTO:
            out.append(AUTO)
            continue
        try:
            n = int(v)
        except (TypeError, ValueError):
            raise ConfigError(f"{flag}: {v!r} is neither a positive integer nor 'auto'") from None
        if n < 1:
            raise ConfigError(f"{flag}: batch sizes must be >= 1, got {n}")
        out.append(n)
    if not out:
        raise ConfigError(f"{flag}: give at least one batch size")
    return tuple(dict.fromkeys(out))


# ---------------------------------------------------------------------------- measuring


def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _read_status_kb(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _release_free_heap() -> None:
    """Hand memory freed by earlier measurements back to the OS (glibc keeps freed chunks of
    the heap otherwise, and a later measurement would reuse them without growing the RSS)."""
    import ctypes

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process; False where unsupported."""
    _release_free_heap()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass
class PeakMemory:
    """Peak memory while the body runs. CUDA: max allocated bytes (absolute, weights included);
    CPU: growth of the peak resident set over the RSS at entry, after freed heap memory went
    back to the OS (None where not measurable; a rough figure - the allocator may still reuse
    memory it kept)."""

    device: Any
    peak_bytes: int | None = None
    kind: str = "n/a"
    _rss0: int | None = None

    def __enter__(self) -> PeakMemory:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.kind = "cuda_max_allocated"
        elif _reset_peak_rss():
            self._rss0 = _read_status_kb("VmRSS")
            self.kind = "cpu_peak_rss_growth"
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
        elif self._rss0 is not None:
            hwm = _read_status_kb("VmHWM")
            self.peak_bytes = None if hwm is None else max(0, hwm - self._rss0) * 1024
            if self.peak_bytes is None:
                self.kind = "n/a"


def time_steps(
    step: Callable[[], Any], reps: int, warmup: int, device: torch.device
) -> tuple[list[float], list[Any]]:
    """Run `step` warmup + reps times; (timed seconds of the last `reps`, every return value)."""
    times: list[float] = []
    results: list[Any] = []
    for i in range(warmup + reps):
        _sync(device)
        t0 = time.perf_counter()
        results.append(step())
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times, results


def profile_once(fn: Callable[[], Any], device: torch.device, path: Path) -> None:
    """Run `fn` once under torch.profiler; write the operator table (top 40 by device time on
    CUDA, CPU time elsewhere) to `path` - where a later optimisation should look first."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        fn()
        _sync(device)
    table = None
    for key in ("device_time_total", "cuda_time_total") if cuda else ("cpu_time_total",):
        try:
            table = prof.key_averages().table(sort_by=key, row_limit=40)
            break
        except (AttributeError, KeyError, ValueError):
            continue
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(table or prof.key_averages().table(row_limit=40))


def _free(device: torch.device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------- training


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
        d["peak_memory_gb"] = (
            None if self.peak_memory_bytes is None else round(self.peak_memory_bytes / 2**30, 3)
        )
        return d


def _method_options(name: str, settings: BenchSettings) -> dict[str, Any]:
    import dataclasses

    from spt_bench.methods import get_method

    fields = {f.name for f in dataclasses.fields(get_method(name).Options)}
    wanted = {"k": settings.k, "prompt_len": settings.prompt_len}
    return {k: v for k, v in wanted.items() if k in fields}


def build_bench_method(backbone: Backbone, name: str, settings: BenchSettings, train: list) -> Any:
    """A registered method over `backbone`, seeded, with the bench's K and prompt length."""
    import torch

    from spt_bench.methods import get_method, make_options

    cls = get_method(name)
    torch.manual_seed(settings.seed)
    method = cls(backbone, make_options(cls, _method_options(name, settings)))
    method.setup(train, seed=settings.seed)
    return method


def _soft_prompts(method: Any) -> torch.Tensor | None:
    """The method's prompt tensor [K, L, d] if it has one (for the plain reference)."""
    prompts = method.soft_prompts()
    return None if prompts is None else prompts.detach().float()


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
    if settings.profile_dir and method.name == "spt" and not checkpointing and lean:
        profile_once(step, device, Path(settings.profile_dir) / "train_profile.txt")
    if checkpointing:
        set_activation_checkpointing(model, 0.0)
    set_lean_activations(model, False)  # the plain reference runs transformers' own modules
    method.set_train_mode(False)
    k = int(getattr(method.options, "k", 1))
    name = method.name + checkpointing_label(checkpointing) + ("" if lean else LEAN_OFF_LABEL)
    return _figures(name, "ours", k, times, batch, mem, losses[0], "response positions")


def parse_checkpointing(value: Any) -> tuple[float, ...]:
    """--checkpointing: True -> (1.0,), False/None -> (), "0.25,1" -> (0.25, 1.0)."""
    if value is None or value is False:
        return ()
    if value is True:
        return (1.0,)
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        fractions = tuple(float(x) for x in items if str(x).strip())
    except ValueError:
        raise ConfigError(
            f"bench: --checkpointing takes fractions like 0.25,1; got {value!r}"
        ) from None
    for f in fractions:
        if not 0 < f <= 1:
            raise ConfigError(f"bench: --checkpointing fractions must be in (0, 1], got {f}")
    return fractions


LEAN_OFF_LABEL = " without lean activations"


def checkpointing_label(fraction: float) -> str:
    """Entry-name suffix: '' (off), ' + activation checkpointing' (all layers) or with a share."""
    if not fraction:
        return ""
    if fraction >= 1:
        return " + activation checkpointing"
    return f" + activation checkpointing ({fraction:.0%} of layers)"


def bench_plain_step(
    backbone: Backbone,
    prompts: torch.Tensor,
    batch: Any,
    settings: BenchSettings,
    device: torch.device,
) -> TrainFigures:
    """Plain transformers reference: K prompts prepended via inputs_embeds, one batch of K x B
    sequences, `model(...).loss` over full-vocabulary logits, backward, AdamW on the prompts."""
    import torch

    from spt_bench.models import autocast

    model = backbone.model
    k, plen, d = prompts.shape
    param = torch.nn.Parameter(prompts.clone().to(device))
    opt = torch.optim.AdamW([param], lr=1e-4)
    b, t = batch.input_ids.shape
    mask = torch.cat([batch.attention_mask.new_ones(b, plen), batch.attention_mask], 1).repeat(k, 1)
    labels = torch.cat([batch.labels.new_full((b, plen), -100), batch.labels], 1).repeat(k, 1)
    model.eval()

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with autocast(device):
            tok = model.get_input_embeddings()(batch.input_ids)
            prefix = param.to(tok.dtype)[:, None].expand(k, b, plen, d)
            embeds = torch.cat([prefix, tok[None].expand(k, b, t, d)], dim=2)
            out = model(
                inputs_embeds=embeds.reshape(k * b, plen + t, d),
                attention_mask=mask,
                labels=labels,
            )
        out.loss.backward()
        opt.step()
        return float(out.loss.detach())

    with PeakMemory(device) as mem:
        times, losses = time_steps(step, settings.reps, settings.warmup, device)
    name = f"plain transformers (K={k})"
    return _figures(name, "plain", k, times, batch, mem, losses[0], "full vocabulary")


def _figures(
    name: str, kind: str, k: int, times: list[float], batch: Any, mem: PeakMemory,
    first_loss: float | None, logits: str,
) -> TrainFigures:  # fmt: skip
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


def bench_training(
    backbone: Backbone, examples: list[Example], settings: BenchSettings,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Every method in `settings.methods` and its plain reference, on one batch. `say` gets a
    line per entry as it is measured (a run cut off later still leaves its figures in the log)."""
    from spt_bench.data.formatting import collate_train

    device = backbone.device
    entries: list[TrainFigures] = []

    def add(e: TrainFigures) -> None:
        entries.append(e)
        if say is not None:
            mem = "n/a" if e.peak_memory_bytes is None else f"{e.peak_memory_bytes / 2**30:.2f} GiB"
            say(f"train {e.name}: {e.step_s * 1000:.1f} ms/step, {e.examples_per_s:.1f} ex/s, "
                f"peak {mem} ({e.memory_kind})")  # fmt: skip

    batch = None
    encoded_by_template: dict[str, list] = {}
    padding: dict[str, float] = {}
    for name in settings.methods:
        method = build_bench_method(backbone, name, settings, examples)
        formatter = method.build_formatter()
        if formatter.template_used not in encoded_by_template:
            encoded_by_template[formatter.template_used] = [
                formatter.encode_train(ex) for ex in examples
            ]
        encoded = encoded_by_template[formatter.template_used]
        rows, padding = typical_train_batch(encoded, settings.batch_size, settings.seed)
        batch = collate_train([encoded[i] for i in rows], backbone.pad_token_id).to(device)
        prompts = _soft_prompts(method) if settings.plain_reference else None
        if prompts is not None:  # as initialised: the plain reference starts from the same prompts
            prompts = prompts.clone()
        add(bench_method_step(method, batch, settings, device))
        if name == "spt" and settings.lean_compare:
            del method
            _free(device)
            method = build_bench_method(backbone, name, settings, examples)
            add(bench_method_step(method, batch, settings, device, lean=False))
        for fraction in settings.checkpointing if name == "spt" else ():
            del method
            _free(device)
            method = build_bench_method(backbone, name, settings, examples)
            add(bench_method_step(method, batch, settings, device, checkpointing=fraction))
        del method
        _free(device)
        if prompts is not None:
            plain = bench_plain_step(backbone, prompts, batch, settings, device)
            plain.name = f"plain transformers, same prompts as {name} (K={prompts.shape[0]})"
            add(plain)
            _free(device)
    assert batch is not None
    by = {e.name: e for e in entries}
    ratios: dict[str, float] = {}
    ours = {e.name: e for e in entries if e.kind == "ours"}
    if "spt" in ours and "prompt-tuning" in ours:
        ratios["spt_over_prompt_tuning_time"] = ours["spt"].step_s / ours["prompt-tuning"].step_s
        a, b = ours["spt"].peak_memory_bytes, ours["prompt-tuning"].peak_memory_bytes
        if a and b:
            ratios["spt_over_prompt_tuning_memory"] = a / b
    plain_autograd = ours.get("spt" + LEAN_OFF_LABEL)
    if plain_autograd is not None and "spt" in ours:
        ratios["spt_lean_over_plain_autograd_time"] = ours["spt"].step_s / plain_autograd.step_s
        a, b = ours["spt"].peak_memory_bytes, plain_autograd.peak_memory_bytes
        if a and b:
            ratios["spt_lean_over_plain_autograd_memory"] = a / b
    for fraction in settings.checkpointing:
        ckpt = ours.get("spt" + checkpointing_label(fraction))
        if ckpt is None or "spt" not in ours:
            continue
        key = "spt_checkpointing" + ("" if fraction >= 1 else f"_{fraction:g}")
        ratios[f"{key}_over_spt_time"] = ckpt.step_s / ours["spt"].step_s
        a, b = ckpt.peak_memory_bytes, ours["spt"].peak_memory_bytes
        if a and b:
            ratios[f"{key}_over_spt_memory"] = a / b
    for e in entries:
        if e.kind != "plain":
            continue
        for name, o in ours.items():
            if e.name.endswith(f"as {name} (K={o.k})"):
                ratios[f"{name}_speedup_over_plain"] = e.step_s / o.step_s
                if o.peak_memory_bytes and e.peak_memory_bytes:
                    ratios[f"{name}_memory_over_plain"] = o.peak_memory_bytes / e.peak_memory_bytes
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
        "ratios": ratios,
    }


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


# ---------------------------------------------------------------------------- decoding


def kv_bytes_per_token(backbone: Backbone) -> int:
    """Bytes of KV cache one token costs across all layers (K and V)."""
    import torch

    cfg = backbone.model.config
    cfg = getattr(cfg, "get_text_config", lambda: cfg)()
    heads = int(cfg.num_attention_heads)
    kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
    elem = torch.finfo(backbone.dtype).bits // 8
    return 2 * int(cfg.num_hidden_layers) * kv_heads * head_dim * elem


def largest_decode_batch(
    backbone: Backbone,
    max_prompt_len: int,
    n_prompts: int,
    *,
    prefix_len: int = 0,
    max_new_tokens: int = 32,
    memory_fraction: float = 0.8,
    cpu_default: int = CPU_DEFAULT_DECODE_BATCH,
) -> int:
    """The largest decoding batch that should fit: on CUDA from free memory and the per-row cost
    of the longest prompt (KV cache for prompt + prefix + new tokens, the prefill's transient
    activations, the last-position logits); the decoder still halves on an out-of-memory. On CPU
    (compute-bound: bigger batches buy nothing) `cpu_default`."""
    import torch

    n_prompts = max(1, n_prompts)
    if backbone.device.type != "cuda":
        return min(cpu_default, n_prompts)
    cfg = backbone.model.config
    cfg = getattr(cfg, "get_text_config", lambda: cfg)()
    elem = torch.finfo(backbone.dtype).bits // 8
    seq = max_prompt_len + prefix_len
    inter = int(getattr(cfg, "intermediate_size", 4 * cfg.hidden_size))
    kv = kv_bytes_per_token(backbone) * (seq + max_new_tokens)
    prefill = seq * elem * (3 * inter + 8 * int(cfg.hidden_size))
    logits = 3 * 4 * int(cfg.vocab_size)
    per_row = kv + prefill + logits
    free, _ = torch.cuda.mem_get_info(backbone.device)
    return int(max(1, min(n_prompts, memory_fraction * free // per_row)))


@dataclass
class DecodeFigures:
    path: str  # "ours" | "plain generate"
    batch_size: int
    requested: int | str
    seconds: float | None
    seconds_all: list[float] = field(default_factory=list)
    responses_per_s: float | None = None
    new_tokens: int | None = None
    peak_memory_bytes: int | None = None
    memory_kind: str = "n/a"
    error: str | None = None
    oom_halvings: int = 0  # our decoder halves a batch that does not fit and goes on
    engine: str | None = None  # ours: decode.DECODE_ENGINES; plain generate: None
    engine_start_s: float | None = None  # vllm engine: start (once), not in `seconds`

    def to_json(self) -> dict:
        d = asdict(self)
        d["peak_memory_gb"] = (
            None if self.peak_memory_bytes is None else round(self.peak_memory_bytes / 2**30, 3)
        )
        return d


def _is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def stop_and_newline_ids(backbone: Backbone) -> tuple[list[int], list[int]]:
    """(EOS ids, ids of every token containing a newline): the plain path's eos_token_id list
    stops exactly where our decoder does."""
    from spt_bench.models import stop_tokens

    stops = stop_tokens(backbone)
    return sorted(stops.eos), sorted(stops.newline)


def plain_generate(
    method: Any,
    formatter: Any,
    examples: list[Example],
    batch_size: int,
    max_new_tokens: int,
) -> tuple[dict[str, str], int]:
    """Plain `model.generate` over `examples`: length-sorted, left-padded batches, the method's
    soft-prompt prefix through inputs_embeds, greedy, stopping at EOS or a newline token.
    Returns ({example id: cleaned response}, generated tokens)."""
    import torch

    from spt_bench.data.formatting import collate_generate
    from spt_bench.decode import build_prefixed_inputs, clean_response
    from spt_bench.models import autocast

    backbone = method.backbone
    stop, newline = stop_and_newline_ids(backbone)
    stop_set, newline_set = set(stop), set(newline)
    prompts = [formatter.prompt_ids(ex) for ex in examples]
    order = longest_first([len(p) for p in prompts])
    out: dict[str, str] = {}
    n_tokens = 0
    method.set_train_mode(False)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = collate_generate(
            [prompts[i] for i in idx], backbone.pad_token_id, [examples[i] for i in idx]
        ).to(backbone.device)
        with torch.inference_mode(), autocast(backbone.device):
            embeds, mask, _ = build_prefixed_inputs(method, batch)
            generated = backbone.model.generate(
                inputs_embeds=embeds,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                eos_token_id=stop + newline,
                pad_token_id=backbone.pad_token_id,
            )
        rows: list[list[int]] = []
        for toks in generated.tolist():
            kept: list[int] = []
            for t in toks:
                if t in stop_set:
                    break
                kept.append(t)
                if t in newline_set:
                    break
            rows.append(kept)
            n_tokens += len(kept)
        texts = backbone.tokenizer.batch_decode(rows, skip_special_tokens=True)
        for j, i in enumerate(idx):
            out[examples[i].id] = clean_response(texts[j])
    return out, n_tokens


def _longest(examples: list[Example], formatter: Any, n: int) -> list[Example]:
    lengths = [len(formatter.prompt_ids(ex)) for ex in examples]
    order = longest_first(lengths)[:n]
    return [examples[i] for i in sorted(order)]


def _resolve_batch(
    requested: int | str, backbone: Backbone, formatter: Any, examples: list[Example],
    prefix_len: int, settings: BenchSettings,
) -> int:  # fmt: skip
    if requested != AUTO:
        return min(int(requested), max(1, len(examples)))
    longest = max(len(formatter.prompt_ids(ex)) for ex in examples)
    return largest_decode_batch(
        backbone, longest, len(examples), prefix_len=prefix_len,
        max_new_tokens=settings.max_new_tokens,
    )  # fmt: skip


def bench_decoding(
    backbone: Backbone, train: list[Example], examples: list[Example], settings: BenchSettings,
    work_dir: Path, say: Callable[[str], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Our decoder vs plain generate over `examples` at the requested batch sizes. Every
    configuration gets an untimed warm-up on its longest batch; the timed passes are interleaved
    (ours, plain, ours, plain, ...) so a machine whose load drifts biases neither side."""
    from spt_bench.decode import DecodeSettings, decode

    device = backbone.device
    method = build_bench_method(backbone, settings.decode_method, settings, train)
    formatter = method.build_formatter()
    prefix_len = method.prefix_length()
    resolved: dict[int | str, int] = {}
    for req in settings.decode_batch_sizes:
        resolved[req] = _resolve_batch(req, backbone, formatter, examples, prefix_len, settings)
    jobs: list[DecodeFigures] = []
    for engine in settings.decode_engines:
        for req in settings.decode_batch_sizes:
            bs = resolved[req]
            if any(j.batch_size == bs and j.engine == engine for j in jobs):
                continue  # "auto" may equal a given size
            job = DecodeFigures("ours", bs, req, None, engine=engine)
            if engine == "vllm":
                from spt_bench.vllm_engine import require_vllm

                require_vllm()
            jobs.append(job)
    if settings.plain_generate:
        for req in settings.generate_batch_sizes or settings.decode_batch_sizes:
            bs = resolved.get(req) or _resolve_batch(
                req, backbone, formatter, examples, prefix_len, settings
            )
            if all(j.batch_size != bs for j in jobs if j.path == "plain generate"):
                jobs.append(DecodeFigures("plain generate", bs, req, None))
    predictions: dict[tuple[str, int], list[dict]] = {}
    plain_predictions: dict[int, dict[str, str]] = {}
    peaks: dict[int, tuple[int | None, str]] = {}
    times: dict[int, list[float]] = {i: [] for i in range(len(jobs))}
    # one operator profile per engine: of its last configuration's warm-up
    profiled = {
        max(i for i, j in enumerate(jobs) if j.engine == e): e
        for e in {j.engine for j in jobs if j.path == "ours" and not j.error}
    }

    def run(i: int, subset: list[Example], tag: str) -> tuple[Any, int]:
        job = jobs[i]
        if job.path == "ours":
            ds = DecodeSettings(
                max_new_tokens=settings.max_new_tokens, batch_size=job.batch_size,
                engine=job.engine,
            )  # fmt: skip
            rows, stats = decode(method, formatter, subset, ds, work_dir / f"{tag}-{i}.jsonl")
            job.oom_halvings = max(job.oom_halvings, stats.oom_halvings)
            if job.engine == "vllm":
                job.engine_start_s = (job.engine_start_s or 0.0) + stats.engine_start_s
            return rows, stats.new_tokens
        return plain_generate(method, formatter, subset, job.batch_size, settings.max_new_tokens)

    for rep in range(-1, settings.decode_reps):  # rep -1: warm-up on the longest batch
        for i, job in enumerate(jobs):
            if job.error:
                continue
            subset = examples if rep >= 0 else _longest(examples, formatter, job.batch_size)
            try:
                if rep < 0 and settings.profile_dir and i in profiled:
                    run(i, subset, "warm")
                    suffix = "" if profiled[i] == "hf" else f"_{profiled[i]}"
                    profile_once(
                        functools.partial(run, i, subset, "prof"), device,
                        Path(settings.profile_dir) / f"decode_profile{suffix}.txt",
                    )  # fmt: skip
                    continue
                with PeakMemory(device) as mem:
                    _sync(device)
                    t0 = time.perf_counter()
                    out, n_tok = run(i, subset, f"rep{rep}")
                    _sync(device)
                    seconds = time.perf_counter() - t0
            except Exception as e:  # an OOM is a figure too; anything else is a bug
                if not _is_oom(e):
                    raise
                job.error = "out of memory"
                _free(device)
                continue
            if rep < 0:
                continue
            times[i].append(seconds)
            if say is not None:
                label = job.path + (f" ({job.engine} engine)" if job.engine else "")
                say(f"decode {label}, batch {job.batch_size}: {seconds:.2f} s (pass {rep + 1})")
            job.new_tokens = n_tok
            old = peaks.get(i, (None, mem.kind))[0]
            peaks[i] = (max(old or 0, mem.peak_bytes or 0) or None, mem.kind)
            if job.path == "ours":
                predictions[(job.engine, job.batch_size)] = out
            else:
                plain_predictions[job.batch_size] = out
    for i, job in enumerate(jobs):
        if job.error or not times[i]:
            continue
        job.seconds = statistics.median(times[i])
        job.seconds_all = [round(t, 4) for t in times[i]]
        job.responses_per_s = len(examples) / job.seconds
        job.peak_memory_bytes, job.memory_kind = peaks[i]
    ours = [j for j in jobs if j.path == "ours"]
    plain = [j for j in jobs if j.path != "ours"]
    return _decode_summary(examples, ours, plain, predictions, plain_predictions, settings)


def _decode_summary(
    examples: list[Example], ours: list[DecodeFigures], plain: list[DecodeFigures],
    predictions: dict[tuple[str, int], list[dict]], plain_predictions: dict[int, dict[str, str]],
    settings: BenchSettings,
) -> dict[str, Any]:  # fmt: skip
    ok_ours = [f for f in ours if f.seconds]
    ok_plain = [f for f in plain if f.seconds]

    def identical(rows: list[dict], theirs: dict[str, str]) -> float:
        return sum(r["prediction"] == theirs.get(r["id"]) for r in rows) / max(1, len(rows))

    comparisons = []
    for f in ok_ours:
        assert f.seconds is not None
        engine = f.engine
        rows = predictions[(engine, f.batch_size)]
        row: dict[str, Any] = {"engine": engine, "batch_size": f.batch_size}
        same = next((p for p in ok_plain if p.batch_size == f.batch_size), None)
        if same is not None:
            assert same.seconds is not None
            row["speedup_same_batch"] = same.seconds / f.seconds
            row["identical_responses"] = identical(rows, plain_predictions[f.batch_size])
        hf = next((h for h in ok_ours if h.engine == "hf" and h.batch_size == f.batch_size), None)
        if engine != "hf" and hf is not None:
            assert hf.seconds is not None
            row["speedup_over_hf_engine"] = hf.seconds / f.seconds
            hf_rows = predictions[("hf", f.batch_size)]
            row["identical_to_hf_engine"] = identical(
                rows, {r["id"]: r["prediction"] for r in hf_rows}
            )
        comparisons.append(row)
    best_ours = min(ok_ours, key=lambda f: f.seconds or 0, default=None)
    best_plain = min(ok_plain, key=lambda f: f.seconds or 0, default=None)
    summary: dict[str, Any] = {
        "n": len(examples),
        "method": settings.decode_method,
        "max_new_tokens": settings.max_new_tokens,
        "greedy": True,
        "reps": settings.decode_reps,
        "engines": list(settings.decode_engines),
        "ours": [f.to_json() for f in ours],
        "plain_generate": [f.to_json() for f in plain],
        "comparisons": comparisons,
    }
    if best_ours is not None:
        summary["best_ours"] = {
            "engine": best_ours.engine,
            "batch_size": best_ours.batch_size,
            "seconds": best_ours.seconds,
        }
    if best_plain is not None:
        summary["best_plain"] = {"batch_size": best_plain.batch_size, "seconds": best_plain.seconds}
    if best_ours is not None and best_plain is not None:
        assert best_ours.seconds and best_plain.seconds
        summary["speedup_best_vs_best"] = best_plain.seconds / best_ours.seconds
    if best_ours is not None:
        rows = predictions[(best_ours.engine, best_ours.batch_size)]
        stops: dict[str, int] = {}
        for r in rows:
            stops[str(r.get("stop"))] = stops.get(str(r.get("stop")), 0) + 1
        # how early rows stop decides what per-row stopping can save
        summary["stop_reasons"] = stops
        summary["mean_new_tokens"] = sum(r.get("n_new_tokens", 0) for r in rows) / max(1, len(rows))
        summary["_rows"] = rows
    return summary


# ---------------------------------------------------------------------------- scoring


def scorer_available() -> tuple[bool, str | None]:
    missing = [m for m in SCORER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        return False, f"n/a ({', '.join(missing)} not installed here; score the predictions on CPU)"
    return True, None


def bench_scoring(rows: list[dict], settings: BenchSettings) -> dict[str, Any]:
    ok, why = scorer_available()
    if not ok:
        return {"seconds": None, "note": why}
    if settings.bertscore and importlib.util.find_spec("bert_score") is None:
        return {"seconds": None, "note": "n/a (bert-score not installed here)"}
    from metrics import BertScoreOptions, score_predictions

    t0 = time.perf_counter()
    report = score_predictions(rows, bertscore=BertScoreOptions() if settings.bertscore else None)
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "rows": len(rows),
        "rows_per_s": len(rows) / seconds if seconds > 0 else None,
        "bertscore": settings.bertscore,
        "stages": {k: round(v, 4) for k, v in report.timings.items()},
        "overall": {k: round(v, 4) for k, v in report.overall.items()},
    }


# ---------------------------------------------------------------------------- the benchmark


@contextlib.contextmanager
def _work_dir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="spt-bench-bench.") as tmp:
        yield Path(tmp)


def run_bench(
    settings: BenchSettings,
    *,
    console: Any = None,
    predictions_out: Path | None = None,
    log: Callable[[str], None] | None = None,
    on_partial: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the whole benchmark; returns the JSON-ready figures (see the module doc).
    `predictions_out` (a .jsonl path) keeps our decoder's predictions for later scoring;
    `on_partial` receives the figures so far once training is measured (so a run cut off
    during decoding still leaves them)."""
    import torch

    from spt_bench.data import load_examples
    from spt_bench.env import collect_env
    from spt_bench.models import load_backbone

    say = log or (lambda msg: None)
    t_all = time.perf_counter()
    examples = load_examples(settings.data if settings.data is not None else "sample")
    if not examples:
        raise ConfigError(f"bench: no examples in {settings.data or 'sample'}")
    t0 = time.perf_counter()
    backbone = load_backbone(settings.model, device=settings.device, dtype=settings.dtype)
    load_s = time.perf_counter() - t0
    device = backbone.device
    say(f"loaded {settings.model} on {device} ({backbone.dtype}) in {load_s:.1f}s")
    n_decode = settings.n_decode
    if n_decode is None:
        n_decode = len(examples) if device.type == "cuda" else CPU_DEFAULT_N_DECODE
    decode_examples = examples[: min(n_decode, len(examples))]
    result: dict[str, Any] = {
        "model": settings.model,
        "data": settings.data or "sample",
        "n_examples": len(examples),
        "device": str(device),
        "dtype": str(backbone.dtype).replace("torch.", ""),
        "settings": {**asdict(settings), "n_decode": len(decode_examples)},
        "env": collect_env(device, backbone.dtype),
        "model_load_s": round(load_s, 3),
        "torch_threads": torch.get_num_threads(),
    }
    if settings.train:
        say(f"training step: batch {settings.batch_size}, {settings.reps} reps")
        result["train"] = bench_training(backbone, examples, settings, say)
    if on_partial is not None and settings.train:
        on_partial({**result, "partial": "training done, decoding not yet"})
    if decode_examples:
        say(f"decoding {len(decode_examples)} prompts")
        with _work_dir(None) as work:
            dec = bench_decoding(backbone, examples, decode_examples, settings, work, say)
        rows = dec.pop("_rows", None)
        result["decode"] = dec
        if rows is not None and predictions_out is not None:
            from spt_bench.io import append_jsonl

            predictions_out.unlink(missing_ok=True)
            append_jsonl(predictions_out, rows)
            result["predictions_file"] = str(predictions_out)
        if rows is not None and settings.score:
            say("scoring")
            result["score"] = bench_scoring(rows, settings)
    result["total_s"] = round(time.perf_counter() - t_all, 2)
    return result


# ---------------------------------------------------------------------------- rendering


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def _mem(d: dict) -> str:
    gb = d.get("peak_memory_gb")
    if gb is None:
        return "n/a"
    if d.get("memory_kind") == "cpu_peak_rss_growth":
        return f"+{gb * 1024:.0f} MB RSS"
    return f"{gb:.2f} GB"


def render_bench(result: dict[str, Any], console: Any) -> None:
    """Rich tables: training step, decoding, scorer."""
    from rich.table import Table

    console.print(
        f"[bold]spt-bench bench[/]: {result['model']} on {result['device']} ({result['dtype']}), "
        f"data {result['data']} ({result['n_examples']} examples)"
    )
    tr = result.get("train")
    if tr:
        t = Table(
            title=f"training step: batch {tr['batch_size']}, padded length {tr['padded_length']}, "
            f"median of {tr['reps']} (warm-up {tr['warmup']} excluded)"
        )
        for col in ("", "K", "logits", "step ms", "examples/s", "tokens/s", "peak memory",
                    "first loss"):  # fmt: skip
            t.add_column(col, justify="left" if col in ("", "logits") else "right")
        for e in tr["entries"]:
            t.add_row(
                e["name"], str(e["k"]), e["logits"], _fmt(e["step_s"] * 1000),
                _fmt(e["examples_per_s"]), _fmt(e["tokens_per_s"], ".0f"), _mem(e),
                _fmt(e["first_loss"], ".4f"),
            )  # fmt: skip
        console.print(t)
        pad = tr.get("epoch_padding") or {}
        if pad:
            console.print(
                "  padded/real tokens over an epoch: "
                f"[bold]{pad['bucketed_padded_over_real_tokens']:.2f}x[/] with length bucketing "
                f"(the loop), {pad['random_padded_over_real_tokens']:.2f}x with random batches"
            )
        for k, v in tr["ratios"].items():
            console.print(f"  {k.replace('_', ' ')}: [bold]{v:.2f}x[/]")
    dec = result.get("decode")
    if dec:
        t = Table(
            title=f"decoding {dec['n']} prompts ({dec['method']}, greedy, <= "
            f"{dec['max_new_tokens']} new tokens, stop at EOS/newline)"
        )
        for col in ("path", "batch", "seconds", "responses/s", "new tokens", "peak memory"):
            t.add_column(col, justify="left" if col == "path" else "right")
        for f in dec["ours"] + dec["plain_generate"]:
            label = f["path"] + (f" ({f['engine']} engine)" if f.get("engine") else "")
            label += f" ({f['requested']})" if f["requested"] == AUTO else ""
            if f.get("engine_start_s") is not None:
                label += f", engine start {f['engine_start_s']:.1f} s (not timed)"
            if f["error"]:
                t.add_row(label, str(f["batch_size"]), f["error"], "-", "-", "-")
                continue
            t.add_row(
                label, str(f["batch_size"]), _fmt(f["seconds"], ".2f"),
                _fmt(f["responses_per_s"]), str(f["new_tokens"]), _mem(f),
            )  # fmt: skip
        console.print(t)
        for c in dec["comparisons"]:
            engine = c.get("engine", "hf")
            if "speedup_same_batch" in c:
                console.print(
                    f"  batch {c['batch_size']}: ours ({engine} engine) "
                    f"[bold]{c['speedup_same_batch']:.2f}x[/] plain generate; identical "
                    f"responses {100 * c['identical_responses']:.1f}%"
                )
            if "speedup_over_hf_engine" in c:
                console.print(
                    f"  batch {c['batch_size']}: {engine} engine "
                    f"[bold]{c['speedup_over_hf_engine']:.2f}x[/] the hf engine; identical "
                    f"responses {100 * c['identical_to_hf_engine']:.1f}%"
                )
        if dec.get("stop_reasons"):
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(dec["stop_reasons"].items()))
            console.print(
                f"  our rows stopped at: {reasons}; mean {dec['mean_new_tokens']:.1f} new tokens"
            )
        if "speedup_best_vs_best" in dec:
            console.print(
                f"  best vs best: ours {dec['best_ours']['seconds']:.2f}s "
                f"({dec['best_ours'].get('engine', 'hf')}, batch "
                f"{dec['best_ours']['batch_size']}) vs plain {dec['best_plain']['seconds']:.2f}s "
                f"(batch {dec['best_plain']['batch_size']}): "
                f"[bold]{dec['speedup_best_vs_best']:.2f}x[/]"
            )
    sc = result.get("score")
    if sc:
        if sc.get("seconds") is None:
            console.print(f"scorer: {sc['note']}")
        else:
            what = "with" if sc["bertscore"] else "without"
            console.print(
                f"scorer ({what} BERTScore): {sc['seconds']:.2f}s for {sc['rows']} predictions "
                f"({sc['rows_per_s']:.0f}/s)"
            )
    console.print(f"[dim]total {result['total_s']:.1f}s[/dim]")
