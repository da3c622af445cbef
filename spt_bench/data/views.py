"""Responder views of a two-speaker conversation: the core shared by the Synthetic-Persona-Chat
and MSC readers.

A conversation with two persona'd speakers gives two views, one per responder: speaker k's view
has one Example per utterance of speaker k, with speaker k's persona, the other speaker's as
`partner_persona`, and every utterance before it (oldest first) as history, exactly as a ConvAI2
dialogue is built from the responder's side (spt_bench/data/parlai.py). The view's dialogue id is
`<conversation id>:<label><k>` (e.g. `train:12:user2`) and its turns count from 0. A speaker who
opens the conversation gets a first example with an empty history (ConvAI2's `__SILENCE__`
opening). Consecutive utterances of one speaker are joined with a space into one turn, so the
history alternates between the speakers and the formatter's roles (counted from the last, the
partner's) stay right.

Earlier context (MSC's previous sessions) goes before the conversation's own utterances in every
history; where it ends with the responder's own utterance at an example the responder opens, that
example's history stops at the partner's last utterance (the formatter reads the last history
utterance as the partner's).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from spt_bench.data.example import Example

SPEAKERS = (1, 2)


@dataclass(frozen=True)
class Conversation:
    """A two-speaker conversation: `turns` are (speaker 1 or 2, text) in order."""

    dialog_id: str
    personas: tuple[tuple[str, ...], tuple[str, ...]]  # speaker 1's, speaker 2's
    turns: tuple[tuple[int, str], ...]
    earlier: tuple[tuple[int, str], ...] = ()
    meta: dict = field(default_factory=dict)


def merge_runs(turns: Sequence[tuple[int, str]]) -> list[tuple[int, str]]:
    """Consecutive utterances of one speaker joined with a space (one turn per speaker change)."""
    out: list[tuple[int, str]] = []
    for speaker, text in turns:
        if out and out[-1][0] == speaker:
            out[-1] = (speaker, f"{out[-1][1]} {text}")
        else:
            out.append((speaker, text))
    return out


def _history(before: list[tuple[int, str]], responder: int) -> tuple[str, ...]:
    """The history of a response: alternating turns ending with the partner's (or empty)."""
    merged = merge_runs(before)
    if merged and merged[-1][0] == responder:
        merged = merged[:-1]
    return tuple(text for _, text in merged)


def view_examples(conv: Conversation, responder: int, label: str) -> list[Example]:
    """Speaker `responder`'s view (1 or 2): one Example per turn of that speaker."""
    turns = merge_runs(conv.turns)
    earlier = list(conv.earlier)
    persona = conv.personas[responder - 1]
    partner = conv.personas[2 - responder]
    dialog_id = f"{conv.dialog_id}:{label}{responder}"
    examples: list[Example] = []
    for i, (speaker, text) in enumerate(turns):
        if speaker != responder:
            continue
        examples.append(
            Example(
                dialog_id=dialog_id,
                turn=len(examples),
                persona=persona,
                history=_history(earlier + turns[:i], responder),
                response=text,
                partner_persona=partner,
                meta=dict(conv.meta),
            )
        )
    return examples


def conversation_examples(conv: Conversation, label: str) -> list[Example]:
    """Both views of a conversation: speaker 1's examples, then speaker 2's."""
    return [ex for k in SPEAKERS for ex in view_examples(conv, k, label)]
