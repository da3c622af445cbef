"""Speed of the model-based instruments (docs/metrics.md "Persona consistency"):

- NLI C-score: (response, persona sentence) pairs/s through `NliScorer.classify` (tokenised once,
  length-sorted batches) with a DeBERTa-v3-xsmall-shaped classifier of random weights (a model's
  speed does not depend on its weights; no NLI model can be downloaded here). Pairs: the gold
  responses of the data against their persona sentences; tokens from the benchmarked model's
  tokenizer, laid out as [CLS] premise [SEP] hypothesis [SEP].
- LLM judge: responses/s of one rubric through `JudgeScorer` on the benchmarked (loaded) model.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from spt_bench.bench.settings import BenchSettings
    from spt_bench.data.example import Example
    from spt_bench.models import Backbone


def deberta_v3_xsmall_shaped() -> Any:
    """cross-encoder/nli-deberta-v3-xsmall's architecture (its config.json), random weights."""
    import torch
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    config = DebertaV2Config(
        hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
        vocab_size=128100, max_position_embeddings=512, relative_attention=True,
        position_buckets=256, pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm",
        share_att_key=True, position_biased_input=False, type_vocab_size=0, num_labels=3,
        id2label={0: "contradiction", 1: "entailment", 2: "neutral"}, pad_token_id=0,
    )  # fmt: skip
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        return DebertaV2ForSequenceClassification(config).eval()
    finally:
        torch.random.set_rng_state(state)


class _PairTokenizer:
    """[CLS] premise [SEP] hypothesis [SEP] from another tokenizer's ids (timing only)."""

    CLS, SEP, PAD = 1, 2, 0

    def __init__(self, base: Any) -> None:
        self.base = base

    def __call__(self, premises, hypotheses, truncation=True, max_length=256) -> dict:
        ids = []
        for p, h in zip(premises, hypotheses, strict=True):
            a = self.base.encode(p, add_special_tokens=False)
            b = self.base.encode(h, add_special_tokens=False)
            ids.append(([self.CLS, *a, self.SEP, *b, self.SEP])[:max_length])
        return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]}

    def pad(self, features: list[dict], return_tensors: str = "pt") -> dict:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        ids = [list(f["input_ids"]) + [self.PAD] * (width - len(f["input_ids"])) for f in features]
        mask = [list(f["attention_mask"]) + [0] * (width - len(f["input_ids"])) for f in features]
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}


def bench_nli(backbone: Backbone, examples: list[Example], n_pairs: int, batch_size: int) -> dict:
    from spt_bench.metrics.nli import NliOptions, NliScorer

    pairs = [(ex.response, p) for ex in examples for p in ex.persona][:n_pairs]
    model = deberta_v3_xsmall_shaped().to(backbone.device)
    scorer = NliScorer(NliOptions("deberta-v3-xsmall-shaped", batch_size=batch_size), None)
    scorer._loaded = (model, _PairTokenizer(backbone.tokenizer), [-1, 1, 0], backbone.device)
    scorer.classify([pairs[0][0]], [pairs[0][1]])  # warm-up
    t0 = time.perf_counter()
    scorer.classify([p for p, _ in pairs], [h for _, h in pairs])
    seconds = time.perf_counter() - t0
    return {"pairs": len(pairs), "seconds": round(seconds, 3), "batch_size": batch_size,
            "pairs_per_s": len(pairs) / seconds if seconds > 0 else None,
            "model": "DeBERTa-v3-xsmall-shaped, random weights"}  # fmt: skip


def bench_judge(
    backbone: Backbone, examples: list[Example], n: int, batch_size: int, engine: str = "hf"
) -> dict:
    """Judge responses/s; vllm: the engine start (with one response) is timed apart."""
    from spt_bench.metrics.judge import JudgeOptions, JudgeScorer, score_token_ids
    from spt_bench.metrics.score_cache import ScoreCache

    items = [(ex.persona, ex.history, ex.response) for ex in examples[:n]]
    scorer = JudgeScorer(JudgeOptions(backbone.name, engine, batch_size), {})
    scorer._backbone, scorer._score_ids = backbone, score_token_ids(backbone.tokenizer)
    start = None
    if engine == "vllm":
        t0 = time.perf_counter()
        scorer.score("consistency", items[:1], ScoreCache(None))
        start, items = round(time.perf_counter() - t0, 3), items[1:]
    t0 = time.perf_counter()
    try:
        scorer.score("consistency", items, ScoreCache(None))
    finally:
        scorer.close()
    seconds = time.perf_counter() - t0
    return {"responses": len(items), "seconds": round(seconds, 3), "batch_size": batch_size,
            "responses_per_s": len(items) / seconds if seconds > 0 else None, "engine": engine,
            "engine_start_s": start, "rubric": "consistency (one criterion)"}  # fmt: skip


def bench_instruments(
    backbone: Backbone, examples: list[Example], settings: BenchSettings, say: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if settings.nli_pairs:
        say(f"NLI: {settings.nli_pairs} pairs")
        out["nli"] = bench_nli(backbone, examples, settings.nli_pairs, settings.nli_batch_size)
    if settings.judge_responses:
        say(f"judge: {settings.judge_responses} responses")
        out["judge"] = bench_judge(
            backbone, examples, settings.judge_responses, settings.judge_batch_size,
            settings.judge_engine,
        )  # fmt: skip
    return out


def render_instruments(figures: dict[str, Any], console: Any) -> None:
    if "nli" in figures:
        f = figures["nli"]
        console.print(
            f"NLI C-score ({f['model']}): {f['pairs']} pairs in {f['seconds']:.1f}s "
            f"({f['pairs_per_s']:.1f} pairs/s, batch {f['batch_size']})"
        )
    if "judge" in figures:
        f = figures["judge"]
        console.print(
            f"LLM judge ({f['rubric']}, {f.get('engine', 'hf')}): {f['responses']} responses in "
            f"{f['seconds']:.1f}s ({f['responses_per_s']:.2f} responses/s, batch "
            f"{f['batch_size']})"
            + (f"; engine start {f['engine_start_s']:.1f}s" if f.get("engine_start_s") else "")
        )
