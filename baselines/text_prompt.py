"""`text-prompt`: no training; the persona goes into a textual prompt.

The prompt is the model's chat template when its tokenizer has one (system message = persona,
history as alternating user/assistant turns, see spt_bench.data.formatting), else the SPT
authors' template; `template="authors"` forces the latter. With `shots=k`, k examples drawn
from the train split (seeded, fixed for the whole run) are shown before each input as
demonstrations (their last two history turns and their reply).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spt_bench.config import setting
from spt_bench.errors import ConfigError
from spt_bench.methods import Method, PrefixOutput, register_method

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from spt_bench.batches import GenBatch, TrainBatch
    from spt_bench.data.example import Example
    from spt_bench.data.formatting import PromptFormatter


@dataclass
class TextPromptOptions:
    shots: int = setting(0, "k-shot: training examples shown before the input (0: none)")
    template: str = setting(
        "chat",
        "prompt template: chat (the model's chat template) | authors (the SPT code's plain text)",
    )

    def __post_init__(self) -> None:
        if self.shots < 0:
            raise ConfigError(f"--shots must be >= 0, got {self.shots}")
        if self.template not in ("chat", "authors"):
            raise ConfigError(
                f"text-prompt template must be chat or authors, got {self.template!r}"
            )


@register_method
class TextPrompt(Method):
    name = "text-prompt"
    description = "No training: persona in a text prompt (chat template if any), optional k-shot."
    trains = False
    template = "chat"
    Options = TextPromptOptions
    option_labels = {"shots": "shots"}
    compare_note = (
        "text-prompt answers in the chat model's cased, untokenised style while ConvAI2 "
        "references are lowercase and tokenised ('i am .'): F1 raw counts every case or "
        "punctuation difference as a miss, so F1 raw and AVG (which uses it) understate "
        "text-prompt; the normalised F1 does not."
    )

    def __init__(self, backbone: Any, options: TextPromptOptions | None = None) -> None:
        super().__init__(backbone, options)
        self.shot_examples: list[Example] = []

    @classmethod
    def uses_train_data(cls, options: Any) -> bool:
        return options.shots > 0  # the k shots come from the train split

    def setup(self, train_examples: list[Example], *, seed: int = 0, formatter: Any = None) -> None:
        k = self.options.shots
        if k == 0:
            return
        if len(train_examples) < k:
            raise ConfigError(
                f"--shots {k} needs at least {k} train examples, the train split has "
                f"{len(train_examples)}"
            )
        rng = random.Random(seed)
        self.shot_examples = rng.sample(list(train_examples), k)

    def build_formatter(self, **formatter_kwargs: Any) -> PromptFormatter:
        from spt_bench.data.formatting import PromptFormatter

        return PromptFormatter(
            self.backbone.tokenizer,
            template=self.options.template,
            shots=self.shot_examples,
            **formatter_kwargs,
        )

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return []

    def training_loss(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, float]]:
        raise RuntimeError("text-prompt does not train")

    def prefix_embeds(self, batch: GenBatch) -> PrefixOutput:
        return PrefixOutput(embeds=None, row_info=[{} for _ in range(len(batch))])

    def trained_state(self) -> dict[str, torch.Tensor]:
        return {}

    def load_trained_state(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise ValueError("text-prompt has no trained state")

    def summary(self) -> dict:
        out = super().summary()
        out["shot_ids"] = [ex.id for ex in self.shot_examples]
        return out
