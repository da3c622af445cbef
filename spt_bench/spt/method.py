"""The registered method `spt` (Selective Prompt Tuning; the losses are in `spt_bench.spt.core`).

Importing this module is torch-free: torch and the core load when a method is built, so the
registry, the CLI's option checks and the class-level hooks (labels, row fields, report
sections) stay cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import spt_bench.spt.analysis as analysis
from spt_bench.methods import BenchEntry, Method, PrefixOutput, register_method
from spt_bench.spt.options import SptOptions

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from spt_bench.batches import GenBatch, TrainBatch
    from spt_bench.data.example import Example
    from spt_bench.models import Backbone


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
    option_labels = {"k": "K", "prompt_len": "L"}
    row_fields = analysis.ROW_FIELDS
    log_fields = analysis.LOG_FIELDS
    # the benchmark's headline: timed by default (first), decoded by default, against
    # prompt tuning, with and without lean activations, checkpointed, profiled
    bench = BenchEntry(
        train_default=True, order=10, decode_default=True, relative_to="prompt-tuning",
        lean_compare=True, checkpointing=True, profile=True,
    )  # fmt: skip

    def __init__(self, backbone: Backbone, options: Any = None) -> None:
        from spt_bench.spt.core import SelectivePrompting

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
        import torch

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
        return analysis.usage_diagnostics(rows, self.core.options.k)

    def retrieval_diagnostics(self, batches: list[TrainBatch] | list[GenBatch]) -> dict[str, Any]:
        """prompt_usage (argmax counts per prompt) and retriever_entropy (mean entropy, nats, of
        softmax(scores / tau_sim)) over the batches' persona + history."""
        import torch
        import torch.nn.functional as F

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
    ) -> list[analysis.ReportSection]:
        return analysis.usage_report(metrics, rows, example_scores)

    @classmethod
    def describe_row(cls, info: dict) -> str:
        return analysis.describe_row(info)

    @classmethod
    def prompt_usage(
        cls,
        rows: list[dict],
        *,
        k: int | None = None,
        buckets: list[str] | None = None,
        turn_default: int = 0,
    ) -> analysis.PromptUsage | None:
        return analysis.usage_of(rows, k=k, buckets=buckets, turn_default=turn_default)
