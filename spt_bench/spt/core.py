"""Selective Prompt Tuning's torch core (Huang et al., ACL Findings 2024): the prompt pool and
retriever over a frozen LM and their losses; the registered method is `spt_bench.spt.method`.

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
from spt_bench.spt.analysis import SCORES, SELECTED
from spt_bench.spt.options import SOFTPLUS_THRESHOLD, SptOptions
from spt_bench.spt.persona_sim import PersonaSimilarity
from spt_bench.spt.soft_prompt import (
    PromptPool,
    prompted_response_nll,
    special_token_ids,
)

if TYPE_CHECKING:  # pragma: no cover
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
            info: dict[str, Any] = {SELECTED: int(selected[b])}
            if s is not None:
                info[SCORES] = [float(v) for v in s[b].tolist()]
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
