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
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spt_bench.batches import longest_first
from spt_bench.errors import ConfigError
from spt_bench.progress import ProgressBar

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from spt_bench.data.example import Example
    from spt_bench.data.formatting import PromptFormatter
    from spt_bench.methods import Method

CANDIDATE_MODES = ("auto", "dataset", "synthetic")
HITS_SCORE = (
    "length-normalised log-likelihood: mean per-token log-probability over the candidate's "
    "tokens + EOS; ties count against the true response"
)
PPL_DEFINITION = (
    "token-level: exp(sum of the reference tokens' + EOS NLL / their count) given persona and "
    "history under the method's own prompt and prefix"
)
SYNTHETIC_PROTOCOL = (
    "N-1 distractors per example, drawn without replacement from the distinct responses of "
    "other dialogues in the pool, never equal to the true response (case and whitespace "
    "ignored); random.Random(f'{seed}:{example.id}'), so fixed per example id, seed and pool"
)
# Rows per lm-head call: bounds the [rows, vocab] logits tensor (2048 x 49152 fp32 = 400 MB).
LM_HEAD_CHUNK = 2048


# ---------------------------------------------------------------------------- candidates


@dataclass(frozen=True)
class CandidateSet:
    """The texts ranked for one example; `texts[gold]` is the true response."""

    texts: tuple[str, ...]
    gold: int


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def dataset_candidates(example: Example) -> CandidateSet:
    """The example's own candidates (ConvAI2 lists the true one last); the true response is the
    candidate equal to the reference (whitespace-insensitive)."""
    texts = tuple(example.candidates)
    if not texts:
        raise ConfigError(f"example {example.id} has no candidates in the data file")
    ref = " ".join(example.response.split())
    matches = [i for i, c in enumerate(texts) if " ".join(c.split()) == ref]
    if not matches:
        raise ConfigError(
            f"example {example.id}: its candidates do not include the reference response "
            f"{example.response!r}, so hits@k cannot be computed from them"
        )
    return CandidateSet(texts, matches[-1])


def synthetic_candidates(
    examples: Sequence[Example],
    n_candidates: int = 20,
    *,
    seed: int = 0,
    pool: Iterable[Example] | None = None,
) -> dict[str, CandidateSet]:
    """Synthetic candidate sets for examples whose data has none (issue 7's documented protocol).

    The pool is the distinct responses (compared case- and whitespace-insensitively) of `pool`
    (default: `examples` themselves), sorted, each remembering which dialogues it occurs in.
    For an example, a distractor must occur in some *other* dialogue and must not equal the true
    response. N-1 of them are drawn without replacement with
    ``random.Random(f"{seed}:{example.id}")``, so an example's candidates depend only on the
    seed, its id and the pool (not on the order or subset of examples being scored). The true
    response goes last, as in ConvAI2's files.
    """
    if n_candidates < 2:
        raise ConfigError(f"n_candidates must be >= 2, got {n_candidates}")
    pool_examples = list(examples if pool is None else pool)
    dialogues_of: dict[str, set[str]] = {}
    text_of: dict[str, str] = {}
    for ex in pool_examples:
        key = _norm(ex.response)
        if not key:
            continue
        dialogues_of.setdefault(key, set()).add(ex.dialog_id)
        text = ex.response.strip()  # the smallest spelling represents them all (order-free)
        text_of[key] = min(text_of.get(key, text), text)
    keys = sorted(dialogues_of)
    only_in: dict[str, set[str]] = {}  # dialogue -> responses that occur in no other dialogue
    for key in keys:
        ds = dialogues_of[key]
        if len(ds) == 1:
            only_in.setdefault(next(iter(ds)), set()).add(key)
    need = n_candidates - 1
    out: dict[str, CandidateSet] = {}
    for ex in examples:
        truth = _norm(ex.response)
        excluded = only_in.get(ex.dialog_id, set())
        n_excluded = len(excluded) + (1 if truth in dialogues_of and truth not in excluded else 0)
        eligible = len(keys) - n_excluded
        if eligible < need:
            raise ConfigError(
                f"synthetic hits@k candidates: example {ex.id} needs {need} distractors from "
                f"other dialogues but the pool has only {eligible}; lower --hits-candidates, "
                f"use more dialogues or --no-model-metrics"
            )
        rng = random.Random(f"{seed}:{ex.id}")

        def ok(key: str, ex: Example = ex, truth: str = truth) -> bool:
            return key != truth and bool(dialogues_of[key] - {ex.dialog_id})

        if eligible <= 4 * need:  # small pool: sample from the explicit list
            chosen = rng.sample([k for k in keys if ok(k)], need)
        else:  # large pool: rejection sampling touches ~need entries instead of the whole pool
            picked: list[str] = []
            seen: set[int] = set()
            while len(picked) < need:
                i = rng.randrange(len(keys))
                if i in seen:
                    continue
                seen.add(i)
                if ok(keys[i]):
                    picked.append(keys[i])
            chosen = picked
        texts = tuple(text_of[k] for k in chosen) + (ex.response.strip(),)
        out[ex.id] = CandidateSet(texts, len(texts) - 1)
    return out


