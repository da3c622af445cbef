"""Decoding figures: our evaluation decoder (each engine, each batch size) against plain
`model.generate` on the same prompts. Every configuration gets an untimed warm-up on its longest
batch; the timed passes are interleaved (ours, plain, ours, plain, ...) so a machine whose load
drifts biases neither side."""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spt_bench.bench.batch_size import longest_examples, resolve_batch
from spt_bench.bench.decode_summary import DecodeFigures, decode_summary
from spt_bench.bench.plain import plain_generate
from spt_bench.bench.profiling import PeakMemory, free, is_oom, profile_once, sync
from spt_bench.bench.steps import build_bench_method

if TYPE_CHECKING:  # pragma: no cover
    from spt_bench.bench.settings import BenchSettings
    from spt_bench.data.example import Example
    from spt_bench.models import Backbone


def plan_jobs(settings: BenchSettings, resolve: Callable[[int | str], int]) -> list[DecodeFigures]:
    """One configuration per engine and distinct resolved batch size of ours, then one per
    distinct batch size of plain generate (`resolve`: a requested size -> the size run)."""
    resolved = {req: resolve(req) for req in settings.decode_batch_sizes}
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
    if settings.raw_vllm and "vllm" in settings.decode_engines:
        from spt_bench.bench.raw_vllm import RAW_KINDS

        for bs in sorted({j.batch_size for j in jobs if j.engine == "vllm"}):
            jobs += [DecodeFigures(f"raw vllm ({kind})", bs, bs, None, engine="vllm")
                     for kind in RAW_KINDS]  # fmt: skip
    if settings.plain_generate:
        for req in settings.generate_batch_sizes or settings.decode_batch_sizes:
            bs = resolved.get(req) or resolve(req)
            if all(j.batch_size != bs for j in jobs if j.path == "plain generate"):
                jobs.append(DecodeFigures("plain generate", bs, req, None))
    return jobs


class DecodePasses:
    """The warm-up and timed passes over the configurations `jobs`, and what they produced."""

    def __init__(
        self, method: Any, formatter: Any, examples: list[Example], settings: BenchSettings,
        work_dir: Path, jobs: list[DecodeFigures], say: Callable[[str], None] | None,
    ) -> None:  # fmt: skip
        self.method, self.formatter, self.examples = method, formatter, examples
        self.settings, self.work_dir, self.jobs, self.say = settings, work_dir, jobs, say
        self.device = method.backbone.device
        self.predictions: dict[tuple[str, int], list[dict]] = {}
        self.plain_predictions: dict[int, dict[str, str]] = {}
        self.raw: dict[tuple, Any] = {}  # raw vLLM jobs: their prepared requests per subset
        self.peaks: dict[int, tuple[int | None, str]] = {}
        self.times: dict[int, list[float]] = {i: [] for i in range(len(jobs))}
        # one operator profile per engine: of its last configuration's warm-up
        self.profiled = {
            max(i for i, j in enumerate(jobs) if j.engine == e): e
            for e in {j.engine for j in jobs if j.path == "ours" and not j.error}
        }

    def run(self, i: int, subset: list[Example], tag: str) -> tuple[Any, int]:
        """Decode `subset` with configuration `i`: (its predictions, generated tokens)."""
        from spt_bench.decode import DecodeSettings
        from spt_bench.engines import decode

        job, settings = self.jobs[i], self.settings
        if job.path == "ours":
            ds = DecodeSettings(
                max_new_tokens=settings.max_new_tokens, batch_size=job.batch_size,
                engine=job.engine,
            )  # fmt: skip
            path = self.work_dir / f"{tag}-{i}.jsonl"
            rows, stats = decode(self.method, self.formatter, subset, ds, path)
            job.oom_halvings = max(job.oom_halvings, stats.oom_halvings)
            if stats.engine_start_s:  # an engine with a start of its own (vllm)
                job.engine_start_s = (job.engine_start_s or 0.0) + stats.engine_start_s
            return rows, stats.new_tokens
        if job.path.startswith("raw vllm"):
            return self._raw(i, subset, tag)
        return plain_generate(
            self.method, self.formatter, subset, job.batch_size, settings.max_new_tokens
        )

    def _raw(self, i: int, subset: list[Example], tag: str) -> tuple[Any, int]:
        """Raw vLLM on `subset`: requests built once per subset, untimed; the pass's seconds
        are LLM.generate's alone (kept in `raw_seconds`, used instead of the wall time)."""
        from spt_bench.bench.raw_vllm import RawVllm

        job = self.jobs[i]
        key = (i, tuple(ex.id for ex in subset))  # the warm-up's subset is not the timed one
        if key not in self.raw:
            kind = job.path.removeprefix("raw vllm (").removesuffix(")")
            self.raw[key] = RawVllm(self.method, self.formatter, subset, job.batch_size,
                                    self.settings.max_new_tokens, self.work_dir, kind)  # fmt: skip
        raw = self.raw[key]
        self.raw_seconds, n_tok = raw.run()
        job.prompt_tokens = raw.prompt_tokens()
        return None, n_tok

    def _profile(self, i: int, subset: list[Example]) -> None:
        self.run(i, subset, "warm")
        suffix = "" if self.profiled[i] == "hf" else f"_{self.profiled[i]}"
        profile_once(
            functools.partial(self.run, i, subset, "prof"), self.device,
            Path(self.settings.profile_dir or ".") / f"decode_profile{suffix}.txt",
        )  # fmt: skip

    def one(self, rep: int, i: int) -> None:
        """Pass `rep` of configuration `i` (rep -1: the warm-up on its longest batch, profiled
        with --profile); an out-of-memory marks the configuration and frees the memory."""
        job = self.jobs[i]
        if job.error:
            return
        subset = self.examples
        if rep < 0:
            subset = longest_examples(self.examples, self.formatter, job.batch_size)
        try:
            if rep < 0 and self.settings.profile_dir and i in self.profiled:
                self._profile(i, subset)
                return
            if job.engine == "vllm":  # every pass starts with vLLM's prefix cache empty
                from spt_bench.vllm_engine import reset_prefix_cache

                reset_prefix_cache()
            with PeakMemory(self.device) as mem:
                sync(self.device)
                t0 = time.perf_counter()
                out, n_tok = self.run(i, subset, f"rep{rep}")
                sync(self.device)
                seconds = time.perf_counter() - t0
        except Exception as e:  # an OOM is a figure too; anything else is a bug
            if not is_oom(e):
                raise
            job.error = "out of memory"
            free(self.device)
            return
        if job.path.startswith("raw vllm"):
            seconds = self.raw_seconds  # LLM.generate alone: the requests were prepared before
        if rep >= 0:
            self._record(i, rep, seconds, out, n_tok, mem)

    def _record(
        self, i: int, rep: int, seconds: float, out: Any, n_tok: int, mem: PeakMemory
    ) -> None:
        job = self.jobs[i]
        self.times[i].append(seconds)
        if self.say is not None:
            label = job.path + (f" ({job.engine} engine)" if job.engine else "")
            self.say(f"decode {label}, batch {job.batch_size}: {seconds:.2f} s (pass {rep + 1})")
        job.new_tokens = n_tok
        old = self.peaks.get(i, (None, mem.kind))[0]
        self.peaks[i] = (max(old or 0, mem.peak_bytes or 0) or None, mem.kind)
        if job.path == "ours":
            self.predictions[(job.engine, job.batch_size)] = out
        elif job.path == "plain generate":
            self.plain_predictions[job.batch_size] = out

    def finish(self) -> None:
        """Median seconds, responses/s and peak memory of every configuration that ran."""
        for i, job in enumerate(self.jobs):
            if job.error or not self.times[i]:
                continue
            job.seconds = statistics.median(self.times[i])
            job.seconds_all = [round(t, 4) for t in self.times[i]]
            job.responses_per_s = len(self.examples) / job.seconds
            job.peak_memory_bytes, job.memory_kind = self.peaks[i]


