"""ConvAI2's model-based metrics for every method: reference perplexity and Hits@k.

Both are computed under the method *as it generates*: each example's prompt comes from the
method's own PromptFormatter and its prefix from `method.prefix_embeds` (SPT's retriever-selected
soft prompt, prompt tuning's single prompt, prefix tuning's per-layer key/value prefix, nothing
for text prompting / fine-tuning), laid out exactly as the decoder lays it out
(``[pad..., prefix, prompt]``, `decode.prefixed_inputs`).

- ``ppl``: each example contributes ``ref_nll_sum`` (summed NLL of the reference response tokens
  + EOS, tokenised by `PromptFormatter.response_ids`) and ``ref_n_tokens``; the scorer reports
  the corpus perplexity ``exp(sum ref_nll_sum / sum ref_n_tokens)``. Perplexities are
  comparable only between runs that share a tokenizer (`summary["tokenizer"]` fingerprints it).
- ``hits@k``: the candidates of an example are ranked by their length-normalised
  log-likelihood, the mean per-token log-probability over the candidate's tokens + EOS
  (``-nll_sum / n_tokens``); ``hits@k`` is 1 when the true response ranks in the top k. Ties
  count against the true response (a distractor scoring exactly as well ranks above it).
  Candidates are the dataset's own when every example has them (ConvAI2's "with candidates"
  files: 20 per turn, the true one among them, found by text equality), otherwise synthetic:
  `synthetic_candidates` draws N-1 distractors per example (see its doc for the protocol).

Speed: with prefix sharing (the default) a group of examples' prefix + prompt runs once,
filling a KV cache; then one forward on that cache scores all candidates, each row packing its
example's candidates side by side under a 4D mask (a candidate sees the prefix and its own
earlier tokens; positions continue from the prefix), so the persona + history is not
recomputed for each of the ~20 candidates and the cache is never copied.
`use_prefix_sharing=False` scores every candidate with a full forward through
`method.inference_nll` (the reference implementation; the two agree within float tolerance,
tests check it). `model_metrics_for_run` is the step `spt-bench run` / `evaluate` call.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spt_bench.candidate_scoring import (  # noqa: F401 - re-exported
    LM_HEAD_CHUNK,
    score_candidate_tokens,
)
from spt_bench.candidates import (  # noqa: F401 - re-exported
    CANDIDATE_MODES,
    SYNTHETIC_PROTOCOL,
    CandidateSet,
    _norm,
    dataset_candidates,
    resolve_candidate_mode,
    synthetic_candidates,
)
from spt_bench.errors import ConfigError
from spt_bench.progress import ProgressBar

if TYPE_CHECKING:  # pragma: no cover
    from spt_bench.data.example import Example
    from spt_bench.data.formatting import PromptFormatter
    from spt_bench.methods import Method

HITS_SCORE = (
    "length-normalised log-likelihood: mean per-token log-probability over the candidate's "
    "tokens + EOS; ties count against the true response"
)
PPL_DEFINITION = (
    "token-level: exp(sum of the reference tokens' + EOS NLL / their count) given persona and "
    "history under the method's own prompt and prefix"
)


# ---------------------------------------------------------------------------- results


@dataclass
class ModelMetrics:
    """Result of `compute_model_metrics`.

    per_example: example id -> {"ref_nll_sum": float, "ref_n_tokens": int, and with hits:
    "hits@k": 0/1 for each k, "gold_rank": 1-based rank of the true response,
    "n_candidates": int}; the field names are those `metrics.score_predictions` reads.
    summary: how the numbers were made (for metrics.json, key "model_metrics").
    """

    per_example: dict[str, dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def candidates(self) -> str | None:
        """ "dataset", "synthetic", or None when hits@k was not computed."""
        return self.summary.get("hits_candidates")

    def merge_into(self, rows: list[dict]) -> list[dict]:
        """Add each row's per-example fields (matched by `id`) in place; returns `rows`."""
        for row in rows:
            values = self.per_example.get(str(row["id"]))
            if values is None:
                raise ConfigError(f"no model metrics for prediction id {row['id']!r}")
            row.update(values)
        return rows


def tokenizer_fingerprint(tokenizer: Any) -> dict[str, Any]:
    """Name, size and a hash of the vocabulary: perplexities are comparable only when equal."""
    vocab = tokenizer.get_vocab()
    digest = hashlib.sha256()
    for tok, idx in sorted(vocab.items(), key=lambda kv: kv[1]):
        digest.update(f"{idx}\t{tok}\n".encode())
    return {
        "name": str(getattr(tokenizer, "name_or_path", "") or ""),
        "vocab_size": len(vocab),
        "sha256": digest.hexdigest()[:16],
    }


