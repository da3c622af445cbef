"""Perplexity and Hits@k scoring sharded over the processes of a launch, and resumable.

The examples are cut into the batches one process would form (`length_sorted_batches` of the
prompt lengths, longest first), and batch n is scored by process n mod N: every example is
scored exactly once, in the batch (same padding, same packing) it would be in alone, so the
values are the single process's. Each process appends every scored batch to its own part file
in the run folder (`model_metrics.part-<rank>.jsonl`, rows keyed by a hash of the example's
token sequences and the checkpoint scored); a killed scoring resumes by skipping the batches
whose examples all have a row with the right key. Results are gathered on every process; the
main process deletes the part files once predictions.jsonl holds the values.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spt_bench.batches import length_sorted_batches
from spt_bench.candidate_scoring import score_candidate_tokens
from spt_bench.distributed import get_dist
from spt_bench.io import append_jsonl, read_jsonl

if TYPE_CHECKING:  # pragma: no cover
    from spt_bench.data.example import Example
    from spt_bench.methods import Method

PART_GLOB = "model_metrics.part-*.jsonl"

Scores = list[tuple[float, int]]


def part_file(folder: Path, rank: int) -> Path:
    return folder / f"model_metrics.part-{rank}.jsonl"


def drop_part_files(folder: Path) -> None:
    for p in folder.glob(PART_GLOB):
        p.unlink(missing_ok=True)


def _key(weights_key: str, prompt: list[int], cands: Sequence[list[int]]) -> str:
    text = json.dumps([weights_key, prompt, [list(c) for c in cands]], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _recorded(folder: Path | None) -> dict[tuple[str, str], tuple[Scores, bool]]:
    """(id, key) -> (scores, prefix_sharing) from every process's part file."""
    if folder is None:
        return {}
    out: dict[tuple[str, str], tuple[Scores, bool]] = {}
    for path in sorted(folder.glob(PART_GLOB)):
        for r in read_jsonl(path, tolerate_truncated_tail=True):
            scores = [(float(a), int(b)) for a, b in r["scores"]]
            out[(str(r["id"]), str(r["key"]))] = (scores, bool(r["prefix_sharing"]))
    return out


def score_sharded(
    method: Method,
    examples: Sequence[Example],
    prompts: Sequence[list[int]],
    candidates: Sequence[Sequence[list[int]]],
    *,
    batch_size: int,
    rows_per_forward: int = 128,
    use_prefix_sharing: bool = True,
    on_progress: Any = None,
    parts_folder: Path | None = None,
    weights_key: str = "",
) -> tuple[list[Scores], bool]:
    """`score_candidate_tokens` over this process's share of the batches, skipping batches a
    killed scoring finished (with `parts_folder`); every process returns all results."""
    dist = get_dist()
    groups = length_sorted_batches([len(p) for p in prompts], batch_size)
    keys = [_key(weights_key, list(p), c) for p, c in zip(prompts, candidates, strict=True)]
    recorded = _recorded(parts_folder)
    dist.wait()  # every process has read the parts before any appends to its own

    def done(i: int) -> bool:
        return (examples[i].id, keys[i]) in recorded

    mine = [g for n, g in enumerate(groups) if n % dist.world_size == dist.rank]
    todo = [g for g in mine if not all(done(i) for i in g)]
    if on_progress is not None:
        skipped = sum(len(g) for g in mine if g not in todo)
        if skipped:
            on_progress(skipped * dist.world_size)  # approximately all processes' share

    def on_group(idx: list[int], group: list[Scores], shared: bool) -> None:
        if parts_folder is not None:
            rows = [
                {"id": examples[i].id, "key": keys[i], "scores": s, "prefix_sharing": shared}
                for i, s in zip(idx, group, strict=True)
            ]
            append_jsonl(part_file(parts_folder, dist.rank), rows)

    results, shared = score_candidate_tokens(
        method, examples, prompts, candidates, batch_size=batch_size,
        rows_per_forward=rows_per_forward, use_prefix_sharing=use_prefix_sharing,
        on_progress=on_progress if dist.is_main else None, groups=todo, on_group=on_group,
    )  # fmt: skip
    flags = [shared] if todo else []
    mine_results = {i: results[i] for g in todo for i in g}
    for part, part_flags in dist.all_gather((mine_results, flags)):
        for i, s in part.items():
            results[i] = s
        flags += part_flags
    for i, _ in enumerate(examples):
        if not results[i] and done(i):
            s, flag = recorded[(examples[i].id, keys[i])]
            results[i] = s
            flags.append(flag)
    return results, all(flags) if flags else use_prefix_sharing
