"""The scoring kernel of perplexity and hits@k: the log-likelihood of candidate token
sequences after a prompt under the method's prefix - packed, sharing one prompt forward across
an example's candidates where the KV cache allows it, else one sequence at a time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from spt_bench.batches import longest_first
from spt_bench.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from spt_bench.data.example import Example
    from spt_bench.methods import Method

# Rows per lm-head call: bounds the [rows, vocab] logits tensor (2048 x 49152 fp32 = 400 MB).
LM_HEAD_CHUNK = 2048


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


def _prefix_forward(
    method: Method, examples: list[Example], prompts: list[list[int]]
) -> tuple[torch.Tensor, Any, torch.Tensor]:
    """The group's left-padded prompts under the method's prefix through the backbone, filling a
    KV cache: (attention mask [B, P], cache, each row's last hidden state [B, H])."""
    from spt_bench.data.formatting import collate_generate
    from spt_bench.decode import prefixed_inputs

    backbone = method.backbone
    gen = collate_generate(prompts, backbone.pad_token_id, examples).to(backbone.device)
    # A per-layer key/value prefix (prefix tuning) arrives as a pre-filled cache whose columns
    # `mask` already covers, so the packed continuation sees it like any cached token.
    embeds, mask, _, cache = prefixed_inputs(method, gen)
    hidden, cache = backbone.forward_base(embeds, mask, cache=cache, use_cache=True)
    _require_plain_cache(cache)
    last = hidden[:, -1]  # left-padded: the last column predicts each row's first response token
    del hidden
    return mask, cache, last


def _packed_rows(
    candidates: list[list[list[int]]],
) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
    """Per row: the fed tokens (each candidate but its last token), their candidate index and
    offset inside the candidate."""
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
    return fed, owner, offset


def _packed_allowed(own: torch.Tensor, mask: torch.Tensor, device: Any) -> torch.Tensor:
    """Boolean [B, 1, W, P + W] mask of the packed continuation: a fed token sees its row's
    prefix and its own candidate's earlier tokens; a padding column sees itself."""
    import torch

    n_rows, width = own.shape
    n_prefix = mask.shape[1]
    q = torch.arange(width, device=device)
    same = own[:, :, None] == own[:, None, :]  # [B, W, W] same candidate
    causal = q[None, :, None] >= q[None, None, :]
    cont_ok = same & causal & (own[:, None, :] >= 0)
    cont_ok |= torch.eye(width, dtype=torch.bool, device=device)[None]  # padding: itself
    prefix_ok = mask.bool()[:, None, :].expand(n_rows, width, n_prefix)
    return torch.cat([prefix_ok, cont_ok], dim=2)[:, None]  # [B, 1, W, P + W]


def _continuation_forward(
    backbone: Any, attn: str, candidates: list[list[list[int]]], mask: torch.Tensor, cache: Any
) -> torch.Tensor | None:
    """ONE forward over the cached prefixes in which each row packs all of its example's
    candidates side by side, positions continuing from the row's prefix length: the hidden
    states [B, W, H] of the fed tokens, or None when no candidate has more than one token."""
    import torch

    device = backbone.device
    pad = backbone.pad_token_id
    n_rows = mask.shape[0]
    prefix_len = mask.sum(dim=1).tolist()
    fed, owner, offset = _packed_rows(candidates)
    width = max(len(r) for r in fed)
    if not width:
        return None
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
    allowed = _packed_allowed(own, mask, device)
    cont_embeds = backbone.embed(ids)
    if attn == "sdpa":  # boolean (True = attend), whatever dtype autocast computes in
        mask4d = allowed
    else:  # eager attention adds the mask to its scores
        mask4d = torch.zeros(allowed.shape, dtype=cont_embeds.dtype, device=device)
        mask4d.masked_fill_(~allowed, torch.finfo(cont_embeds.dtype).min)
    h_cont, _ = backbone.forward_base(
        cont_embeds, mask4d, position_ids=pos, cache=cache, use_cache=True
    )
    return h_cont


def _prediction_index(
    candidates: list[list[list[int]]],
) -> tuple[list[int], list[int], list[int], list[int], list[tuple[int, int]]]:
    """Per candidate token: the row and fed column of the hidden state that predicts it (column
    -1: the prefix's last state), the token, and its candidate's index in `flat`, the list of
    (row, candidate) pairs."""
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
    return pred_rows, pred_cols, targets, seq_of, flat


def _candidate_scores(
    backbone: Any,
    candidates: list[list[list[int]]],
    last: torch.Tensor,
    h_cont: torch.Tensor | None,
) -> list[list[tuple[float, int]]]:
    """(nll_sum, n_tokens) per candidate from the prefix's last states and the packed ones."""
    import torch

    device = backbone.device
    pred_rows, pred_cols, targets, seq_of, flat = _prediction_index(candidates)
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
    backbone = method.backbone
    attn = getattr(backbone.model.config, "_attn_implementation", None)
    if attn not in ("sdpa", "eager"):
        raise _NoPrefixSharing(f"attention implementation {attn!r} takes no 4D mask")
    mask, cache, last = _prefix_forward(method, examples, prompts)
    h_cont = _continuation_forward(backbone, attn, candidates, mask, cache)
    return _candidate_scores(backbone, candidates, last, h_cont)


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
    groups: Sequence[Sequence[int]] | None = None,
    on_group: Any = None,
) -> tuple[list[list[tuple[float, int]]], bool]:
    """(nll_sum, n_tokens) of every candidate token sequence of every example, and whether the
    prefix-sharing path was used. Each candidate is scored as the continuation of its example's
    prompt under the method's prefix. Examples are sorted by prompt length and grouped by
    `batch_size`: with prefix sharing, one prefix forward and one packed continuation forward
    per group; without it, full forwards of at most `rows_per_forward` sequences.
    Models whose cache is not a plain key/value cache (sliding windows) or whose attention
    takes no 4D mask are scored without sharing (the returned flag says so).
    groups: score only these groups of example indices (a share of
    `length_sorted_batches(prompt lengths, batch_size)`: sharded and resumed scoring), leaving
    the others' results empty; on_group(indices, results, prefix_sharing) follows each group."""
    import torch

    from spt_bench.models import autocast

    if batch_size < 1 or rows_per_forward < 1:
        raise ConfigError("batch_size and rows_per_forward must be >= 1")
    if any(not seq for cands in candidates for seq in cands):
        raise ValueError("empty candidate token sequence")
    examples, prompts = list(examples), [list(p) for p in prompts]
    cands = [[list(s) for s in c] for c in candidates]
    if groups is None:
        order = longest_first([len(p) for p in prompts])
        groups = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    results: list[list[tuple[float, int]]] = [[] for _ in examples]
    backbone = method.backbone
    method.set_train_mode(False)
    shared = use_prefix_sharing
    with torch.inference_mode(), autocast(backbone.device):
        for idx in groups:
            idx = list(idx)
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
            if on_group is not None:
                on_group(idx, group, shared)
            if on_progress is not None:
                on_progress(len(idx))
    return results, shared