def _check_hits_k(hits_k: Sequence[int]) -> tuple[int, ...]:
    from spt_bench.config import HITS_KS  # the k the scorer reports

    ks = tuple(sorted({int(k) for k in hits_k}))
    bad = [k for k in ks if k not in HITS_KS]
    if bad:
        raise ConfigError(
            f"hits@{bad[0]} is not reported; choose k from " + ", ".join(str(k) for k in HITS_KS)
        )
    return ks


def prepare_candidates(
    examples: Sequence[Example],
    formatter: PromptFormatter,
    *,
    hits_k: Sequence[int] = (1,),
    n_candidates: int = 20,
    candidates: str = "auto",
    seed: int = 0,
    distractor_pool: Iterable[Example] | None = None,
) -> tuple[str | None, list[list[int]], list[list[list[int]]], list[int]]:
    """(candidate mode or None, prompt ids, candidate token sequences, index of the true one)
    per example. Without hits_k the only "candidate" is the reference (perplexity only).
    Candidates are tokenised like the reference (`formatter.response_ids`: tokens + EOS); a
    distractor whose tokens equal the reference's is dropped (it is the true response)."""
    examples = list(examples)
    ids = [ex.id for ex in examples]
    if len(set(ids)) != len(ids):
        raise ConfigError("duplicate example ids in the evaluation split")
    ks = _check_hits_k(hits_k)
    mode: str | None = None
    sets: list[CandidateSet]
    if ks and examples:
        mode = resolve_candidate_mode(examples, candidates)
        if mode == "dataset":
            sets = [dataset_candidates(ex) for ex in examples]
        else:
            by_id = synthetic_candidates(examples, n_candidates, seed=seed, pool=distractor_pool)
            sets = [by_id[ex.id] for ex in examples]
    else:
        sets = [CandidateSet((ex.response,), 0) for ex in examples]

    prompts = [formatter.prompt_ids(ex) for ex in examples]
    token_sets: list[list[list[int]]] = []
    gold_index: list[int] = []
    for ex, cs in zip(examples, sets, strict=True):
        gold = formatter.response_ids(ex)  # exactly the tokens training and dev loss score
        seqs: list[list[int]] = []
        for j, text in enumerate(cs.texts):
            if j == cs.gold:
                gold_index.append(len(seqs))
                seqs.append(gold)
                continue
            toks = formatter.response_ids(replace(ex, response=text))
            if toks != gold:
                seqs.append(toks)
        token_sets.append(seqs)
    if ks and examples:
        smallest = min(len(s) for s in token_sets)
        if ks[-1] > smallest:
            raise ConfigError(
                f"hits@{ks[-1]} needs at least {ks[-1]} candidates per example; "
                f"some example has only {smallest}"
            )
    return mode, prompts, token_sets, gold_index


def _check_device(backbone: Any, device: Any) -> None:
    """Reject a `device` other than the backbone's (None: the backbone's)."""
    import torch

    if device is not None:
        dev = torch.device(device)
        idx = (dev.index, backbone.device.index)
        if dev.type != backbone.device.type or (None not in idx and idx[0] != idx[1]):
            raise ConfigError(
                f"model metrics on {device} but the model is on {backbone.device}; they must match"
            )


def _per_example_metrics(
    examples: list[Example],
    scores: list[list[tuple[float, int]]],
    gold_index: list[int],
    ks: tuple[int, ...],
) -> dict[str, dict[str, Any]]:
    """Per example id: the reference's NLL sum and token count, and with ks its hits@k, the
    true response's rank (ties count against it) and the number of candidates."""
    per_example: dict[str, dict[str, Any]] = {}
    for ex, sc, g in zip(examples, scores, gold_index, strict=True):
        nll, n = sc[g]
        row: dict[str, Any] = {"ref_nll_sum": nll, "ref_n_tokens": n}
        if ks:
            gold_lp = -nll / n
            rank = 1 + sum(1 for j, (s, m) in enumerate(sc) if j != g and -s / m >= gold_lp)
            for k in ks:
                row[f"hits@{k}"] = int(rank <= k)
            row["gold_rank"] = rank
            row["n_candidates"] = len(sc)
        per_example[ex.id] = row
    return per_example