def resolve_candidate_mode(examples: Sequence[Example], mode: str = "auto") -> str:
    """ "dataset" when every example has candidates, "synthetic" when none has; "auto" refuses a
    mix (scores from two protocols would be averaged together)."""
    if mode not in CANDIDATE_MODES:
        raise ConfigError(f"candidates must be one of {', '.join(CANDIDATE_MODES)}, got {mode!r}")
    with_cands = sum(1 for ex in examples if ex.candidates)
    if mode == "dataset":
        if with_cands != len(examples):
            missing = next(ex.id for ex in examples if not ex.candidates)
            raise ConfigError(
                f"candidates='dataset': example {missing} has no candidates in the data"
            )
        return "dataset"
    if mode == "synthetic" or with_cands == 0:
        return "synthetic"
    if with_cands == len(examples):
        return "dataset"
    raise ConfigError(
        f"{with_cands} of {len(examples)} examples have dataset candidates and the others none; "
        "choose one protocol for all (candidates='synthetic')"
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


# ---------------------------------------------------------------------------- scoring


class _NoPrefixSharing(Exception):
    """The model's KV cache is not a plain per-layer key/value cache (e.g. sliding windows)."""


def _token_nll(backbone: Any, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token NLL [M] of `targets` given the hidden states that predict them, in fp32, with
    the full-vocabulary logits computed a chunk of rows at a time."""
    import torch
    import torch.nn.functional as F

    parts = []
    for s in range(0, hidden.shape[0], LM_HEAD_CHUNK):
        logits = backbone.lm_head(hidden[s : s + LM_HEAD_CHUNK]).float()
        parts.append(F.cross_entropy(logits, targets[s : s + LM_HEAD_CHUNK], reduction="none"))
    if not parts:
        return hidden.new_zeros(0, dtype=torch.float32)
    return torch.cat(parts)


def _require_plain_cache(cache: Any) -> None:
    """Packed continuations need every layer to attend over the whole cache (no windows)."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        raise _NoPrefixSharing(f"cache layers {sorted({type(x).__name__ for x in layers or []})}")


def _score_group_packed(
    method: Method,
    examples: list[Example],
    prompts: list[list[int]],
    candidates: list[list[list[int]]],
) -> list[list[tuple[float, int]]]:
    """One prefix forward for the group filling a KV cache, then ONE continuation forward in which
    each row packs all of its example's candidates side by side: a 4D mask lets a candidate
    token see the row's prefix and its own candidate's earlier tokens only, and its position
    continues from the prefix length, so each candidate is scored exactly as if it alone
    followed the prompt. The cache is never copied per candidate."""
    import torch

    from spt_bench.data.formatting import collate_generate
    from spt_bench.decode import prefixed_inputs

    backbone = method.backbone
    attn = getattr(backbone.model.config, "_attn_implementation", None)
    if attn not in ("sdpa", "eager"):
        raise _NoPrefixSharing(f"attention implementation {attn!r} takes no 4D mask")
    device = backbone.device
    pad = backbone.pad_token_id
    gen = collate_generate(prompts, pad, examples).to(device)
    # A per-layer key/value prefix (prefix tuning) arrives as a pre-filled cache whose columns
    # `mask` already covers, so the packed continuation below sees it like any cached token.
    embeds, mask, _, cache = prefixed_inputs(method, gen)
    hidden, cache = backbone.forward_base(embeds, mask, cache=cache, use_cache=True)
    _require_plain_cache(cache)
    last = hidden[:, -1]  # left-padded: the last column predicts each row's first response token
    del hidden
    n_rows, n_prefix = mask.shape
    prefix_len = mask.sum(dim=1).tolist()
    # Per row: the fed tokens (each candidate but its last token), their candidate index and
    # offset inside the candidate.
    fed, owner, offset = [], [], []
    for cands in candidates:
        ids_r, own_r, off_r = [], [], []
        for c, seq in enumerate(cands):
            ids_r += seq[:-1]
            own_r += [c] * (len(seq) - 1)
            off_r += list(range(len(seq) - 1))
        fed.append(ids_r)
        owner.append(own_r)
        offset.append(off_r)
    width = max(len(r) for r in fed)
    h_cont = None
    if width:
        ids = torch.full((n_rows, width), pad, dtype=torch.long)
        own = torch.full((n_rows, width), -1, dtype=torch.long)
        pos = torch.zeros((n_rows, width), dtype=torch.long)
        for b in range(n_rows):
            n = len(fed[b])
            if n:
                ids[b, :n] = torch.tensor(fed[b])
                own[b, :n] = torch.tensor(owner[b])
                pos[b, :n] = torch.tensor(offset[b]) + int(prefix_len[b])
        ids, own, pos = ids.to(device), own.to(device), pos.to(device)
        q = torch.arange(width, device=device)
        same = own[:, :, None] == own[:, None, :]  # [B, W, W] same candidate
        causal = q[None, :, None] >= q[None, None, :]
        cont_ok = same & causal & (own[:, None, :] >= 0)
        cont_ok |= torch.eye(width, dtype=torch.bool, device=device)[None]  # padding: itself
        prefix_ok = mask.bool()[:, None, :].expand(n_rows, width, n_prefix)
        allowed = torch.cat([prefix_ok, cont_ok], dim=2)[:, None]  # [B, 1, W, P + W]
        cont_embeds = backbone.embed(ids)
        if attn == "sdpa":  # boolean (True = attend), whatever dtype autocast computes in
            mask4d = allowed
        else:  # eager attention adds the mask to its scores
            mask4d = torch.zeros(allowed.shape, dtype=cont_embeds.dtype, device=device)
            mask4d.masked_fill_(~allowed, torch.finfo(cont_embeds.dtype).min)
        h_cont, _ = backbone.forward_base(
            cont_embeds, mask4d, position_ids=pos, cache=cache, use_cache=True
        )
    # Gather, per candidate token, the hidden state that predicts it.
    pred_rows, pred_cols, targets, seq_of = [], [], [], []
    flat: list[tuple[int, int]] = []
    for b, cands in enumerate(candidates):
        col = 0
        for c, seq in enumerate(cands):
            k = len(flat)
            flat.append((b, c))
            # token 0 <- prefix's last state (column -1 marks it); token t <- fed column col+t-1
            pred_rows += [b] * len(seq)
            pred_cols += [-1] + [col + t for t in range(len(seq) - 1)]
            targets += seq
            seq_of += [k] * len(seq)
            col += len(seq) - 1
    rows_t = torch.tensor(pred_rows, device=device)
    cols_t = torch.tensor(pred_cols, device=device)
    from_prefix = cols_t < 0
    h = last.index_select(0, rows_t)
    if h_cont is not None:
        h_fed = h_cont[rows_t, cols_t.clamp_min(0)]
        h = torch.where(from_prefix[:, None], h, h_fed)
    token_nll = _token_nll(backbone, h, torch.tensor(targets, device=device))
    seq_t = torch.tensor(seq_of, device=device)
    sums = torch.zeros(len(flat), dtype=torch.float32, device=device).index_add(0, seq_t, token_nll)
    scores: list[list[tuple[float, int]]] = [[(0.0, 0)] * len(c) for c in candidates]
    for (b, c), s in zip(flat, sums.tolist(), strict=True):
        scores[b][c] = (float(s), len(candidates[b][c]))
    return scores


def _score_naive(
    method: Method,
    examples: list[Example],
    prompts: list[list[int]],
    candidates: list[list[list[int]]],
    rows_per_forward: int,
) -> list[list[tuple[float, int]]]:
    """Reference path: every (prompt, candidate) sequence in a full forward, through
    `method.inference_nll` (the method's own prefix, chosen from the prompt alone)."""
    from spt_bench.data.formatting import IGNORE_INDEX, EncodedExample, collate_train

    backbone = method.backbone
    flat = [(b, c) for b in range(len(examples)) for c in range(len(candidates[b]))]
    scores: list[list[tuple[float, int]]] = [[(0.0, 0)] * len(c) for c in candidates]
    for start in range(0, len(flat), rows_per_forward):
        chunk = flat[start : start + rows_per_forward]
        encoded = [
            EncodedExample(
                input_ids=prompts[b] + candidates[b][c],
                labels=[IGNORE_INDEX] * len(prompts[b]) + candidates[b][c],
                prompt_len=len(prompts[b]),
                example=examples[b],
            )
            for b, c in chunk
        ]
        batch = collate_train(encoded, backbone.pad_token_id).to(backbone.device)
        out = method.inference_nll(batch)
        for (b, c), s, k in zip(chunk, out.nll_sum.tolist(), out.n_tokens.tolist(), strict=True):
            scores[b][c] = (float(s), int(k))
    return scores


def score_candidate_tokens(
    method: Method,
    examples: Sequence[Example],
    prompts: Sequence[list[int]],
    candidates: Sequence[Sequence[list[int]]],
    *,
    batch_size: int = 16,
    rows_per_forward: int = 128,
    use_prefix_sharing: bool = True,
    on_progress: Any = None,
) -> tuple[list[list[tuple[float, int]]], bool]:
    """(nll_sum, n_tokens) of every candidate token sequence of every example, and whether the
    prefix-sharing path was used. Each candidate is scored as the continuation of its example's
    prompt under the method's prefix. Examples are sorted by prompt length and grouped by
    `batch_size`: with prefix sharing, one prefix forward and one packed continuation forward
    per group; without it, full forwards of at most `rows_per_forward` sequences.
    Models whose cache is not a plain key/value cache (sliding windows) or whose attention
    takes no 4D mask are scored without sharing (the returned flag says so)."""
    import torch

    from spt_bench.models import autocast

    if batch_size < 1 or rows_per_forward < 1:
        raise ConfigError("batch_size and rows_per_forward must be >= 1")
    if any(not seq for cands in candidates for seq in cands):
        raise ValueError("empty candidate token sequence")
    examples, prompts = list(examples), [list(p) for p in prompts]
    cands = [[list(s) for s in c] for c in candidates]
    order = longest_first([len(p) for p in prompts])
    results: list[list[tuple[float, int]]] = [[] for _ in examples]
    backbone = method.backbone
    method.set_train_mode(False)
    shared = use_prefix_sharing
    with torch.inference_mode(), autocast(backbone.device):
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            args = (
                method,
                [examples[i] for i in idx],
                [prompts[i] for i in idx],
                [cands[i] for i in idx],
            )
            if shared:
                try:
                    group = _score_group_packed(*args)
                except _NoPrefixSharing:
                    shared = False  # recorded in the summary: this model is scored naively
            if not shared:
                group = _score_naive(*args, rows_per_forward)
            for i, s in zip(idx, group, strict=True):
                results[i] = s
            if on_progress is not None:
                on_progress(len(idx))
    return results, shared


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
    """
    import torch

    backbone = method.backbone
    if device is not None:
        dev = torch.device(device)
        idx = (dev.index, backbone.device.index)
        if dev.type != backbone.device.type or (None not in idx and idx[0] != idx[1]):
            raise ConfigError(
                f"model metrics on {device} but the model is on {backbone.device}; they must match"
            )
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
    scores, shared = score_candidate_tokens(
        method,
        examples,
        prompts,
        token_sets,
        batch_size=batch_size,
        rows_per_forward=rows_per_forward,
        use_prefix_sharing=use_prefix_sharing,
        on_progress=on_progress,
    )
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
    seconds = time.perf_counter() - t0
    n_seq = sum(len(s) for s in token_sets)
    summary: dict[str, Any] = {
        "ppl": PPL_DEFINITION,
        "tokenizer": tokenizer_fingerprint(backbone.tokenizer),
        "hits_k": list(ks),
        "hits_candidates": mode,
        "prefix_sharing": shared,
        "n_examples": len(examples),
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
            summary["synthetic_pool_examples"] = len(examples if pool is None else pool)
            summary["synthetic_seed"] = seed
            summary["synthetic_n_candidates"] = n_candidates
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
    `predictions_path` atomically with them, and return the summary for metrics.json."""
    import json

    from spt_bench.io import atomic_write_text

    bar = ProgressBar(console, "ppl/hits", len(examples)) if progress and examples else None
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
        )
    finally:
        if bar is not None:
            bar.close()
    mm.merge_into(rows)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    atomic_write_text(predictions_path, text)
    return mm.summary


def parse_hits_k(text: str) -> list[int]:
    """`--hits-k 1,5` -> [1, 5] (checked by `config.check_hits_settings`)."""
    try:
        ks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(
            f"--hits-k must be comma-separated integers, e.g. 1,5; got {text!r}"
        ) from None
    if not ks:
        raise ConfigError("--hits-k needs at least one k, e.g. 1")
    return ks


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
