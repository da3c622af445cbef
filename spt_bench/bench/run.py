"""The whole benchmark in one process: load the data and the backbone once, then the training,
decoding and scoring figures, as one JSON-ready dict."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spt_bench.bench.decoding import bench_decoding
from spt_bench.bench.scoring import bench_scoring
from spt_bench.bench.settings import CPU_DEFAULT_N_DECODE, BenchSettings
from spt_bench.bench.training import bench_training
from spt_bench.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from spt_bench.data.example import Example
    from spt_bench.models import Backbone


@contextlib.contextmanager
def _work_dir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="spt-bench-bench.") as tmp:
        yield Path(tmp)


def _header(
    settings: BenchSettings, examples: list[Example], decode_examples: list[Example],
    backbone: Backbone, load_s: float,
) -> dict[str, Any]:  # fmt: skip
    """What was benchmarked where: model, data, device, settings, environment."""
    import torch

    from spt_bench.env import collect_env

    device = backbone.device
    return {
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


def _decode_and_score(
    result: dict[str, Any], backbone: Backbone, examples: list[Example],
    decode_examples: list[Example], settings: BenchSettings, predictions_out: Path | None,
    say: Callable[[str], None],
) -> None:  # fmt: skip
    """Decoding figures into `result` (our predictions kept in `predictions_out`), then the
    scorer's on those predictions."""
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


def run_bench(
    settings: BenchSettings,
    *,
    console: Any = None,
    predictions_out: Path | None = None,
    log: Callable[[str], None] | None = None,
    on_partial: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the whole benchmark; returns the JSON-ready figures (see the package doc).
    `predictions_out` (a .jsonl path) keeps our decoder's predictions for later scoring;
    `on_partial` receives the figures so far once training is measured (so a run cut off
    during decoding still leaves them)."""
    from spt_bench.data import load_examples
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
    result = _header(settings, examples, decode_examples, backbone, load_s)
    if settings.train:
        say(f"training step: batch {settings.batch_size}, {settings.reps} reps")
        result["train"] = bench_training(backbone, examples, settings, say)
    if on_partial is not None and settings.train:
        on_partial({**result, "partial": "training done, decoding not yet"})
    if decode_examples:
        _decode_and_score(
            result, backbone, examples, decode_examples, settings, predictions_out, say
        )
    if settings.nli_pairs or settings.judge_responses:
        from spt_bench.bench.instruments import bench_instruments

        result["instruments"] = bench_instruments(backbone, examples, settings, say)
    result["total_s"] = round(time.perf_counter() - t_all, 2)
    return result
