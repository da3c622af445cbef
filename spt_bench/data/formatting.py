"""Model inputs from examples: prompt templates, history truncation, labels, collators.

Two templates, shared by all methods:

- ``authors`` (the SPT authors' format; soft-prompt, fine-tuning and LoRA methods)::

      given persona: <p1> <p2> ...; context: Q: <partner> R: <self> ... Q: <partner> R:

  followed by `` <response><eos>``. Roles are assigned from the end: the last history utterance
  is the partner's (Q), the one before it the responder's own (R), and so on.
- ``chat`` (text prompting of instruct models): the tokenizer's chat template with a system
  message holding the persona (`CHAT_SYSTEM_PROMPT`), the history as alternating user /
  assistant turns ending with the partner's (user) turn, and the generation prompt; the response
  is ``<response><eos>``. A tokenizer without a chat template gets the authors' template
  instead; `PromptFormatter.template_used` records which one was applied.

Truncation: the prompt is kept within `max_input_tokens` by dropping the oldest history turns
first (persona always kept); `max_history_turns` caps the turns kept. If the persona plus the
last turn alone are too long, the history is cut from its left at token level. Responses longer
than `max_response_tokens` are cut (and then carry no EOS: they did not end there).

Labels are -100 everywhere except the response tokens and the EOS. Collators pad dynamically
(to the longest row): right for training, left for generation - never to a fixed length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from spt_bench.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from spt_bench.batches import GenBatch, TrainBatch
    from spt_bench.data.example import Example

TEMPLATES = ("authors", "chat")
IGNORE_INDEX = -100
CHAT_SYSTEM_PROMPT = (
    "You are the person described here: {persona}\n"
    "Stay in character and reply to your chat partner with one short message."
)
CHAT_SHOTS_HEADER = "\n\nExample exchanges from other conversations:\n"
SHOT_HISTORY_TURNS = 2  # k-shot demonstrations keep only their last turns, to stay short


@dataclass
class EncodedExample:
    """Token ids for one training example: prompt + response + EOS, with response labels."""

    input_ids: list[int]
    labels: list[int]
    prompt_len: int
    example: Example | None = field(default=None, repr=False)


class PromptFormatter:
    """Turns Examples into token ids with a fixed template (see module doc)."""

    def __init__(
        self,
        tokenizer: Any,
        template: str = "authors",
        max_input_tokens: int = 448,
        max_history_turns: int | None = None,
        max_response_tokens: int = 64,
        shots: list[Example] | tuple[Example, ...] = (),
    ) -> None:
        if template not in TEMPLATES:
            raise ConfigError(
                f"unknown template {template!r}; choose one of {', '.join(TEMPLATES)}"
            )
        if max_input_tokens < 8 or max_response_tokens < 1:
            raise ConfigError("max_input_tokens must be >= 8 and max_response_tokens >= 1")
        if max_history_turns is not None and max_history_turns < 1:
            raise ConfigError("max_history_turns must be >= 1")
        self.tokenizer = tokenizer
        self.template = template
        has_chat = bool(getattr(tokenizer, "chat_template", None))
        self.template_used = "chat" if template == "chat" and has_chat else "authors"
        self.max_input_tokens = max_input_tokens
        self.max_history_turns = max_history_turns
        self.max_response_tokens = max_response_tokens
        self.shots = tuple(shots)
        if tokenizer.eos_token_id is None:
            raise ConfigError("the tokenizer has no EOS token")
        self.eos_id = int(tokenizer.eos_token_id)
        self._encode = lru_cache(maxsize=65536)(self._encode_uncached)
        self._bos = self._bos_ids()
        self._shots_text = self._render_shots()

    # ---- tokenisation helpers

    def _encode_uncached(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _bos_ids(self) -> tuple[int, ...]:
        """BOS ids the tokenizer adds on its own (none for SmolLM2), kept for the authors' format."""
        with_special = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        without = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        n = len(with_special) - len(without)
        if n > 0 and with_special[n:] == without:
            return tuple(with_special[:n])
        return ()

    # ---- text pieces

    @staticmethod
    def roles(n_turns: int) -> list[str]:
        """Q/R role of each history utterance, counted from the last one (the partner's: Q)."""
        return ["Q" if (n_turns - 1 - i) % 2 == 0 else "R" for i in range(n_turns)]

    def _authors_head(self, persona: tuple[str, ...]) -> str:
        return "given persona: " + " ".join(p.strip() for p in persona) + "; context:"

    def _authors_turns(self, history: tuple[str, ...]) -> list[str]:
        return [
            f" {r}: {u.strip()}" for r, u in zip(self.roles(len(history)), history, strict=True)
        ]

    def _render_shots(self) -> str:
        if not self.shots:
            return ""
        lines = []
        for ex in self.shots:
            hist = ex.history[-SHOT_HISTORY_TURNS:]
            text = self._authors_head(ex.persona) + "".join(self._authors_turns(hist))
            lines.append(text + " R: " + ex.response.strip())
        return "\n".join(lines)

    # ---- prompts

    def _kept_history(self, history: tuple[str, ...]) -> tuple[str, ...]:
        if self.max_history_turns is not None:
            history = history[-self.max_history_turns :]
        return history

    def prompt_ids(self, example: Example) -> list[int]:
        """Persona + history, ending exactly where the response starts."""
        history = self._kept_history(tuple(example.history))
        if self.template_used == "chat":
            return self._chat_prompt_ids(example.persona, history)
        return self._authors_prompt_ids(example.persona, history)

    def _authors_prompt_ids(self, persona: tuple[str, ...], history: tuple[str, ...]) -> list[int]:
        head_text = (self._shots_text + "\n" if self._shots_text else "") + self._authors_head(
            persona
        )
        head = list(self._bos) + list(self._encode(head_text))
        tail = list(self._encode(" R:"))
        turns = [self._encode(t) for t in self._authors_turns(history)]
        budget = self.max_input_tokens - len(head) - len(tail)
        if budget < 0:
            raise ConfigError(
                f"max_input_tokens={self.max_input_tokens} cannot hold the persona "
                f"({len(head) + len(tail)} tokens); raise it"
            )
        kept: list[int] = []
        used = 0
        for ids in reversed(turns):  # newest first; stop at the first turn that does not fit
            if used + len(ids) > budget:
                if not kept:  # even the last turn alone is too long: keep its tail
                    kept = list(ids[len(ids) - budget :]) if budget else []
                break
            kept = list(ids) + kept
            used += len(ids)
        return head + kept + tail

    def _render_chat(self, persona: tuple[str, ...], history: tuple[str, ...]) -> list[int]:
        system = CHAT_SYSTEM_PROMPT.format(persona=" ".join(p.strip() for p in persona))
        if self._shots_text:
            system += CHAT_SHOTS_HEADER + self._shots_text
        messages = [{"role": "system", "content": system}]
        roles = self.roles(len(history))
        for role, utt in zip(roles, history, strict=True):
            messages.append(
                {"role": "user" if role == "Q" else "assistant", "content": utt.strip()}
            )
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _chat_prompt_ids(self, persona: tuple[str, ...], history: tuple[str, ...]) -> list[int]:
        ids = self._render_chat(persona, history)
        if len(ids) <= self.max_input_tokens:
            return ids
        # Drop oldest turns until it fits; a binary search keeps this to log(turns) renders.
        lo, hi = 1, len(history)  # number of turns dropped
        best = None
        while lo <= hi:
            mid = (lo + hi) // 2
            cand = self._render_chat(persona, history[mid:])
            if len(cand) <= self.max_input_tokens:
                best, hi = cand, mid - 1
            else:
                lo = mid + 1
        if best is not None and len(history) - (hi + 1) >= 1:
            return best
        raise ConfigError(
            f"max_input_tokens={self.max_input_tokens} cannot hold the chat prompt with the "
            f"persona and the last turn ({len(self._render_chat(persona, history[-1:]))} tokens)"
        )

    # ---- responses and training rows

    def response_ids(self, example: Example) -> list[int]:
        """Response tokens + EOS (cut to max_response_tokens, without EOS when cut)."""
        text = example.response.strip()
        ids = list(self._encode(" " + text if self.template_used == "authors" else text))
        if len(ids) + 1 > self.max_response_tokens:
            return ids[: self.max_response_tokens]
        return ids + [self.eos_id]

    def encode_train(self, example: Example) -> EncodedExample:
        prompt = self.prompt_ids(example)
        response = self.response_ids(example)
        return EncodedExample(
            input_ids=prompt + response,
            labels=[IGNORE_INDEX] * len(prompt) + response,
            prompt_len=len(prompt),
            example=example,
        )

    def prompt_text(self, example: Example) -> str:
        """The prompt as text (for reports and debugging)."""
        return self.tokenizer.decode(self.prompt_ids(example))


