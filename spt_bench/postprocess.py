"""Post-processing of generated text: the cleaned response, and when decoding a row can stop.

- `clean_response` (rule "default"): the text (decoded without special tokens) is cut at the
  first newline, cut where the model starts another turn (" Q:", " R:", "<|im_start|>",
  "User:"...), and loses a leading role marker ("R:", "assistant", "A:"...) and surrounding
  whitespace. `clean="authors"` (config key `clean`, `--clean authors`) applies the SPT authors'
  rule instead, for exact reproduction only: cut at the first match of `R:|Q:|Summary:|\n|:`
  (any colon: "6:30" -> "6", " R: hello" -> ""), then strip.
- `turn_ended`: the decoder (`spt_bench.decode`) stops a row once its text has started another
  turn where the default rule cuts anyway. Every stop rule of the decoder (EOS, a newline, a
  turn) fixes the cleaned text under both rules (a turn stop needs a colon in the text), so
  both rules can be applied to the same `raw_prediction`.
"""

from __future__ import annotations

import re

from spt_bench.config import CLEAN_RULES
from spt_bench.errors import ConfigError

_LEADING_MARKER = re.compile(
    r"^\s*(?:<\|im_start\|>\s*)?(?:assistant|R|A|Bot|Assistant|Response|Me|You)\s*:\s*",
    re.IGNORECASE,
)
_LEADING_ROLE_LINE = re.compile(r"^\s*(?:<\|im_start\|>)?\s*assistant\s*\n", re.IGNORECASE)
_NEXT_TURN = re.compile(
    r"(?:\s(?:Q|R)\s*:|<\|im_start\|>|<\|im_end\|>|\b(?:User|Partner|Human)\s*:|given persona:)"
)


def turn_ended(text: str) -> bool:
    """True once a response being generated holds the start of another turn where
    `clean_response` cuts it: text generated after this point cannot change the cleaned
    response (the cut is the leftmost match, and every marker ends with ':' already present),
    so decoding the row can stop. Untrained SmolLM2 rows on ConvAI2 continue the dialogue
    (" ... Q: what do you do ? R: ...") and stop ~25% earlier this way."""
    head = _LEADING_ROLE_LINE.sub("", text).lstrip().split("\n", 1)[0]
    return _NEXT_TURN.search(_LEADING_MARKER.sub("", head)) is not None


# the authors' post-processing: re.split on this pattern, first piece (any colon cuts)
_AUTHORS_CUT = re.compile(r"R:|Q:|Summary:|\n|:")


def clean_response(text: str, rule: str = "default") -> str:
    """Post-process one generated response by `rule` (CLEAN_RULES; see module doc); idempotent."""
    if rule == "authors":
        return _AUTHORS_CUT.split(text, maxsplit=1)[0].strip()
    if rule != "default":
        raise ConfigError(f"clean rule must be one of {', '.join(CLEAN_RULES)}, got {rule!r}")
    text = _LEADING_ROLE_LINE.sub("", text)
    text = text.lstrip()
    text = text.split("\n", 1)[0]
    text = _LEADING_MARKER.sub("", text)
    m = _NEXT_TURN.search(text)
    if m:
        text = text[: m.start()]
    return text.strip()