def _metrics_summary(
    backbone: Any,
    ks: tuple[int, ...],
    mode: str | None,
    shared: bool,
    token_sets: list[list[list[int]]],
    seconds: float,
    *,
    n_examples: int,
    pool_size: int,
    seed: int,
    n_candidates: int,
) -> dict[str, Any]:
    """How the model metrics were made (metrics.json's "model_metrics")."""
    n_seq = sum(len(s) for s in token_sets)
    summary: dict[str, Any] = {
        "ppl": PPL_DEFINITION,
        "tokenizer": tokenizer_fingerprint(backbone.tokenizer),
        "hits_k": list(ks),
        "hits_candidates": mode,
        "prefix_sharing": shared,
        "n_examples": n_examples,
        "sequences_scored": n_seq,
        "seconds": round(seconds, 3),
        "sequences_per_s": round(n_seq / seconds, 2) if seconds > 0 else None,
    }
    if ks:
        counts = [len(s) for s in token_sets]
        summary["hits_score"] = HITS_SCORE
        summary["n_candidates"] = {"min": min(counts), "max": max(counts)} if counts else None
        if mode == "synthetic":
            summary["synthetic_protocol"] = SYNTHETIC_PROTOCOL
            summary["synthetic_pool_examples"] = pool_size
            summary["synthetic_seed"] = seed
            summary["synthetic_n_candidates"] = n_candidates
    return summary


def compute_model_metrics(
    method: Method,
    examples: Sequence[Example],
    formatter: PromptFormatter,
    *,
    batch_size: int = 16,
    device: Any = None,
    hits_k: Sequence[int] = (1,),
    n_candidates: int = 20,
    candidates: str = "auto",
    seed: int = 0,
    distractor_pool: Iterable[Example] | None = None,
    use_prefix_sharing: bool = True,
    rows_per_forward: int = 128,
    on_progress: Any = None,
    parts_folder: Path | None = None,
    weights_key: str = "",
) -> ModelMetrics:
    """Reference perplexity statistics and Hits@k for `examples` under `method`.

    formatter: the PromptFormatter the method decodes with (`method.build_formatter(...)`).
    hits_k: the k reported (empty: perplexity only). candidates: "auto" (dataset candidates
    when every example has them, else synthetic), "dataset" or "synthetic". n_candidates and
    seed: size and seed of synthetic sets (dataset sets keep their own size). distractor_pool:
    examples whose responses synthetic distractors come from (default `examples`; pass the whole
    test split when only part of it is scored, so the candidates do not depend on the limit).
    device: where the model runs; must be the backbone's device (None = that device).
    on_progress: optional callable(n_examples_done) for a progress bar.
    Under a launch of several processes each scores its share of the batches
    (spt_bench.sharded_scoring); with `parts_folder` the scoring is resumable (its part files
    there, keyed by `weights_key` and the token sequences).
    """
    backbone = method.backbone
    _check_device(backbone, device)
    ks = _check_hits_k(hits_k)
    t0 = time.perf_counter()
    examples = list(examples)
    pool = None if distractor_pool is None else list(distractor_pool)
    mode, prompts, token_sets, gold_index = prepare_candidates(
        examples,
        formatter,
        hits_k=ks,
        n_candidates=n_candidates,
        candidates=candidates,
        seed=seed,
        distractor_pool=pool,
    )
    from spt_bench.sharded_scoring import score_sharded

    scores, shared = score_sharded(
        method, examples, prompts, token_sets, batch_size=batch_size,
        rows_per_forward=rows_per_forward, use_prefix_sharing=use_prefix_sharing,
        on_progress=on_progress, parts_folder=parts_folder, weights_key=weights_key,
    )  # fmt: skip
    per_example = _per_example_metrics(examples, scores, gold_index, ks)
    seconds = time.perf_counter() - t0
    summary = _metrics_summary(
        backbone,
        ks,
        mode,
        shared,
        token_sets,
        seconds,
        n_examples=len(examples),
        pool_size=len(examples if pool is None else pool),
        seed=seed,
        n_candidates=n_candidates,
    )
    return ModelMetrics(per_example=per_example, summary=summary)


