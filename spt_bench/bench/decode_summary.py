"""What the decoding figures add up to: per configuration figures, our decoder against plain
generate at the same batch size and other engines against the hf engine (speed, identical
responses), best against best, and how our rows stopped."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from spt_bench.bench.profiling import peak_memory_gb

if TYPE_CHECKING:  # pragma: no cover
    from spt_bench.bench.settings import BenchSettings
    from spt_bench.data.example import Example


@dataclass
class DecodeFigures:
    path: str  # "ours" | "plain generate" | "raw vllm (prompt ids|prompt embeds)"
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
    prompt_tokens: int | None = None  # raw vLLM: the prompt tokens of its requests

    def to_json(self) -> dict:
        d = asdict(self)
        d["peak_memory_gb"] = peak_memory_gb(self.peak_memory_bytes)
        return d


def _identical(rows: list[dict], theirs: dict[str, str]) -> float:
    return sum(r["prediction"] == theirs.get(r["id"]) for r in rows) / max(1, len(rows))


def _comparisons(
    ok_ours: list[DecodeFigures], ok_plain: list[DecodeFigures],
    predictions: dict[tuple[str, int], list[dict]], plain_predictions: dict[int, dict[str, str]],
) -> list[dict[str, Any]]:  # fmt: skip
    """Per configuration of ours: against plain generate at its batch size, and (other
    engines) against the hf engine at its batch size."""
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
            row["identical_responses"] = _identical(rows, plain_predictions[f.batch_size])
        hf = next((h for h in ok_ours if h.engine == "hf" and h.batch_size == f.batch_size), None)
        if engine != "hf" and hf is not None:
            assert hf.seconds is not None
            row["speedup_over_hf_engine"] = hf.seconds / f.seconds
            hf_rows = predictions[("hf", f.batch_size)]
            row["identical_to_hf_engine"] = _identical(
                rows, {r["id"]: r["prediction"] for r in hf_rows}
            )
        comparisons.append(row)
    return comparisons


def _stops(summary: dict[str, Any], rows: list[dict]) -> None:
    """How early our rows stop (what per-row stopping can save), and the rows themselves."""
    stops: dict[str, int] = {}
    for r in rows:
        stops[str(r.get("stop"))] = stops.get(str(r.get("stop")), 0) + 1
    summary["stop_reasons"] = stops
    summary["mean_new_tokens"] = sum(r.get("n_new_tokens", 0) for r in rows) / max(1, len(rows))
    summary["_rows"] = rows


def decode_summary(
    examples: list[Example], ours: list[DecodeFigures], plain: list[DecodeFigures],
    predictions: dict[tuple[str, int], list[dict]], plain_predictions: dict[int, dict[str, str]],
    settings: BenchSettings,
) -> dict[str, Any]:  # fmt: skip
    """The JSON-ready decoding figures; `_rows` carries our best configuration's predictions."""
    ok_ours = [f for f in ours if f.seconds]
    ok_plain = [f for f in plain if f.seconds]
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
        "comparisons": _comparisons(ok_ours, ok_plain, predictions, plain_predictions),
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
        _stops(summary, predictions[(best_ours.engine, best_ours.batch_size)])
    return summary