def bench_decoding(
    backbone: Backbone, train: list[Example], examples: list[Example], settings: BenchSettings,
    work_dir: Path, say: Callable[[str], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Our decoder vs plain generate over `examples` at the requested batch sizes (see the
    module doc); the summary's `_rows` are our best configuration's predictions."""
    method = build_bench_method(backbone, settings.decode_method, settings, train)
    formatter = method.build_formatter()
    prefix_len = method.prefix_length()

    def resolve(req: int | str) -> int:
        return resolve_batch(
            req, backbone, formatter, examples, prefix_len, settings.max_new_tokens
        )

    jobs = plan_jobs(settings, resolve)
    passes = DecodePasses(method, formatter, examples, settings, work_dir, jobs, say)
    for rep in range(-1, settings.decode_reps):  # rep -1: warm-up on the longest batch
        for i in range(len(jobs)):
            passes.one(rep, i)
    passes.finish()
    ours = [j for j in jobs if j.path == "ours"]
    plain = [j for j in jobs if j.path == "plain generate"]
    summary = decode_summary(
        examples, ours, plain, passes.predictions, passes.plain_predictions, settings
    )
    raw = [j for j in jobs if j.path.startswith("raw vllm")]
    if raw:
        summary["raw_vllm"] = raw_summary(method, formatter, examples, ours, raw, passes)
    return summary


def raw_summary(
    method: Any, formatter: Any, examples: list[Example], ours: list[DecodeFigures],
    raw: list[DecodeFigures], passes: DecodePasses,
) -> dict[str, Any]:  # fmt: skip
    """Raw vLLM's figures, our vllm engine against them, and both against the compute bound."""
    from spt_bench.bench.raw_vllm import forward_flops, gemm_gflops

    rows = passes.predictions.get(("vllm", raw[0].batch_size)) or []
    new = {r["id"]: int(r.get("n_new_tokens", 0)) for r in rows}
    prompt_lens = [len(formatter.prompt_ids(ex)) + method.prefix_length() for ex in examples]
    flops = forward_flops(
        method.backbone.model, prompt_lens, [new.get(ex.id, 0) for ex in examples]
    )
    gflops = gemm_gflops(method.backbone.device)
    out: dict[str, Any] = {
        "jobs": [j.to_json() for j in raw],
        "prompt_tokens": sum(prompt_lens),
        "new_tokens_ours": sum(new.values()),
        "forward_gflop": round(flops / 1e9, 3),
        "gemm_gflops_fp32": round(gflops, 1),
        "compute_bound_s": round(flops / 1e9 / gflops, 4),
    }
    mine = next((j for j in ours if j.engine == "vllm" and j.seconds), None)
    for j in raw:
        if mine is not None and j.seconds:
            out[f"ours_over_{j.path.replace(' ', '_')}"] = round(mine.seconds / j.seconds, 3)
    if mine is not None and mine.seconds:
        out["achieved_gflops_ours"] = round(flops / 1e9 / mine.seconds, 1)
        out["share_outside_compute_ours"] = round(1 - out["compute_bound_s"] / mine.seconds, 3)
    hf = next((j for j in ours if j.engine == "hf" and j.seconds), None)
    if hf is not None and hf.seconds:  # the same rows through transformers: the same FLOPs
        out["achieved_gflops_hf_engine"] = round(flops / 1e9 / hf.seconds, 1)
    return out
