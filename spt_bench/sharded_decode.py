"""Decoding sharded over the processes of an `accelerate launch` (one process: plain
`spt_bench.decode.decode`). Kept apart from spt_bench.distributed so that the process helpers
never import the decoder (which imports them): no import cycle.

Each process decodes its share of the length-sorted batches into its own part file
(`predictions.jsonl.part<rank>`); the main process folds part files into predictions.jsonl
(also those a killed run left), and every process returns all rows in dataset order.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spt_bench.batches import length_sorted_batches
from spt_bench.decode import DecodeStats, existing_prediction_ids
from spt_bench.distributed import get_dist
from spt_bench.engines import decode, shutdown
from spt_bench.io import atomic_write_text, read_jsonl

if TYPE_CHECKING:  # pragma: no cover
    from spt_bench.data.example import Example
    from spt_bench.decode import DecodeSettings
    from spt_bench.methods import Method

PART_SUFFIX = ".part-"


def part_path(out_path: Path, rank: int) -> Path:
    return out_path.with_name(f"{out_path.name}{PART_SUFFIX}{rank}")


def _part_files(out_path: Path) -> list[Path]:
    return sorted(out_path.parent.glob(f"{out_path.name}{PART_SUFFIX}*"))


def merge_part_files(out_path: Path, ids_in_order: list[str] | None = None) -> list[dict]:
    """Fold the part files of a (killed or finished) sharded decode into `out_path`: each id
    once (first occurrence wins), in `ids_in_order` order when given (unknown ids last), then
    delete the parts. Returns the merged rows."""
    import json

    parts = _part_files(out_path)
    sources = ([out_path] if out_path.is_file() else []) + parts
    rows: dict[str, dict] = {}
    for path in sources:
        existing_prediction_ids(path)  # drops a truncated last line left by a kill
        for r in read_jsonl(path, tolerate_truncated_tail=True):
            rows.setdefault(str(r.get("id")), r)
    if ids_in_order is not None:
        rank = {i: n for n, i in enumerate(ids_in_order)}
        ordered = sorted(rows.values(), key=lambda r: rank.get(str(r.get("id")), len(rank)))
    else:
        ordered = list(rows.values())
    if parts:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ordered)
        atomic_write_text(out_path, text)
    for p in parts:
        p.unlink(missing_ok=True)
    return ordered


def decode_all(
    method: Method,
    formatter: Any,
    examples: list[Example],
    settings: DecodeSettings,
    out_path: str | Path,
    *,
    progress: bool = False,
    console: Any = None,
) -> tuple[list[dict], DecodeStats]:
    """`spt_bench.decode.decode`, sharded over the launched processes when there are several
    (see the module doc); every process returns all rows in dataset order. The vllm engine is
    shut down afterwards (its memory and worker processes freed for scoring)."""
    try:
        dist = get_dist()
        out_path = Path(out_path)
        if not dist.enabled:
            return decode(
                method, formatter, examples, settings, out_path, progress=progress, console=console
            )
        ids = [ex.id for ex in examples]
        if dist.is_main:  # a killed sharded decode leaves part files: fold them in first
            merge_part_files(out_path, ids)
        dist.wait()
        done = {str(r.get("id")) for r in read_jsonl(out_path)} if out_path.is_file() else set()
        todo = [ex for ex in examples if ex.id not in done]
        lengths = [len(formatter.prompt_ids(ex)) for ex in todo]
        batches = length_sorted_batches(lengths, settings.batch_size)
        mine = [todo[i] for batch in batches[dist.rank :: dist.world_size] for i in batch]
        dist.wait()  # every process has read the merged file before anyone appends
        t0 = time.perf_counter()
        if mine:
            _, stats = decode(
                method, formatter, mine, settings, part_path(out_path, dist.rank),
                progress=progress and dist.is_main, console=console,
            )  # fmt: skip
        else:
            stats = DecodeStats(engine=settings.engine)
        seconds = time.perf_counter() - t0
        gathered = dist.all_gather(
            (stats.n_decoded, stats.new_tokens, seconds, stats.engine_start_s)
        )
        dist.wait()
        if dist.is_main:
            merge_part_files(out_path, ids)
        dist.wait()
        by_id = {str(r["id"]): r for r in read_jsonl(out_path)}
        missing = [i for i in ids if i not in by_id]
        if missing:
            from spt_bench.errors import SptBenchError

            raise SptBenchError(f"sharded decoding lost {len(missing)} rows (e.g. {missing[0]!r})")
        total = DecodeStats(
            n_decoded=sum(g[0] for g in gathered),
            n_skipped=len(done),
            seconds=max(g[2] for g in gathered),
            new_tokens=sum(g[1] for g in gathered),
            engine=settings.engine,
            engine_start_s=max(g[3] for g in gathered),
        )
        return [by_id[i] for i in ids], total
    finally:
        shutdown(settings)
