"""Options of `spt` and `prompt-tuning`, torch-free: the CLI and `run` validate them before
any heavy import (spt_bench/spt/method.py holds the method itself)."""

from __future__ import annotations

from dataclasses import dataclass

from spt_bench.config import setting
from spt_bench.errors import ConfigError

PROMPT_INITS = ("vocab", "normal")
RETRIEVER_QUERIES = ("embeddings", "hidden")
FUSION_WEIGHTINGS = ("raw", "normalized")
FUSION_REDUCTIONS = ("example", "token")
# The authors' nn.Softplus(beta=10, threshold=1): identity once beta * cos > 1, i.e. the score
# is exactly the cosine for cos > 0.1 (torch's default threshold 20 stays smooth up to cos = 2)
SOFTPLUS_THRESHOLD = 1.0


@dataclass
class SptOptions:
    """SPT settings; field names match the CLI flags (--k, --prompt-len, --no-fusion, ...).

    Defaults are the authors' OPT settings (K=4, L=8, lambda_sel = lambda_ctr = 0.4, tau = 1,
    BLEU threshold 20, fusion and contrastive on), except the prompt initialisation (sampled
    vocabulary embeddings instead of N(0, 1); `prompt_init="normal"` restores theirs).
    With k = 1 there is nothing to select: no retriever is built and the selection, fusion and
    contrastive terms are not computed, which makes SPT exactly single soft-prompt tuning.
    """

    k: int = setting(4, "number of soft prompts K")
    prompt_len: int = setting(8, "virtual tokens per prompt L")
    prompt_init: str = setting(
        "vocab", "vocab (sampled vocabulary embeddings) | normal (the authors')"
    )
    retriever_query: str = setting("embeddings", "embeddings | hidden: what the retriever reads")
    retriever_center: bool = setting(
        False,
        "centre queries (by the training queries' mean) and keys (by the pool's mean key) before the Linear, whose bias starts at zero: mean input embeddings share one dominant direction (pairwise cosine ~0.93 on ConvAI2), which makes every input pick the same prompt",
    )
    selection_loss: bool = setting(True, "L_sel: KL to the LM-loss ranking of the prompts")
    fusion: bool = setting(True, "L_fusion: CE of the score-weighted fused logits")
    contrastive: bool = setting(True, "L_ctr: persona-similarity contrastive loss")
    selection_weight: float = setting(0.4, "lambda_sel")
    contrastive_weight: float = setting(0.4, "lambda_ctr")
    fusion_weight: float = setting(1.0, "weight of L_fusion")
    fusion_weights: str = setting(
        "raw",
        '"raw": fuse logits with the softplus scores as they are (the authors\'); "normalized": with s_k / sum_j s_j, so the fused logits are a convex mixture whose scale the scores cannot change',
    )
    fusion_reduction: str = setting(
        "example",
        '"example": cross-entropy averaged per example, then over the batch (the authors\'); "token": averaged over all response tokens of the batch (long responses weigh more)',
    )
    softplus_threshold: float = setting(
        SOFTPLUS_THRESHOLD,
        "softplus threshold of the retriever's activation: 1 = the authors' (score = cos for cos > 0.1, smooth below: a jump of 0.031 at cos = 0.1, so not monotonic for cos in (0.054, 0.131)); 20 = torch's default (smooth and monotonic)",
    )
    tau_gold: float = setting(1.0, "temperature of the LM-loss ranking")
    tau_sim: float = setting(1.0, "temperature of the retriever scores")
    contrastive_threshold: float = setting(
        20.0, "persona BLEU above which two inputs count as similar"
    )

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"--k must be an integer >= 1, got {self.k!r}")
        if not isinstance(self.prompt_len, int) or self.prompt_len < 1:
            raise ConfigError(f"--prompt-len must be an integer >= 1, got {self.prompt_len!r}")
        if self.prompt_init not in PROMPT_INITS:
            raise ConfigError(
                f"--prompt-init must be one of {', '.join(PROMPT_INITS)}, got {self.prompt_init!r}"
            )
        if self.retriever_query not in RETRIEVER_QUERIES:
            raise ConfigError(
                f"--retriever-query must be one of {', '.join(RETRIEVER_QUERIES)}, "
                f"got {self.retriever_query!r}"
            )
        if self.fusion_weights not in FUSION_WEIGHTINGS:
            raise ConfigError(
                f"--fusion-weights must be one of {', '.join(FUSION_WEIGHTINGS)}, "
                f"got {self.fusion_weights!r}"
            )
        if self.fusion_reduction not in FUSION_REDUCTIONS:
            raise ConfigError(
                f"--fusion-reduction must be one of {', '.join(FUSION_REDUCTIONS)}, "
                f"got {self.fusion_reduction!r}"
            )
        for name in ("selection_weight", "contrastive_weight", "fusion_weight"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value >= 0 or value == float("inf"):
                raise ConfigError(
                    f"--{name.replace('_', '-')} must be a finite number >= 0, got {value!r}"
                )
        for name in ("tau_gold", "tau_sim", "softplus_threshold"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value > 0 or value == float("inf"):
                raise ConfigError(
                    f"--{name.replace('_', '-')} must be a finite number > 0, got {value!r}"
                )
        if not isinstance(self.contrastive_threshold, int | float) or not (
            0 <= self.contrastive_threshold <= 100
        ):
            raise ConfigError(
                f"--contrastive-threshold is a BLEU score in [0, 100], got {self.contrastive_threshold!r}"
            )

    @property
    def uses_retriever(self) -> bool:
        return self.k > 1

    def active_terms(self) -> list[str]:
        """Loss terms this configuration computes, in log order."""
        terms = ["nll"]
        if self.uses_retriever:
            terms += [
                name
                for name, on in (
                    ("sel", self.selection_loss),
                    ("fusion", self.fusion),
                    ("ctr", self.contrastive),
                )
                if on
            ]
        return terms


@dataclass
class PromptTuningOptions:
    prompt_len: int = setting(8, "virtual tokens per prompt L")
    prompt_init: str = setting(
        "vocab", "vocab (sampled vocabulary embeddings) | normal (the authors')"
    )

    def __post_init__(self) -> None:
        # Same validation (and messages) as SPT's options.
        self.as_spt()

    def as_spt(self) -> SptOptions:
        """The SPT configuration that is exactly this method: K = 1, no retriever terms."""
        return SptOptions(
            k=1,
            prompt_len=self.prompt_len,
            prompt_init=self.prompt_init,
            selection_loss=False,
            fusion=False,
            contrastive=False,
        )
