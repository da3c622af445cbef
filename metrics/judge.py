"""LLM judge: a causal LM rates each response 1..5 on fixed rubrics; the score is G-Eval's
probability-weighted mean sum_s s * p(s), p = softmax over the logits of the score tokens
"1".."5" at the answer position (Liu et al., 2023). Deterministic: no sampling.

Criteria (docs/metrics.md): persona consistency (the persona-chat human-evaluation criterion,
Zhang et al. 2018; Madotto et al. 2019) and coherence (G-Eval's Topical-Chat criterion: does the
response continue the conversation). Engines: hf (here) and vllm (metrics.judge_vllm, same
prompts and estimator). The rubric texts are part of the cache key and of the
scoring record (their sha256), so a changed rubric recomputes the scores.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from spt_bench.errors import ConfigError
from spt_bench.metrics.score_cache import ScoreCache, content_key

SCORES = (1, 2, 3, 4, 5)
RUBRICS: dict[str, str] = {
    "consistency": (
        "You will rate one response of a speaker in a chat. The speaker has the persona "
        "below. Persona consistency (1-5): does the response agree with the persona? "
        "5 = it states or clearly fits facts of the persona; 3 = it neither uses nor "
        "contradicts the persona; 1 = it contradicts the persona."
    ),
    "coherence": (
        "You will rate one response of a speaker in a chat. Coherence (1-5): is the "
        "response a sensible continuation of the conversation so far? 5 = it follows "
        "naturally from the last message; 3 = loosely related; 1 = unrelated or nonsensical."
    ),
}
PROMPT_VERSION = "judge-prompt-v1"  # the layout below; part of every cache key
ALIASES = {"smollm2": "smollm2-135m"}


def metric_name(criterion: str) -> str:
    return f"judge_{criterion}"


def rubric_sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def judge_prompt(rubric: str, persona: Sequence[str], history: Sequence[str], response: str) -> str:
    """The user message: rubric, persona, the conversation (last message = the partner's),
    the response, and the answer format."""
    lines = [rubric, "", "Persona of the speaker:"]
    lines += [f"- {p}" for p in persona] or ["- (none given)"]
    lines += ["", "Conversation so far:"]
    n = len(history)
    lines += [f"{'Partner' if (n - k) % 2 else 'Speaker'}: {h}" for k, h in enumerate(history)]
    if not history:
        lines.append("(the response opens the conversation)")
    lines += ["", f"Response of the speaker: {response}", "", "Answer with one digit, 1 to 5."]
    return "\n".join(lines)


@dataclass(frozen=True)
class JudgeOptions:
    """model: built-in name or local causal-LM folder; rubrics: None = RUBRICS."""

    model: str
    engine: str = "hf"
    batch_size: int = 8
    device: str | None = None
    rubrics: tuple[tuple[str, str], ...] | None = None

    def rubric_map(self) -> dict[str, str]:
        return dict(self.rubrics) if self.rubrics is not None else dict(RUBRICS)


@dataclass
class JudgeScorer:
    options: JudgeOptions
    model_info: dict
    _backbone: Any = field(default=None, repr=False)
    _score_ids: list[int] | None = field(default=None, repr=False)
    responses_judged: int = 0

    @classmethod
    def create(cls, options: JudgeOptions) -> JudgeScorer:
        from spt_bench.inputs import describe_model
        from spt_bench.models import check_model_name

        if options.engine not in ("hf", "vllm"):
            raise ConfigError(f"judge engine {options.engine!r} is not supported; use hf or vllm")
        name = ALIASES.get(options.model, options.model)
        check_model_name(name)
        if options.engine == "vllm":
            from spt_bench.metrics.judge_vllm import judge_model_folder
            from spt_bench.vllm_engine import require_vllm

            require_vllm()
            judge_model_folder(name)  # an in-memory model or a hub id is refused here
        options = JudgeOptions(name, options.engine, options.batch_size, options.device,
                               options.rubrics)  # fmt: skip
        return cls(options, describe_model(name))

    def describe(self) -> dict:
        return {
            "kind": "judge",
            "model": self.options.model,
            "fingerprint": self.model_info.get("fingerprint"),
            "engine": self.options.engine,
            "prompt": PROMPT_VERSION,
            "estimator": "G-Eval: sum_s s * softmax(logits of score tokens 1..5)",
            "rubric_sha256": {c: rubric_sha(t) for c, t in self.options.rubric_map().items()},
        }

    def _load(self) -> tuple[Any, list[int]]:
        if self._backbone is None:
            from spt_bench.models import load_backbone

            self._backbone = load_backbone(self.options.model, device=self.options.device)
            self._score_ids = score_token_ids(self._backbone.tokenizer)
        assert self._score_ids is not None
        return self._backbone, self._score_ids

    def close(self) -> None:
        """Stop the vllm engine, if this judge started one."""
        if self.options.engine == "vllm":
            from spt_bench.metrics.judge_vllm import shutdown_judge_engine

            shutdown_judge_engine()

    def prompt_ids(self, user_text: str) -> list[int]:
        """Token ids up to the answer position (chat template when the tokenizer has one)."""
        backbone, _ = self._load()
        return chat_prompt_ids(backbone.tokenizer, user_text)

    def expected_scores(self, prompts: Sequence[list[int]]) -> list[float]:
        """G-Eval score of each prompt (left-padded batches, positions from the mask)."""
        import torch

        from spt_bench.batches import length_sorted_batches

        backbone, ids = self._load()
        if self.options.engine == "vllm":
            from spt_bench.metrics.judge_vllm import vllm_expected_scores

            self.responses_judged += len(prompts)
            return vllm_expected_scores(self.options.model, prompts, ids)
        pad = backbone.pad_token_id
        out = [0.0] * len(prompts)
        weights = torch.tensor(SCORES, dtype=torch.float64)
        for batch in length_sorted_batches([len(p) for p in prompts], self.options.batch_size):
            width = max(len(prompts[i]) for i in batch)
            x = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, i in enumerate(batch):
                x[r, width - len(prompts[i]) :] = torch.tensor(prompts[i])
                mask[r, width - len(prompts[i]) :] = 1
            pos = (mask.cumsum(dim=1) - 1).clamp(min=0)
            with torch.inference_mode():
                logits = backbone.model(
                    input_ids=x.to(backbone.device),
                    attention_mask=mask.to(backbone.device),
                    position_ids=pos.to(backbone.device),
                    logits_to_keep=1,  # the answer position only, not [B, T, vocab]
                ).logits[:, -1, :]
            probs = torch.softmax(logits[:, ids].double().cpu(), dim=-1)
            for r, i in enumerate(batch):
                out[i] = float(probs[r] @ weights)
        self.responses_judged += len(prompts)
        return out

    def score(
        self,
        criterion: str,
        items: Sequence[tuple[Sequence[str], Sequence[str], str]],
        cache: ScoreCache,
    ) -> list[float]:
        """Judge score per (persona, history, response), cached per example and rubric."""
        rubric = self.options.rubric_map()[criterion]
        head = {k: v for k, v in self.describe().items() if k != "rubric_sha256"}
        keys = [
            content_key(head, rubric_sha(rubric), criterion, list(p), list(h), r)
            for p, h, r in items
        ]
        todo = [i for i, k in enumerate(keys) if k not in cache]
        step = max(1, self.options.batch_size * 4)
        for start in range(0, len(todo), step):
            chunk = todo[start : start + step]
            prompts = [self.prompt_ids(judge_prompt(rubric, *items[i])) for i in chunk]
            values = self.expected_scores(prompts)
            cache.add({keys[i]: v for i, v in zip(chunk, values, strict=True)})
        return [float(cache.get(k)) for k in keys]


def score_token_ids(tokenizer: Any) -> list[int]:
    """The single token of each score digit; a tokenizer that splits a digit is refused."""
    ids = []
    for s in SCORES:
        got = tokenizer.encode(str(s), add_special_tokens=False)
        if len(got) != 1:
            raise ConfigError(f"judge tokenizer encodes score {s} as {len(got)} tokens, not one")
        ids.append(int(got[0]))
    return ids


def chat_prompt_ids(tokenizer: Any, user_text: str) -> list[int]:
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": user_text}], add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return [int(t) for t in ids]
    return [int(t) for t in tokenizer.encode(user_text + "\nScore: ", add_special_tokens=True)]
