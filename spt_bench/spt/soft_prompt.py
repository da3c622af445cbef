"""Soft prompts over a frozen causal LM: the prompt pool and the K-batched prompted forward.

Shared by SPT (K prompts, `spt_bench.spt.core`) and single soft-prompt tuning (K = 1,
`baselines.prompt_tuning`): both run `prompted_response_nll`, so prompt tuning is SPT's code path
with one prompt, not a copy of it.

The K prompts are run as ONE forward over K x B sequences (prompt k prepended to every example
of the batch), stacked prompt-major: sequence n = k * B + b. Logits are computed only at the
response positions (`spt_bench.models.response_nll`), so the K-fold batch does not pay for
full-vocabulary logits over persona and history.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from spt_bench.errors import ConfigError
from spt_bench.spt.options import PROMPT_INITS

if TYPE_CHECKING:  # pragma: no cover
    from spt_bench.models import Backbone


class PromptPool(nn.Module):
    """K soft prompts of L virtual tokens each: one fp32 parameter `prompts` [K, L, d].

    init "vocab": each virtual token starts as the input embedding of a token drawn uniformly
    from the vocabulary (special tokens excluded), the usual prompt-tuning initialisation;
    init "normal": N(0, 1) entries, as in the SPT authors' code. Draws use torch's global RNG,
    so a seeded run builds the same pool every time.
    """

    def __init__(
        self,
        k: int,
        prompt_len: int,
        hidden_size: int,
        *,
        init: str = "vocab",
        embedding_weight: torch.Tensor | None = None,
        exclude_ids: Iterable[int] = (),
        vocab_limit: int | None = None,
    ) -> None:
        super().__init__()
        if k < 1 or prompt_len < 1:
            raise ConfigError(
                f"need k >= 1 and prompt_len >= 1, got k={k}, prompt_len={prompt_len}"
            )
        if init not in PROMPT_INITS:
            raise ConfigError(
                f"prompt init {init!r} unknown; choose one of {', '.join(PROMPT_INITS)}"
            )
        if init == "vocab":
            if embedding_weight is None:
                raise ConfigError("prompt init 'vocab' needs the LM's input embedding matrix")
            values = sample_vocab_embeddings(
                embedding_weight, k * prompt_len, exclude_ids=exclude_ids, vocab_limit=vocab_limit
            ).view(k, prompt_len, hidden_size)
        else:
            values = torch.randn(k, prompt_len, hidden_size)
        self.prompts = nn.Parameter(values)

    @property
    def k(self) -> int:
        return int(self.prompts.shape[0])

    @property
    def prompt_len(self) -> int:
        return int(self.prompts.shape[1])

    def keys(self) -> torch.Tensor:
        """Key vector of each prompt for the retriever: the mean of its virtual tokens [K, d]."""
        return self.prompts.mean(dim=1)


def sample_vocab_embeddings(
    embedding_weight: torch.Tensor,
    n: int,
    *,
    exclude_ids: Iterable[int] = (),
    vocab_limit: int | None = None,
) -> torch.Tensor:
    """`n` rows of the embedding matrix drawn uniformly (with replacement), as fp32 [n, d]."""
    rows = (
        embedding_weight.shape[0]
        if vocab_limit is None
        else min(vocab_limit, embedding_weight.shape[0])
    )
    allowed = torch.ones(rows, dtype=torch.bool)
    excluded = [i for i in exclude_ids if 0 <= i < rows]
    if excluded:
        allowed[torch.tensor(excluded)] = False
    candidates = allowed.nonzero().squeeze(1)
    if candidates.numel() == 0:
        raise ConfigError("no vocabulary token left to initialise soft prompts from")
    picks = candidates[torch.randint(candidates.numel(), (n,))]
    return embedding_weight.detach()[picks.to(embedding_weight.device)].float().cpu().clone()


def special_token_ids(tokenizer: object | None) -> list[int]:
    """Ids of the tokenizer's special tokens (not used to initialise prompts)."""
    if tokenizer is None:
        return []
    return [int(i) for i in getattr(tokenizer, "all_special_ids", []) or []]


@dataclass
class PromptedNLL:
    """Per-prompt losses of one K-batched forward over B examples.

    token_nll [K, M]: NLL of each of the M response tokens of the batch (response + EOS) under
    each prompt; example_index [M]: the example b of each token; targets [M]; example_nll [K, B]:
    mean token NLL per prompt and example; logits [K, M, V] (fp32) when requested, else None.
    """

    token_nll: torch.Tensor
    example_index: torch.Tensor
    targets: torch.Tensor
    example_nll: torch.Tensor
    logits: torch.Tensor | None

    def lm_loss(self) -> torch.Tensor:
        """Token-level mean cross-entropy over all K x B sequences (SPT's L_nll)."""
        return self.token_nll.mean()


def prompted_response_nll(
    backbone: Backbone,
    prompts: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    *,
    return_logits: bool = False,
) -> PromptedNLL:
    """Response NLL of B examples under each of K prompts, in ONE forward of K*B sequences.

    `prompts` [K, L, d]; `input_ids`/`attention_mask`/`labels` [B, T] (a TrainBatch's tensors).
    Each sequence is [prompt k (L virtual tokens), example tokens]; labels of the prompt positions
    are -100. The token embeddings are looked up once and shared by the K copies.
    """
    k, plen, _ = prompts.shape
    b, t = input_ids.shape
    if b == 0:
        raise ValueError("empty batch")
    tokens = backbone.embed(input_ids)  # [B, T, d]; the frozen table, no grad
    prefix = prompts.to(tokens.dtype)[:, None].expand(k, b, plen, tokens.shape[-1])
    embeds = torch.cat([prefix, tokens[None].expand(k, b, t, tokens.shape[-1])], dim=2)
    embeds = embeds.reshape(k * b, plen + t, tokens.shape[-1])
    if bool((attention_mask[:, :-1] >= attention_mask[:, 1:]).all()):
        # Right padding (TrainBatch): causal attention already hides the trailing pads from
        # every scored position, and positions count the same, so an all-ones mask gives the
        # same losses while letting SDPA take its fused causal (flash) kernel.
        mask = attention_mask.new_ones(k * b, plen + t)
    else:
        ones = attention_mask.new_ones(b, plen)
        mask = torch.cat([ones, attention_mask], dim=1).repeat(k, 1)
    ignore = labels.new_full((b, plen), -100)
    full_labels = torch.cat([ignore, labels], dim=1).repeat(k, 1)

    from spt_bench.models import response_nll

    out = response_nll(backbone, embeds, mask, full_labels, return_logits=return_logits)
    # Sequences are prompt-major and every copy has the same scored positions, so the M*K scored
    # tokens regroup as [K, M] in order.
    m = out.token_nll.numel() // k
    token_nll = out.token_nll.view(k, m)
    example_index = out.row_index[:m]
    n_tokens = out.n_tokens[:b].to(token_nll.dtype)
    if bool((n_tokens == 0).any()):
        raise ValueError("every example needs at least one response token (labels all -100)")
    example_nll = out.nll_sum.view(k, b) / n_tokens
    logits = out.logits.view(k, m, -1) if out.logits is not None else None
    return PromptedNLL(
        token_nll=token_nll,
        example_index=example_index,
        targets=out.targets[:m],
        example_nll=example_nll,
        logits=logits,
    )
