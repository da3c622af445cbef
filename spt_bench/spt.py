"""Selective Prompt Tuning (Huang et al., ACL Findings 2024), registered as method "spt".

K soft prompts over a frozen causal LM and a dense retriever that picks one per input. Training
runs every example with all K prompts in one batched forward and combines four losses:

- L_nll: token-level cross-entropy over all K x B sequences (response tokens + EOS only);
- L_sel: KL(softmax_k(-l / tau_gold) || softmax_k(s / tau_sim)), l = per-prompt per-example
  response NLL (detached: the LM's own feedback), s = retriever scores; batch mean;
- L_fusion: cross-entropy of sum_k s_k z_k (logits fused with the raw retriever scores, as the
  authors do; `fusion_weights="normalized"` fuses with s_k / sum_j s_j) on the response positions,
  averaged per example and then over the batch as the authors do (`fusion_reduction="token"`:
  over all response tokens);
- L_ctr: cosine-embedding loss (margin 0) between the score vectors of every pair in the batch,
  target +1 when the two personas are similar (sentence BLEU > threshold), else -1.

Total = L_nll + selection_weight L_sel + fusion_weight L_fusion + contrastive_weight L_ctr.
At inference the retriever scores the K prompts from the input alone (persona + history, never
the response, never padding) and the argmax prompt is prepended. See docs/method.md for how this
differs from the authors' code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from spt_bench.errors import ConfigError
from spt_bench.methods import Method, PrefixOutput, register_method
from spt_bench.persona_sim import PersonaSimilarity
from spt_bench.soft_prompt import (
    PromptPool,
    prompted_response_nll,
    special_token_ids,
)
from spt_bench.spt_options import (  # noqa: F401  (re-exported: the options live torch-free)
    FUSION_REDUCTIONS,
    FUSION_WEIGHTINGS,
    RETRIEVER_QUERIES,
    SOFTPLUS_THRESHOLD,
    SptOptions,
)

if TYPE_CHECKING:  # pragma: no cover
    from spt_bench.batches import GenBatch, TrainBatch
    from spt_bench.data.example import Example
    from spt_bench.models import Backbone

SOFTPLUS_BETA = 10.0


class PromptRetriever(nn.Module):
    """Dense retriever: score_k = Softplus(beta=10, threshold)(cos(W q + c, W key_k + c)), one
    shared Linear; threshold 1 (default) is the authors' activation.

    Runs in fp32 with autocast off, so a prompt's score does not depend on bf16 rounding.
    """

    def __init__(
        self, hidden_size: int, center: bool = False, threshold: float = SOFTPLUS_THRESHOLD
    ) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.center = center
        self.threshold = float(threshold)
        if center:
            # set by SelectivePromptTuning.setup from the training queries; saved with the state
            self.register_buffer("query_center", torch.zeros(hidden_size))
            with torch.no_grad():
                self.proj.bias.zero_()

    def forward(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """query [B, d], keys [K, d] -> scores [B, K] in (0, ~1]."""
        with torch.autocast(device_type=query.device.type, enabled=False):
            query, keys = query.float(), keys.float()
            if self.center:
                query = query - self.query_center
                keys = keys - keys.mean(dim=0, keepdim=True)
            q = self.proj(query)
            k = self.proj(keys)
            cos = F.cosine_similarity(q[:, None, :], k[None, :, :], dim=-1)
            return F.softplus(cos, beta=SOFTPLUS_BETA, threshold=self.threshold)


def fusion_cross_entropy(
    fused: torch.Tensor,
    targets: torch.Tensor,
    example_index: torch.Tensor,
    batch_size: int,
    reduction: str = "example",
) -> torch.Tensor:
    """Cross-entropy of fused logits [M, V] at the batch's M response tokens.

    "example" (the authors'): mean over each example's tokens, then over the examples, so every
    example weighs the same; "token": mean over all M tokens (long responses weigh more).
    """
    if reduction == "token":
        return F.cross_entropy(fused, targets)
    per_token = F.cross_entropy(fused, targets, reduction="none")
    sums = per_token.new_zeros(batch_size).index_add(0, example_index, per_token)
    counts = torch.bincount(example_index, minlength=batch_size).to(per_token.dtype)
    return (sums / counts).mean()


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of values [B, T, d] over positions where mask [B, T] is 1, in fp32.

    Uses `where` rather than multiplication so that non-finite values at masked positions (e.g.
    hidden states of fully masked padding rows) cannot leak into the mean.
    """
    keep = mask.bool()
    counts = keep.sum(dim=1)
    if bool((counts == 0).any()):
        raise ValueError("retriever query: an example has no persona/history tokens")
    summed = torch.where(keep[..., None], values.float(), 0.0).sum(dim=1)
    return summed / counts[:, None].to(summed.dtype)


class SelectivePrompting(nn.Module):
    """SPT's trainable parts (prompt pool + retriever) and its losses over a frozen backbone.

    Framework-free core used by the registered method; every input is plain tensors.
    """

    def __init__(self, backbone: Backbone, options: SptOptions) -> None:
        super().__init__()
        self.backbone = backbone
        self.options = options
        emb = backbone.model.get_input_embeddings().weight
        hidden_size = int(emb.shape[-1])
        tokenizer = getattr(backbone, "tokenizer", None)
        self.prompt_pool = PromptPool(
            options.k,
            options.prompt_len,
            hidden_size,
            init=options.prompt_init,
            embedding_weight=emb,
            exclude_ids=special_token_ids(tokenizer),
            vocab_limit=len(tokenizer) if tokenizer is not None else None,
        )
        self.retriever = (
            PromptRetriever(
                hidden_size, center=options.retriever_center, threshold=options.softplus_threshold
            )
            if options.uses_retriever
            else None
        )
        self.persona_similarity = PersonaSimilarity(options.contrastive_threshold)
        self.to(backbone.device)

    # ------------------------------------------------------------------ retrieval

    def query(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, query_mask: torch.Tensor
    ) -> torch.Tensor:
        """Retriever query [B, d] (fp32): masked mean over the persona + history tokens.

        `query_mask` marks those tokens (TrainBatch.prompt_mask / GenBatch.attention_mask).
        "embeddings": the frozen input embeddings; "hidden": the frozen LM's last hidden state
        from one extra forward without soft prompt (causal, so later tokens cannot leak in).
        """
        with torch.no_grad():
            if self.options.retriever_query == "embeddings":
                return masked_mean(self.backbone.embed(input_ids), query_mask)
            # Only the columns up to the last query token matter (causal attention).
            last = int(query_mask.any(dim=0).nonzero().max()) + 1
            ids, mask, qmask = input_ids[:, :last], attention_mask[:, :last], query_mask[:, :last]
            hidden = self.backbone.hidden_states(self.backbone.embed(ids), mask)
            return masked_mean(hidden, qmask)

    def scores(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, query_mask: torch.Tensor
    ) -> torch.Tensor:
        """Retriever scores [B, K] for each example (requires a retriever, i.e. K > 1)."""
        if self.retriever is None:
            raise RuntimeError("no retriever: K = 1")
        q = self.query(input_ids, attention_mask, query_mask)
        return self.retriever(q, self.prompt_pool.keys())

    def select(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, query_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(selected prompt index [B], scores [B, K] or None when K = 1), from the input alone."""
        b = input_ids.shape[0]
        if self.retriever is None:
            return torch.zeros(b, dtype=torch.long, device=input_ids.device), None
        with torch.no_grad():
            s = self.scores(input_ids, attention_mask, query_mask)
        return s.argmax(dim=1), s

    # ------------------------------------------------------------------ training

    def losses(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        prompt_mask: torch.Tensor,
        personas: list[tuple[str, ...]] | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total training loss and its logged components for one batch.

        Logged: "nll" always; "sel", "fusion", "ctr" when active (raw, unweighted values);
        "retriever_entropy" (mean entropy of softmax(s / tau_sim), nats), "selection_agreement"
        (fraction of examples whose top-scored prompt is the one with the lowest LM loss) and
        "score_sum" (mean over the batch of sum_k s_k) whenever there is a retriever.
        """
        opts = self.options
        use_fusion = self.retriever is not None and opts.fusion
        out = prompted_response_nll(
            self.backbone,
            self.prompt_pool.prompts,
            input_ids,
            attention_mask,
            labels,
            return_logits=use_fusion,
        )
        nll = out.lm_loss()
        total = nll
        logs: dict[str, float] = {"nll": float(nll.detach())}
        if self.retriever is None:
            return total, logs

        s = self.scores(input_ids, attention_mask, prompt_mask)  # [B, K]
        log_p_ret = F.log_softmax(s / opts.tau_sim, dim=-1)
        gold_nll = out.example_nll.detach().T  # [B, K]
        if opts.selection_loss:
            log_p_gold = F.log_softmax(-gold_nll / opts.tau_gold, dim=-1)
            sel = F.kl_div(log_p_ret, log_p_gold, reduction="batchmean", log_target=True)
            total = total + opts.selection_weight * sel
            logs["sel"] = float(sel.detach())
        if use_fusion:
            assert out.logits is not None
            w = s if opts.fusion_weights == "raw" else s / s.sum(dim=-1, keepdim=True)
            weights = w.T[:, out.example_index].to(out.logits.dtype)  # [K, M]
            fused = torch.einsum("km,kmv->mv", weights, out.logits)
            fusion = fusion_cross_entropy(
                fused, out.targets, out.example_index, len(input_ids), opts.fusion_reduction
            )
            total = total + opts.fusion_weight * fusion
            logs["fusion"] = float(fusion.detach())
        if opts.contrastive:
            if personas is None:
                raise ValueError("the contrastive loss needs each example's persona")
            ctr = self.contrastive_loss(s, personas)
            total = total + opts.contrastive_weight * ctr
            logs["ctr"] = float(ctr.detach())
        with torch.no_grad():
            p_ret = log_p_ret.exp()
            logs["retriever_entropy"] = float(-(p_ret * log_p_ret).sum(-1).mean())
            agree = s.argmax(dim=1) == gold_nll.argmin(dim=1)
            logs["selection_agreement"] = float(agree.float().mean())
            # Sum of the raw scores: the fusion loss uses them unnormalised, so this sum acts as
            # an inverse temperature on the fused logits (docs/results.md, retriever collapse).
            logs["score_sum"] = float(s.sum(-1).mean())
        return total, logs

    def contrastive_loss(self, s: torch.Tensor, personas: list[tuple[str, ...]]) -> torch.Tensor:
        """Cosine-embedding loss (margin 0) over all pairs i < j of the batch's score vectors."""
        b = s.shape[0]
        if len(personas) != b:
            raise ValueError(f"{len(personas)} personas for a batch of {b}")
        if b < 2:
            return s.sum() * 0.0  # no pair: zero, but keeps the graph uniform
        targets = self.persona_similarity.pair_targets(personas)
        i, j = torch.triu_indices(b, b, offset=1, device=s.device)
        y = torch.tensor(targets, dtype=s.dtype, device=s.device)
        return F.cosine_embedding_loss(s[i], s[j], y, margin=0.0)

    # ------------------------------------------------------------------ inference

    def prefix(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, query_mask: torch.Tensor
    ) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """Per-example soft prompt [B, L, d] (in the LM's dtype) and row info for predictions."""
        selected, s = self.select(input_ids, attention_mask, query_mask)
        dtype = self.backbone.model.get_input_embeddings().weight.dtype
        embeds = self.prompt_pool.prompts.detach()[selected].to(dtype)
        rows: list[dict[str, Any]] = []
        for b in range(input_ids.shape[0]):
            info: dict[str, Any] = {"selected_prompt": int(selected[b])}
            if s is not None:
                info["prompt_scores"] = [float(v) for v in s[b].tolist()]
            rows.append(info)
        return embeds, rows

    def trained_state(self) -> dict[str, torch.Tensor]:
        """The trained tensors only (prompt pool and retriever), safetensors-friendly names."""
        state = {"prompt_pool.prompts": self.prompt_pool.prompts.detach().cpu().contiguous()}
        if self.retriever is not None:
            for name, tensor in self.retriever.state_dict().items():
                state[f"retriever.{name}"] = tensor.detach().cpu().contiguous()
        return state

    def load_trained_state(self, state: dict[str, torch.Tensor]) -> None:
        expected = self.trained_state()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ConfigError(
                f"checkpoint does not fit this SPT configuration (k={self.options.k}, "
                f"prompt_len={self.options.prompt_len}): missing {missing}, unexpected {unexpected}"
            )
        for name, tensor in state.items():
            if tuple(tensor.shape) != tuple(expected[name].shape):
                raise ConfigError(
                    f"checkpoint tensor {name} has shape {tuple(tensor.shape)}, "
                    f"expected {tuple(expected[name].shape)}"
                )
        with torch.no_grad():
            self.prompt_pool.prompts.copy_(state["prompt_pool.prompts"])
            if self.retriever is not None:
                self.retriever.load_state_dict(
                    {
                        k.removeprefix("retriever."): v
                        for k, v in state.items()
                        if k.startswith("retriever.")
                    }
                )


def prompt_usage(rows: list[dict[str, Any]], k: int | None = None) -> list[int]:
    """Histogram of `selected_prompt` over prediction rows: counts per prompt index [K].

    K is taken from `k`, else from the rows' `prompt_scores` length, else the largest index + 1.
    Rows without `selected_prompt` (methods without prompt selection) are ignored.
    """
    selected = [int(r["selected_prompt"]) for r in rows if r.get("selected_prompt") is not None]
    if k is None:
        lengths = [len(r["prompt_scores"]) for r in rows if r.get("prompt_scores")]
        k = max(lengths) if lengths else (max(selected) + 1 if selected else 0)
    counts = [0] * k
    for idx in selected:
        if not 0 <= idx < k:
            raise ValueError(f"selected_prompt {idx} outside 0..{k - 1}")
        counts[idx] += 1
    return counts


# ---------------------------------------------------------------------- the registered method


@register_method
class SelectivePromptTuning(Method):
    """`spt`: K soft prompts + a dense retriever trained with the LM's own loss as feedback."""

    name = "spt"
    description = (
        "Selective Prompt Tuning: K soft prompts over the frozen LM, a dense retriever picks one "
        "per input (LM-feedback selection, prompt fusion, persona-contrastive losses)."
    )
    Options = SptOptions
    default_lr = 1e-3

    def __init__(self, backbone: Backbone, options: Any = None) -> None:
        super().__init__(backbone, options)
        self.core = SelectivePrompting(backbone, self.core_options())

    def core_options(self) -> SptOptions:
        """The SptOptions the shared core runs with (prompt-tuning maps its options here)."""
        return self.options

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.core.parameters())

    def setup(self, train_examples: list[Example], *, seed: int = 0, formatter: Any = None) -> None:
        """With --retriever-center: the mean retriever query of (up to 1024 evenly spaced)
        training examples, formatted as the run formats them, becomes the query centre (saved
        in the trained state; not recomputed when a checkpoint is loaded)."""
        retriever = self.core.retriever
        if retriever is None or not retriever.center or not train_examples:
            return
        from spt_bench.data.formatting import collate_train

        step = max(1, len(train_examples) // 1024)
        chosen = train_examples[::step][:1024]
        formatter = formatter or self.build_formatter()
        encoded = [formatter.encode_train(ex) for ex in chosen]
        total = torch.zeros(self.core.prompt_pool.prompts.shape[-1], dtype=torch.float64)
        for i in range(0, len(encoded), 32):
            batch = collate_train(encoded[i : i + 32], self.backbone.pad_token_id)
            batch = batch.to(self.backbone.device)
            q = self.core.query(batch.input_ids, batch.attention_mask, batch.prompt_mask)
            total += q.double().sum(dim=0).cpu()
        retriever.query_center.copy_((total / len(encoded)).to(retriever.query_center))

    def training_loss(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, float]]:
        personas = [ex.persona for ex in batch.examples] if batch.examples else None
        return self.core.losses(
            batch.input_ids, batch.attention_mask, batch.labels, batch.prompt_mask, personas
        )

    def prefix_embeds(self, batch: GenBatch) -> PrefixOutput:
        embeds, rows = self.core.prefix(batch.input_ids, batch.attention_mask, batch.attention_mask)
        return PrefixOutput(embeds=embeds, row_info=rows)

    def trained_state(self) -> dict[str, torch.Tensor]:
        return self.core.trained_state()

    def soft_prompts(self) -> torch.Tensor | None:
        return self.core.prompt_pool.prompts

    def load_trained_state(self, state: dict[str, torch.Tensor]) -> None:
        self.core.load_trained_state(state)

    def dev_metrics(self, batches: list[TrainBatch]) -> dict[str, Any]:
        """Dev loss (base) plus, with a retriever, prompt usage counts and retriever entropy."""
        metrics = super().dev_metrics(batches)
        if self.core.retriever is not None:
            metrics.update(self.retrieval_diagnostics(batches))
        return metrics

    def prediction_diagnostics(self, rows: list[dict]) -> dict[str, Any]:
        """The test split's prompt-usage histogram (metrics.json "diagnostics")."""
        if self.core.retriever is None:
            return {}
        usage = prompt_usage(rows, self.core.options.k)
        n = max(sum(usage), 1)
        return {"prompt_usage": usage, "prompt_share": [u / n for u in usage]}

    def retrieval_diagnostics(self, batches: list[TrainBatch] | list[GenBatch]) -> dict[str, Any]:
        """prompt_usage (argmax counts per prompt) and retriever_entropy (mean entropy, nats, of
        softmax(scores / tau_sim)) over the batches' persona + history."""
        k = self.core.options.k
        usage = torch.zeros(k, dtype=torch.long)
        entropy_sum, n = 0.0, 0
        with torch.no_grad():
            for batch in batches:
                selected, s = self.core.select(
                    batch.input_ids, batch.attention_mask, batch.prompt_mask
                )
                usage += torch.bincount(selected.cpu(), minlength=k)
                if s is not None:
                    logp = F.log_softmax(s / self.core.options.tau_sim, dim=-1)
                    entropy_sum += float(-(logp.exp() * logp).sum())
                n += len(batch)
        return {"prompt_usage": usage.tolist(), "retriever_entropy": entropy_sum / max(n, 1)}

    def summary(self) -> dict:
        out = super().summary()
        opts = self.core.options
        out["k"] = opts.k
        out["prompt_len"] = opts.prompt_len
        out["retriever"] = (
            f"linear({self.core.prompt_pool.prompts.shape[-1]}) on {opts.retriever_query}"
            if self.core.retriever is not None
            else None
        )
        out["active_losses"] = opts.active_terms()
        out["persona_pairs_cached"] = len(self.core.persona_similarity)
        return out

    @classmethod
    def report_sections(
        cls, metrics: dict, rows: list[dict], example_scores: list[dict]
    ) -> list[str]:
        return prompt_usage_report(metrics, rows, example_scores)


def prompt_usage_report(metrics: dict, rows: list[dict], scores: list[dict]) -> list[str]:
    """SPT: how often each prompt was selected, overall and per turn bucket, and the mean F1
    of the examples each prompt served (from example_scores.jsonl)."""
    chosen = [r for r in rows if r.get("selected_prompt") is not None]
    if not chosen:
        return []
    from spt_bench.plots import turn_bucket_of
    from spt_bench.report import fmt_score, md_table

    k = max(max(int(r["selected_prompt"]) + 1, len(r.get("prompt_scores") or [])) for r in chosen)
    buckets = list((metrics.get("by_turn") or {}).keys())
    f1 = {str(e["id"]): e["f1"] for e in scores if "f1" in e}
    counts = prompt_usage(chosen, k)
    per_bucket = [[0] * len(buckets) for _ in range(k)]
    totals = [0] * len(buckets)
    f1_sums, f1_counts = [0.0] * k, [0] * k
    for r in chosen:
        j = int(r["selected_prompt"])
        b = turn_bucket_of(int(r.get("turn", -1)), buckets) if buckets else None
        if b is not None:
            per_bucket[j][buckets.index(b)] += 1
            totals[buckets.index(b)] += 1
        if str(r["id"]) in f1:
            f1_sums[j] += f1[str(r["id"])]
            f1_counts[j] += 1
    n = len(chosen)
    lines = ["", "## Prompt usage (SPT)", ""]
    lines += [
        f"Selected prompt per test example ({n} examples, K={k}); per-turn columns: share of "
        "that turn's examples; mean f1 over the examples the prompt was selected for.",
        "",
    ]
    table = []
    for j in range(k):
        mean_f1 = f1_sums[j] / f1_counts[j] if f1_counts[j] else None
        shares = [
            f"{100 * per_bucket[j][b] / totals[b]:.0f}%" if totals[b] else "-"
            for b in range(len(buckets))
        ]
        table.append([j, counts[j], f"{100 * counts[j] / n:.1f}%", fmt_score(mean_f1), *shares])
    lines += md_table(
        ["prompt", "selected", "share", "mean f1", *(f"turn {b}" for b in buckets)], table
    )
    top = max(range(k), key=counts.__getitem__)
    if k > 1 and counts[top] >= 0.9 * n:
        lines += [
            "",
            f"Prompt {top} serves {100 * counts[top] / n:.0f}% of the examples: the retriever "
            "has (nearly) collapsed onto one prompt.",
        ]
    return lines
