"""ParlAI / ConvAI2 text files: read every variant into Examples, and write them back.

Format: every line is `N text`, N restarting at 1 for each dialogue. Persona lines read
`N your persona: ...` (the responder's) or `N partner's persona: ...`; dialogue lines read
`N partner<TAB>self[<TAB>reward<TAB>cand1|cand2|...]`. This covers the self/other/both/none x
original/revised variants, with and without candidates: the variant only changes which persona
lines are present. The responder is always the second speaker of a dialogue line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from spt_bench.data.example import Example
from spt_bench.errors import InputError, SptBenchError, warn
from spt_bench.io import atomic_write_text

SILENCE = "__SILENCE__"
YOUR_PERSONA = "your persona:"
PARTNER_PERSONA = "partner's persona:"


def read_text_lines(path: str | Path) -> list[str]:
    """Decode a UTF-8 text file into lines, rejecting missing, binary and empty files.

    Accepts a UTF-8 BOM and CRLF line ends; a last line without a newline is valid.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(path, None, "is a directory, expected a file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, None, "file not found") from None
    except OSError as e:
        raise InputError(path, None, f"cannot read file ({e.strerror})") from None
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise InputError(path, line, "binary file (NUL byte), expected UTF-8 text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise InputError(
            path, line, f"invalid UTF-8 (byte 0x{data[e.start]:02x} at column {col})"
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise InputError(path, 1, "empty file")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    if "\r" in text:
        lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    return lines


def parse_parlai(path: str | Path, *, dialog_prefix: str | None = None) -> list[Example]:
    """Parse a ParlAI/ConvAI2 text file into Examples (one per dialogue line).

    Dialogue ids are `<dialog_prefix or file stem>:<0-based dialogue index in the file>`.
    A partner `__SILENCE__` opening (the responder speaks first) keeps its example and is left
    out of the history, so that example's history is empty.
    """
    path = Path(path)
    lines = read_text_lines(path)
    return parse_parlai_lines(lines, path=path, dialog_prefix=dialog_prefix or path.stem)


def _split_numbered_line(line: str, lineno: int, path: str | Path) -> tuple[int, str]:
    """Split `N text` into (N, text); text is "" when the line holds only its number."""
    space = line.find(" ")
    number_text = line if space < 0 else line[:space]
    if not (number_text.isascii() and number_text.isdigit()):
        if not line.strip():
            raise InputError(path, lineno, "blank line, expected 'N text'")
        raise InputError(path, lineno, "line does not start with its number ('N text')")
    return int(number_text), ("" if space < 0 else line[space + 1 :])


def _check_numbering(number: int, prev_number: int, lineno: int, path: str | Path) -> None:
    """Reject a line number (other than 1) that does not continue the current dialogue."""
    if number != prev_number + 1:
        if lineno == 1:
            raise InputError(path, lineno, f"numbering starts at {number}, expected 1")
        raise InputError(
            path,
            lineno,
            f"line number {number} follows {prev_number}: expected {prev_number + 1} "
            "(same dialogue) or 1 (new dialogue)",
        )


@dataclass
class _Dialogue:
    """The dialogue being read: its persona lines so far and its utterances so far."""

    index: int
    dialog_id: str
    start: int  # the line number of its first line
    persona: list[str] = field(default_factory=list)
    partner_persona: list[str] = field(default_factory=list)
    utterances: list[str] = field(default_factory=list)
    persona_t: tuple[str, ...] = ()
    partner_t: tuple[str, ...] = ()
    turn: int = 0

    def add_persona_line(self, text: str, lineno: int, path: str | Path) -> None:
        """Append a `your persona:` / `partner's persona:` sentence (a line without a TAB)."""
        if text.startswith(YOUR_PERSONA):
            target = self.persona
            sentence = text[len(YOUR_PERSONA) :].strip()
        elif text.startswith(PARTNER_PERSONA):
            target = self.partner_persona
            sentence = text[len(PARTNER_PERSONA) :].strip()
        else:
            raise InputError(
                path,
                lineno,
                "dialogue line without a TAB between the partner's utterance and the response",
            )
        if self.turn:
            raise InputError(path, lineno, "persona line after the dialogue lines")
        if not sentence:
            raise InputError(path, lineno, "empty persona sentence")
        target.append(sentence)

    def add_turn(self, partner: str, response: str, candidates: tuple[str, ...]) -> Example:
        """The Example of a dialogue line; a turn-0 `__SILENCE__` stays out of the history."""
        if self.turn == 0:
            self.persona_t, self.partner_t = tuple(self.persona), tuple(self.partner_persona)
        if not (self.turn == 0 and partner == SILENCE):
            self.utterances.append(partner)
        example = Example(
            dialog_id=self.dialog_id,
            turn=self.turn,
            persona=self.persona_t,
            history=tuple(self.utterances),
            response=response,
            partner_persona=self.partner_t,
            candidates=candidates,
        )
        self.utterances.append(response)
        self.turn += 1
        return example


def _dialogue_fields(text: str, lineno: int, path: str | Path) -> tuple[str, str, tuple[str, ...]]:
    """(partner, response, candidates) of `partner<TAB>self[<TAB>reward<TAB>cand1|cand2|...]`."""
    fields = text.split("\t")
    if len(fields) > 4:
        raise InputError(path, lineno, f"{len(fields)} TAB-separated fields, expected 2 to 4")
    partner = fields[0].strip()
    response = fields[1].strip()
    if not partner:
        raise InputError(path, lineno, "empty partner utterance before the TAB")
    if not response:
        raise InputError(path, lineno, "empty response after the TAB")
    candidates: tuple[str, ...] = ()
    if len(fields) == 4 and fields[3].strip():
        candidates = tuple(c.strip() for c in fields[3].split("|"))
        if not all(candidates):
            raise InputError(path, lineno, "empty candidate in the candidates field")
    return partner, response, candidates


def _close_dialogue(
    dialogue: _Dialogue,
    have_examples: bool,
    next_line: int | None,
    n_lines: int,
    path: str | Path,
) -> None:
    """Reject a dialogue that ends (at next_line, or at the end of file) without dialogue lines."""
    if dialogue.index >= 0 and dialogue.turn == 0:
        where = f"dialogue {dialogue.index + 1} (from line {dialogue.start})"
        if not have_examples and next_line is None:
            problem = f"no examples: {where} has no dialogue lines (partner<TAB>response)"
        else:
            problem = f"{where} has no dialogue lines (partner<TAB>response)"
        raise InputError(path, next_line or n_lines, problem)


def parse_parlai_lines(lines: list[str], *, path: str | Path, dialog_prefix: str) -> list[Example]:
    """Parse the lines of a ParlAI/ConvAI2 text file (see parse_parlai); path is for messages."""
    examples: list[Example] = []
    dialogue = _Dialogue(index=-1, dialog_id="", start=0)
    prev_number = 0
    for lineno, line in enumerate(lines, start=1):
        number, text = _split_numbered_line(line, lineno, path)
        if number == 1:
            _close_dialogue(dialogue, bool(examples), lineno, len(lines), path)
            index = dialogue.index + 1
            dialogue = _Dialogue(index=index, dialog_id=f"{dialog_prefix}:{index}", start=lineno)
        else:
            _check_numbering(number, prev_number, lineno, path)
        prev_number = number
        if not text.strip():
            raise InputError(path, lineno, "no text after the line number")
        if "\t" not in text:
            dialogue.add_persona_line(text, lineno, path)
        else:
            examples.append(dialogue.add_turn(*_dialogue_fields(text, lineno, path)))

    if dialogue.index >= 0 and dialogue.turn == 0 and examples:
        # A file cut with `head -N` inside a persona block: keep the complete dialogues.
        warn(
            f"{path}: the last dialogue (from line {dialogue.start}) has no dialogue lines, "
            f"left out (file cut short?); read {dialogue.index} complete dialogue(s)"
        )
        return examples
    _close_dialogue(dialogue, bool(examples), None, len(lines), path)
    return examples


def _group_dialogues(examples: Iterable[Example]) -> list[list[Example]]:
    groups: dict[str, list[Example]] = {}
    for ex in examples:
        groups.setdefault(ex.dialog_id, []).append(ex)
    return [sorted(g, key=lambda e: e.turn) for g in groups.values()]


def _check_field(text: str, what: str, dialog_id: str) -> str:
    if "\t" in text or "\n" in text or "\r" in text:
        raise SptBenchError(
            f"cannot write ParlAI text: {what} in dialogue {dialog_id} holds a TAB or newline"
        )
    return text


def format_parlai(examples: Iterable[Example]) -> str:
    """Render Examples as ParlAI/ConvAI2 text (dialogues in first-appearance order).

    Each dialogue must hold all its turns from 0 with full histories (as every reader produces);
    an empty first history is written as a `__SILENCE__` partner opening.
    """
    out: list[str] = []
    for dialogue in _group_dialogues(examples):
        first = dialogue[0]
        did = first.dialog_id
        n = 1
        for prefix, sentences in (
            (YOUR_PERSONA, first.persona),
            (PARTNER_PERSONA, first.partner_persona),
        ):
            for s in sentences:
                out.append(f"{n} {prefix} {_check_field(s, 'a persona sentence', did)}")
                n += 1
        utterances: list[str] = []
        for k, ex in enumerate(dialogue):
            if ex.turn != k:
                raise SptBenchError(
                    f"cannot write ParlAI text: dialogue {did} has turn {ex.turn} where turn {k} "
                    "was expected (turns must run 0, 1, 2, ...)"
                )
            if ex.persona != first.persona or ex.partner_persona != first.partner_persona:
                raise SptBenchError(
                    f"cannot write ParlAI text: dialogue {did} changes persona at turn {k}"
                )
            if k == 0 and not ex.history:
                partner = SILENCE
            elif len(ex.history) == len(utterances) + 1 and list(ex.history[:-1]) == utterances:
                partner = ex.history[-1]
                utterances.append(partner)
            else:
                raise SptBenchError(
                    f"cannot write ParlAI text: dialogue {did} turn {k} history is not the "
                    "earlier turns' utterances plus one partner utterance (truncated?); "
                    "write JSONL instead"
                )
            utterances.append(ex.response)
            line = (
                f"{n} {_check_field(partner, 'an utterance', did)}\t"
                f"{_check_field(ex.response, 'a response', did)}"
            )
            if ex.candidates:
                if any("|" in c for c in ex.candidates):
                    raise SptBenchError(
                        f"cannot write ParlAI text: a candidate in dialogue {did} holds '|'"
                    )
                line += "\t\t" + "|".join(
                    _check_field(c, "a candidate", did) for c in ex.candidates
                )
            out.append(line)
            n += 1
    return "".join(line + "\n" for line in out)


def write_parlai(examples: Iterable[Example], path: str | Path) -> None:
    """Write Examples as a ParlAI/ConvAI2 text file, atomically."""
    atomic_write_text(path, format_parlai(examples))
