"""The one canonical example type every reader produces and every method consumes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Example:
    """One response to generate, with everything before it.

    `turn` is the 0-based index of the response within its dialogue; `history` holds the
    utterances before the response, oldest first, the last one being the partner's.
    """

    dialog_id: str
    turn: int
    persona: tuple[str, ...]
    history: tuple[str, ...]
    response: str
    partner_persona: tuple[str, ...] = ()
    candidates: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def id(self) -> str:
        """Stable example id used in predictions files: `<dialog_id>:<turn>`."""
        return f"{self.dialog_id}:{self.turn}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["id"] = self.id
        for k in ("persona", "history", "partner_persona", "candidates"):
            d[k] = list(d[k])
        if not d["meta"]:
            d.pop("meta")
        return d
