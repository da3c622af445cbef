"""A tiny NLI classifier whose weights decide its label from marker tokens (tests only).

Vocabulary: BERT specials, plain words, keys k1..k9 and "not". The model sums, per segment
(token_type_ids: 0 = premise, 1 = hypothesis), one-hot key vectors: p and h. Logits:
entailment = 10 * (p . h) (a key shared by premise and hypothesis), contradiction = 20 * count of
"not" in the premise, neutral = 1. So: premise "not ..." -> contradiction; a shared key ->
entailment; otherwise neutral. Saved with save_pretrained (safetensors) like any HF model; the
class is registered with transformers' Auto classes in-process (no remote code).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    BertTokenizer,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import SequenceClassifierOutput

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["i", "like", "have", "a", "my", "is", "red", "and", "hello", "love", "dog", "."]
KEYS = [f"k{i}" for i in range(1, 10)]
VOCAB = SPECIALS + WORDS + KEYS + ["not"]
DEFAULT_LABELS = {0: "entailment", 1: "neutral", 2: "contradiction"}


class MarkerNliConfig(PretrainedConfig):
    model_type = "spt-test-marker-nli"

    def __init__(self, vocab_size: int = len(VOCAB), **kwargs) -> None:
        super().__init__(**kwargs)
        self.vocab_size = vocab_size


class MarkerNliModel(PreTrainedModel):
    config_class = MarkerNliConfig
    base_model_prefix = "marker"

    def __init__(self, config: MarkerNliConfig) -> None:
        super().__init__(config)
        self.keys = torch.nn.Embedding(config.vocab_size, len(KEYS))
        self.negation = torch.nn.Embedding(config.vocab_size, 1)
        self.label_index = torch.nn.Parameter(torch.zeros(3), requires_grad=False)
        self.post_init()

    def _init_weights(self, module) -> None:  # weights are set by build_marker_nli
        pass

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **_):
        mask = attention_mask.float() if attention_mask is not None else torch.ones_like(input_ids)
        seg = token_type_ids.float() if token_type_ids is not None else torch.zeros_like(mask)
        k = self.keys(input_ids) * mask[..., None]
        p = (k * (1 - seg)[..., None]).sum(1)
        h = (k * seg[..., None]).sum(1)
        entail = 10.0 * (p * h).sum(-1)
        contra = 20.0 * (self.negation(input_ids)[..., 0] * mask * (1 - seg)).sum(1)
        by_name = {
            "entailment": entail,
            "neutral": torch.ones_like(entail),
            "contradiction": contra,
        }
        names = [self.config.id2label[i].lower() for i in range(3)]
        logits = torch.stack([by_name.get(n, torch.zeros_like(entail)) for n in names], dim=-1)
        return SequenceClassifierOutput(logits=logits)


def _register() -> None:
    try:
        AutoConfig.register(MarkerNliConfig.model_type, MarkerNliConfig)
        AutoModelForSequenceClassification.register(MarkerNliConfig, MarkerNliModel)
    except ValueError:  # already registered in this process
        pass


def build_marker_nli(folder: Path, id2label: dict[int, str] | None = None) -> Path:
    """Save the marker classifier and its tokenizer to `folder`; returns it."""
    _register()
    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    BertTokenizer(str(vocab), do_lower_case=True).save_pretrained(str(folder))
    labels = id2label or DEFAULT_LABELS
    config = MarkerNliConfig(id2label=labels, label2id={v: k for k, v in labels.items()})
    model = MarkerNliModel(config)
    with torch.no_grad():
        model.keys.weight.zero_()
        model.negation.weight.zero_()
        for j, key in enumerate(KEYS):
            model.keys.weight[VOCAB.index(key), j] = 1.0
        model.negation.weight[VOCAB.index("not"), 0] = 1.0
    model.save_pretrained(str(folder))
    return folder
