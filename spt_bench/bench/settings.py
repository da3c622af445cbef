"""The settings of one benchmark run and the parsing of their command-line forms.

The methods timed by default and the method whose decoding is timed come from the methods'
`bench` hooks (spt_bench.methods.BenchEntry), not from names spelled here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spt_bench.config import setting
from spt_bench.errors import ConfigError

AUTO = "auto"
CPU_DEFAULT_N_DECODE = 128
CPU_DEFAULT_DECODE_BATCH = 32


def default_train_methods() -> tuple[str, ...]:
    """The methods whose `bench` entry puts them in the default training benchmark, in order."""
    from spt_bench.methods import list_methods

    chosen = [(cls.bench.order, cls.name) for cls in list_methods() if cls.bench.train_default]
    return tuple(name for _, name in sorted(chosen))


def default_decode_method() -> str:
    """The method whose `bench` entry asks for its decoding to be timed by default (else the
    first of the default training benchmark)."""
    from spt_bench.methods import list_methods

    chosen = [cls.name for cls in list_methods() if cls.bench.decode_default]
    if chosen:
        return chosen[0]
    defaults = default_train_methods()
    if not defaults:
        raise ConfigError("bench: no registered method is benchmarked by default; name one")
    return defaults[0]


@dataclass
class BenchSettings:
    """Settings of one benchmark run (see the package doc). Each field is a flag of `spt-bench
    bench`: `config=` names the run-config key whose flag and help it shares, the others
    declare their own (`setting(default, help, flag=...)`), as the run schema does."""

    model: str = setting("smollm2-135m", config="model.name")
    data: str | None = setting(None, config="data.source")  # None -> the bundled sample
    device: str | None = setting(None, config="model.device")
    dtype: str | None = setting(None, config="model.dtype")
    batch_size: int = setting(32, "Training batch size.")
    reps: int = setting(5, "Timed training steps (median reported).")
    warmup: int = setting(2, "Untimed warm-up steps.")
    k: int = setting(4, "Prompts K of the methods that take it (and of the plain reference).")
    prompt_len: int = 8
    methods: tuple[str, ...] = field(default_factory=default_train_methods)
    plain_reference: bool = True
    # decoding: our path at each of `decode_batch_sizes`, plain generate at each of
    # `generate_batch_sizes` (None -> the same sizes as ours); "auto" = largest that fits
    n_decode: int | None = setting(
        None, "Prompts to decode; default: all on CUDA, 128 on CPU.", flag="--n-decode"
    )
    decode_batch_sizes: tuple[int | str, ...] | str = setting(
        (AUTO,),
        "Our decoding batch size(s), comma-separated; 'auto' = largest that fits (CUDA).",
        flag="--decode-batch-size",
    )
    generate_batch_sizes: tuple[int | str, ...] | str | None = setting(
        None,
        "Plain generate batch size(s); default: the same as --decode-batch-size.",
        flag="--generate-batch-size",
    )
    decode_method: str = setting(
        help="Method whose decoding is timed (untrained); default: the one whose bench entry "
        "asks for it.",
        default_factory=default_decode_method,
    )
    decode_reps: int = setting(1, "Timed decoding passes (median).")
    decode_engines: tuple[str, ...] | str = setting(
        ("hf",),
        "Our decoder's engine(s) to time, comma-separated: hf, vllm (e.g. hf,vllm).",
        flag="--decode-engine",
    )
    max_new_tokens: int = setting(32, config="decode.max_new_tokens")
    plain_generate: bool = setting(True, "The plain model.generate reference (decoding).")
    raw_vllm: bool = setting(
        True,
        "With the vllm engine: also time vLLM's own LLM.generate on the same prompt ids and "
        "prompt embeddings, built beforehand (the engine's lower bound).",
    )
    score: bool = True
    bertscore: bool = setting(False, "Include BERTScore in the scorer.")
    seed: int = 0
    profile_dir: str | None = setting(
        None,
        "Write torch.profiler tables here: one training step (of the method whose bench entry "
        "asks for it) and one decode batch per engine.",
        flag="--profile",
    )
    checkpointing: tuple[float, ...] | bool | str = setting(
        (),
        "Also time the methods whose bench entry allows it with activation checkpointing of "
        "these fractions of the frozen LM's layers, e.g. 0.25,1.",
    )
    # also time those methods with transformers' own RMSNorm/MLP autograd (what lean
    # activations save)
    lean_compare: bool = True
    train: bool = setting(
        True, "The training-step figures (--no-train: decoding and scoring only)."
    )
    nli_pairs: int = setting(
        0,
        "Time the NLI C-score on this many (response, persona sentence) pairs of the data with "
        "a DeBERTa-v3-xsmall-shaped classifier of random weights (0: off).",
    )
    nli_batch_size: int = setting(32, "NLI batch size (--nli-pairs).")
    judge_responses: int = setting(
        0, "Time the LLM judge (the benchmarked model, one rubric) on this many responses."
    )
    judge_batch_size: int = setting(8, "Judge batch size (--judge-responses).")
    judge_engine: str = setting("hf", "Judge engine for --judge-responses: hf or vllm.")

    def __post_init__(self) -> None:
        for name in ("batch_size", "reps", "k", "prompt_len", "decode_reps", "max_new_tokens"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"bench: {name.replace('_', '-')} must be >= 1")
        if min(self.nli_pairs, self.judge_responses) < 0:
            raise ConfigError("bench: --nli-pairs and --judge-responses must be >= 0")
        if min(self.nli_batch_size, self.judge_batch_size) < 1:
            raise ConfigError("bench: --nli-batch-size and --judge-batch-size must be >= 1")
        if self.judge_engine not in ("hf", "vllm"):
            raise ConfigError(
                f"bench: --judge-engine must be hf or vllm, got {self.judge_engine!r}"
            )
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

    def method_knobs(self) -> dict[str, Any]:
        """The knobs a method's `bench_options` hook turns into its options."""
        return {"k": self.k, "prompt_len": self.prompt_len}


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
