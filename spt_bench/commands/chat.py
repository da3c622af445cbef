"""`spt-bench chat`: talk to a trained run in the terminal."""

from __future__ import annotations

from typing import Any

import typer

from spt_bench.commands.base import _with_flags, app, command


def chat_cmd(
    run_dir: str | None = typer.Argument(None, help="A trained run folder (optional)."),
    persona: list[str] | None = typer.Option(
        None, "--persona", "-p", help="A persona sentence (repeatable)."
    ),
    **flags: Any,
) -> None:
    """Talk to a trained run (or --model + an untrained --method) in the terminal; /quit to
    leave. --device and --max-new-tokens change the run's settings for the chat."""
    from spt_bench.chat import chat_command
    from spt_bench.cli_flags import layer_from_flags
    from spt_bench.config import flatten

    given = flatten(layer_from_flags(flags, "chat"))
    chat_command(
        run_dir,
        persona=persona or [],
        model=given.get("model.name"),
        method=given.get("method.name"),
        device=given.get("model.device"),
        max_new_tokens=given.get("decode.max_new_tokens"),
    )


command(app, "chat")(_with_flags(chat_cmd, "chat"))