def add_model_metrics_to_predictions(
    method: Method,
    formatter: PromptFormatter,
    examples: Sequence[Example],
    rows: list[dict],
    predictions_path: str | Path,
    *,
    batch_size: int = 16,
    hits_k: Sequence[int] = (1,),
    n_candidates: int = 20,
    seed: int = 0,
    distractor_pool: Iterable[Example] | None = None,
    progress: bool = False,
    console: Any = None,
) -> dict[str, Any]:
    """The run-folder step: compute the model metrics of the decoded `examples`, add the
    per-example fields to `rows` (the decoder's prediction rows, same ids), rewrite
    `predictions_path` atomically with them, and return the summary for metrics.json.
    Every process of a launch calls it (each scores its share); the main process writes.
    A killed scoring resumes from part files next to `predictions_path`."""
    import json

    from spt_bench.checkpoints import read_checkpoint_state
    from spt_bench.distributed import get_dist
    from spt_bench.io import atomic_write_text
    from spt_bench.sharded_scoring import drop_part_files

    dist = get_dist()
    folder = Path(predictions_path).parent
    # the weights scored: a part file of another checkpoint (or method) is not reused
    weights_key = json.dumps([method.name, read_checkpoint_state(folder)], sort_keys=True)
    show = progress and examples and dist.is_main
    bar = ProgressBar(console, "ppl/hits", len(examples)) if show else None
    try:
        mm = compute_model_metrics(
            method,
            examples,
            formatter,
            batch_size=batch_size,
            hits_k=hits_k,
            n_candidates=n_candidates,
            seed=seed,
            distractor_pool=distractor_pool,
            on_progress=bar.advance if bar is not None else None,
            parts_folder=folder,
            weights_key=weights_key,
        )
    finally:
        if bar is not None:
            bar.close()
    mm.merge_into(rows)
    if dist.is_main:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        atomic_write_text(predictions_path, text)
        drop_part_files(folder)
    dist.wait()
    return mm.summary


def model_metrics_for_run(
    method: Method,
    formatter: PromptFormatter,
    examples: Sequence[Example],
    rows: list[dict],
    predictions_path: str | Path,
    config: Any,
    *,
    progress: bool = False,
    console: Any = None,
) -> dict[str, Any] | None:
    """What `spt-bench run` / `evaluate` call after decoding: None when the run config turns the
    model metrics off, else `add_model_metrics_to_predictions` with the config's settings:
    the decoding batch size; synthetic distractors drawn from every split of the run's data
    (train, dev and the whole test split, before any --*-limit) and seeded by the split seed,
    so every method, training seed and eval limit of a comparison ranks the same candidates."""
    if not config.score.model_metrics:
        return None
    data = config.data
    pool = distractor_pool(config, examples)
    return add_model_metrics_to_predictions(
        method,
        formatter,
        examples,
        rows,
        predictions_path,
        batch_size=config.decode.batch_size,
        hits_k=config.score.hits_k,
        n_candidates=config.score.hits_candidates,
        seed=data.split_seed,
        distractor_pool=pool,
        progress=progress,
        console=console,
    )


def distractor_pool(config: Any, examples: Sequence[Example]) -> list[Example] | None:
    """The examples synthetic hits@k distractors are drawn from (None: the data has candidates
    or no hits@k is asked): every split of the run's data, before any --*-limit."""
    if not (config.score.hits_k and not all(ex.candidates for ex in examples)):
        return None
    from spt_bench.data.splits import splits_for_config

    splits = splits_for_config(config.data)
    return [*splits.train, *splits.dev, *splits.test]


def check_model_metrics_inputs(config: Any, examples: Sequence[Example]) -> None:
    """Everything perplexity/hits@k will refuse, checked before any training or decoding: the
    k asked, a mix of dataset and synthetic candidates, too few dialogues for the distractors."""
    if not config.score.model_metrics or not config.score.hits_k:
        return
    _check_hits_k(config.score.hits_k)
    mode = resolve_candidate_mode(examples, "auto")
    if mode == "synthetic":
        synthetic_candidates(
            examples,
            config.score.hits_candidates,
            seed=config.data.split_seed,
            pool=distractor_pool(config, examples),
        )


def model_metrics_note(summary: dict[str, Any] | None) -> str | None:
    """One line for reports saying how ppl and hits@k were made (None when not computed)."""
    if not summary:
        return None
    tok = summary.get("tokenizer") or {}
    note = (
        f"ppl: token-level, reference + EOS under the method's own prompt and prefix; "
        f"comparable only between runs with the same tokenizer ({tok.get('name') or '?'}, "
        f"vocab {tok.get('vocab_size')}, sha256 {tok.get('sha256')})."
    )
    mode = summary.get("hits_candidates")
    if mode == "synthetic":
        n = summary.get("synthetic_n_candidates")
        note += (
            f" hits@k: candidates are SYNTHETIC ({n} per example: the true response + {n - 1} "
            "responses drawn from other dialogues, seed "
            f"{summary.get('synthetic_seed')}), not ConvAI2's; ranked by mean token "
            "log-likelihood."
        )
    elif mode == "dataset":
        note += " hits@k: the dataset's own candidates, ranked by mean token log-likelihood."
    return note
