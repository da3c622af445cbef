"""Persona consistency C-score with a natural-language-inference model (Madotto et al., 2019).

For a response u and the speaker's persona sentences p_1..p_m, NLI(u, p_j) is +1 when the model
says u (premise) entails p_j (hypothesis), 0 for neutral and -1 for contradiction, and
C(u) = sum_j NLI(u, p_j). Per example we also keep whether any persona sentence is entailed or
contradicted (the corpus entailment and contradiction rates are their means). The NLI model is
the user's choice (any Hugging Face sequence-classification folder or hub id); its labels are
read from config.id2label. No NLI model ships with spt-bench and none can be downloaded
offline, so asking for the C-score without one fails with how to get one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spt_bench.errors import ConfigError, MissingAssetError
from spt_bench.metrics.score_cache import ScoreCache, content_key

LABEL_VALUES = {"entailment": 1, "neutral": 0, "contradiction": -1}
CONVENTION = (
    "C(u) = sum over persona sentences p_j of NLI(u, p_j), premise = response u, hypothesis = "
    "p_j; entailment +1, neutral 0, contradiction -1 (Madotto et al. 2019)"
)
SUGGESTED = "cross-encoder/nli-deberta-v3-xsmall"
INSTALL_HINT = (
    f"download an NLI model where the Hugging Face hub is reachable, e.g. `hf download "
    f"{SUGGESTED} --local-dir models/nli-xsmall` (Apache-2.0; docs/metrics.md lists others), "
    "and pass --nli-model models/nli-xsmall"
)


@dataclass(frozen=True)
class NliOptions:
    """model: local folder or hub id (None: refused with how to get one)."""

    model: str | None
    batch_size: int = 16
    device: str | None = None
    max_length: int = 256


def label_values(id2label: dict[Any, str], model: str = "the NLI model") -> list[int]:
    """+1/0/-1 per class index from config.id2label (any order, any case); a model whose labels
    are not exactly entailment/neutral/contradiction is refused, naming them."""
    labels = {int(i): str(name) for i, name in id2label.items()}
    names = [labels[i].strip().lower() for i in sorted(labels)]
    if sorted(labels) != list(range(len(labels))) or sorted(names) != sorted(LABEL_VALUES):
        shown = ", ".join(f"{i}={labels[i]}" for i in sorted(labels))
        raise ConfigError(
            f"NLI model {model}: labels ({shown}) do not map to entailment/neutral/contradiction; "
            "fix id2label in its config.json or choose another model"
        )
    return [LABEL_VALUES[n] for n in names]


def _model_fingerprint(name: str) -> str | None:
    from spt_bench.inputs import tree_sha256

    path = Path(name).expanduser()
    return tree_sha256(path, quick_large=True) if path.is_dir() else None


@dataclass
class NliScorer:
    """A loaded NLI classifier with its label values; `score` caches per example."""

    options: NliOptions
    fingerprint: str | None
    _loaded: Any = field(default=None, repr=False)
    pairs_classified: int = 0

    @classmethod
    def create(cls, options: NliOptions) -> NliScorer:
        if not options.model:
            raise MissingAssetError(f"the NLI C-score needs --nli-model: {INSTALL_HINT}")
        name = options.model
        local = Path(name).expanduser()
        if local.exists() and not (local / "config.json").is_file():
            raise MissingAssetError(f"NLI model {name!r}: no config.json in that folder")
        if not local.exists() and ("/" not in name or name.startswith((".", "/", "~"))):
            raise MissingAssetError(f"NLI model {name!r} not found: {INSTALL_HINT}")
        return cls(options, _model_fingerprint(name))

    def describe(self) -> dict:
        return {
            "kind": "nli",
            "model": self.options.model,
            "fingerprint": self.fingerprint,
            "convention": CONVENTION,
        }

    def _load(self) -> Any:
        if self._loaded is None:
            self._loaded = _load_classifier(self.options)
        return self._loaded

    def classify(self, premises: Sequence[str], hypotheses: Sequence[str]) -> list[int]:
        """+1/0/-1 per pair; pairs are batched by length (longest first)."""
        import torch

        from spt_bench.batches import length_sorted_batches

        if not premises:  # e.g. a chunk of examples whose personas are all empty
            return []
        model, tokenizer, values, device = self._load()
        enc = tokenizer(
            list(premises), list(hypotheses), truncation=True, max_length=self.options.max_length
        )
        lengths = [len(ids) for ids in enc["input_ids"]]
        out = [0] * len(lengths)
        for batch in length_sorted_batches(lengths, self.options.batch_size):
            features = [{k: enc[k][i] for k in enc} for i in batch]
            padded = tokenizer.pad(features, return_tensors="pt")
            with torch.inference_mode():
                logits = model(**{k: v.to(device) for k, v in padded.items()}).logits
            for i, c in zip(batch, logits.argmax(dim=-1).tolist(), strict=True):
                out[i] = values[c]
        self.pairs_classified += len(lengths)
        return out

    def score(
        self, responses: Sequence[str], personas: Sequence[Sequence[str]], cache: ScoreCache
    ) -> list[dict]:
        """Per response {c_score, entail, contradict} (cached per response + persona)."""
        instrument = self.describe()
        keys = [
            content_key(instrument, "c_score", r, list(p))
            for r, p in zip(responses, personas, strict=True)
        ]
        todo = [i for i, k in enumerate(keys) if k not in cache]
        step = max(1, self.options.batch_size * 8)  # cache once per chunk of examples
        for start in range(0, len(todo), step):
            chunk = todo[start : start + step]
            prem = [responses[i] for i in chunk for _ in personas[i]]
            hyp = [s for i in chunk for s in personas[i]]
            labels = iter(self.classify(prem, hyp))
            entries = {}
            for i in chunk:
                got = [next(labels) for _ in personas[i]]
                entries[keys[i]] = {"c": sum(got), "e": int(1 in got), "x": int(-1 in got)}
            cache.add(entries)
        return [cache.get(k) for k in keys]


def _load_classifier(options: NliOptions) -> tuple[Any, Any, list[int], Any]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    name = str(options.model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForSequenceClassification.from_pretrained(name, trust_remote_code=False)
    except (OSError, ValueError) as e:
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise MissingAssetError(
            f"cannot load NLI model {name!r} ({reason}); model hubs may be unreachable: "
            f"{INSTALL_HINT}"
        ) from None
    values = label_values(model.config.id2label, repr(name))
    device = torch.device(options.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device).eval()
    return model, tokenizer, values, device