def collate_train(encoded: list[EncodedExample], pad_id: int) -> TrainBatch:
    """Right-pad encoded rows to the longest one (labels -100 and mask 0 on padding)."""
    import torch

    from spt_bench.batches import TrainBatch

    if not encoded:
        raise ValueError("cannot collate an empty batch")
    width = max(len(e.input_ids) for e in encoded)
    n = len(encoded)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    prompt_mask = torch.zeros((n, width), dtype=torch.long)
    for i, e in enumerate(encoded):
        t = len(e.input_ids)
        input_ids[i, :t] = torch.tensor(e.input_ids, dtype=torch.long)
        labels[i, :t] = torch.tensor(e.labels, dtype=torch.long)
        mask[i, :t] = 1
        prompt_mask[i, : e.prompt_len] = 1
    examples = [e.example for e in encoded if e.example is not None]
    return TrainBatch(
        input_ids=input_ids,
        attention_mask=mask,
        labels=labels,
        prompt_mask=prompt_mask,
        examples=examples if len(examples) == n else [],
    )


def collate_generate(
    prompt_id_lists: list[list[int]], pad_id: int, examples: list[Example] | None = None
) -> GenBatch:
    """Left-pad prompts to the longest one, so every row's next token is at the last column."""
    import torch

    from spt_bench.batches import GenBatch

    if not prompt_id_lists:
        raise ValueError("cannot collate an empty batch")
    width = max(len(p) for p in prompt_id_lists)
    n = len(prompt_id_lists)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, p in enumerate(prompt_id_lists):
        if p:
            input_ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
    return GenBatch(input_ids=input_ids, attention_mask=mask, examples=list(examples or []))


def collate_dev(formatter: Any, examples: list, batch_size: int, pad_id: int) -> list:
    """Dev examples encoded for the loss, collated in longest-first batches."""
    from spt_bench.batches import length_sorted_batches

    encoded = [formatter.encode_train(ex) for ex in examples]
    batches = length_sorted_batches([len(e.input_ids) for e in encoded], batch_size)
    return [collate_train([encoded[i] for i in batch], pad_id) for batch in batches]
