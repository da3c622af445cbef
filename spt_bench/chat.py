"""`spt-bench chat`: talk to a trained run (or an untrained method on a model) in the terminal.

Each reply goes through the harness's own generation path (the method's PromptFormatter, its
`prefix_embeds`, `decode.generate_batch` and `decode.clean_response`), so what you see is what
`spt-bench run` would have predicted for the same persona and history. For SPT the prompt the
retriever picked for the turn is shown with its score.

The conversation loop (`chat_loop`) takes any iterator of input lines and any responder, so it is
tested without a terminal or a model. Commands: /reset (new dialogue, same persona), /persona,
/help, /quit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from spt_bench.errors import ConfigError, InputError, SptBenchError

HELP = "commands: /reset (new dialogue), /persona (show it), /help, /quit"
QUIT = ("/quit", "/exit", "/q")


@dataclass
class Reply:
    text: str
    info: dict = field(default_factory=dict)  # the method's row info (PrefixOutput.row_info)
    raw: str = ""
    stop: str = ""


class Responder(Protocol):
    def respond(self, persona: tuple[str, ...], history: tuple[str, ...]) -> Reply: ...


@dataclass
class ChatTurn:
    user: str
    reply: Reply


def describe_reply_info(info: dict, method_cls: Any = None) -> str:
    """One line about the method's choice for this turn (its `describe_row` hook); without a
    method class, the first registered method that describes the row fields present."""
    if not info:
        return ""
    from spt_bench.methods import list_methods

    for cls in [method_cls] if method_cls is not None else list_methods():
        line = cls.describe_row(info)
        if line:
            return line
    return ""


def chat_loop(
    responder: Responder,
    persona: Sequence[str],
    inputs: Iterable[str],
    write: Callable[[str], None],
) -> list[ChatTurn]:
    """Run a conversation: each input line is the partner's utterance, answered by the
    responder with the persona and the dialogue so far. Returns the turns of the current
    dialogue (after the last /reset)."""
    persona_t = tuple(p.strip() for p in persona if p.strip())
    history: list[str] = []
    turns: list[ChatTurn] = []
    write("persona: " + (" ".join(persona_t) if persona_t else "(none)"))
    write(HELP)
    for line in inputs:
        text = line.strip()
        if not text:
            continue
        if text.lower() in QUIT:
            break
        if text.lower() == "/reset":
            history, turns = [], []
            write("(new dialogue)")
            continue
        if text.lower() == "/persona":
            write("persona: " + (" ".join(persona_t) if persona_t else "(none)"))
            continue
        if text.lower() == "/help":
            write(HELP)
            continue
        if text.startswith("/"):
            write(f"unknown command {text.split()[0]}; {HELP}")
            continue
        history.append(text)
        reply = responder.respond(persona_t, tuple(history))
        history.append(reply.text)
        turns.append(ChatTurn(text, reply))
        method = getattr(responder, "method", None)
        note = describe_reply_info(reply.info, None if method is None else type(method))
        if note:
            write(note)
        write(f"bot: {reply.text}" if reply.text else "bot: (empty reply)")
    return turns


class MethodResponder:
    """Generates one reply with the harness's decoding path (the hf engine of
    spt_bench.decode, one row at a time) for a loaded method."""

    def __init__(self, method: Any, formatter: Any, settings: Any) -> None:
        from spt_bench.decode import HfEngine

        self.method = method
        self.formatter = formatter
        self.settings = settings
        self._engine = HfEngine(method, settings)  # seeded once: a sampled chat is repeatable

    def respond(self, persona: tuple[str, ...], history: tuple[str, ...]) -> Reply:
        from spt_bench.data.example import Example
        from spt_bench.decode import clean_response

        example = Example(
            dialog_id="chat",
            turn=len(history) // 2,
            persona=persona,
            history=history,
            response="",
        )
        self.method.set_train_mode(False)
        prompt = self.formatter.prompt_ids(example)
        _, toks, reasons, infos = self._engine.chunk([0], 0, [prompt], [example])
        raw = self.method.backbone.tokenizer.decode(toks[0], skip_special_tokens=True)
        return Reply(clean_response(raw), dict(infos[0]) if infos else {}, raw, reasons[0])


def read_run_config(run: Path) -> Any:
    """The run folder's RunConfig; a missing folder or config is a one-line error."""
    from spt_bench.run_folder import RunFolder

    if not run.is_dir():
        raise InputError(run, None, "no such run folder")
    return RunFolder(run).read_config()


def check_chat_max_new_tokens(max_new_tokens: int | None) -> None:
    """--max-new-tokens must be a positive count (None: the run's setting)."""
    if max_new_tokens is not None and max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")


@dataclass
class ChatSetup:
    responder: MethodResponder
    description: str


def load_responder(
    run_dir: str | Path | None = None,
    *,
    model: str | None = None,
    method: str | None = None,
    device: str | None = None,
    max_new_tokens: int | None = None,
) -> ChatSetup:
    """A responder for a trained run folder (its resolved config, backbone and final
    checkpoint), or for `model` + a `method` that does not train (e.g. text-prompt). Built
    with the same runner pieces as `spt-bench evaluate`."""
    import dataclasses

    from spt_bench.config import RunConfig
    from spt_bench.data.run_data import load_run_data
    from spt_bench.methods import get_method, list_methods, make_options
    from spt_bench.session import build_method, decode_settings, finalize_config, make_formatter

    check_chat_max_new_tokens(max_new_tokens)
    run = None if run_dir is None else Path(run_dir)
    if run is not None:
        config = read_run_config(run)
        for flag, value, stored in (
            ("method", method, config.method.name),
            ("model", model, config.model.name),
        ):
            if value is not None and value != stored:
                raise ConfigError(f"--{flag} {value} differs from the run's {flag} {stored}")
        if device is not None:
            config = config.replace(**{"model.device": device})
        cls = get_method(config.method.name)
        options = make_options(cls, config.method.options)
    else:
        untrained = " or ".join(f"--method {c.name}" for c in list_methods() if not c.trains)
        if method is None:
            raise ConfigError(f"give a run folder, or --model and --method (e.g. {untrained})")
        if get_method(method).trains:
            raise ConfigError(
                f"method {method!r} needs training: give its run folder "
                "(spt-bench chat RUN_DIR); without one use a method that does not train, "
                f"e.g. {untrained}"
            )
        base = RunConfig().replace(
            **{"method.name": method, "model.device": device},
            **({"model.name": model} if model else {}),
        )
        config, cls, options = finalize_config(base)
    # only a method that draws on the train split (e.g. for k shots) loads the data
    train = load_run_data(config)[0] if cls.uses_train_data(options) else []
    meth = build_method(config, cls, options, train)
    loaded = None
    if run is not None and cls.trains:
        from spt_bench.checkpoints import load_trained_weights

        loaded = load_trained_weights(meth, run, "final")
        if loaded is None:
            raise InputError(run, None, "has no checkpoint to chat with (training unfinished?)")
    settings = dataclasses.replace(
        decode_settings(config),
        batch_size=1,
        max_new_tokens=config.decode.max_new_tokens if max_new_tokens is None else max_new_tokens,
    )
    what = f"{config.method.name} on {config.model.name}"
    if loaded:
        what += f" (checkpoint {loaded} of {run})"
    return ChatSetup(MethodResponder(meth, make_formatter(meth, config), settings), what)


def chat_command(
    run_dir: str | Path | None,
    *,
    persona: Sequence[str],
    model: str | None = None,
    method: str | None = None,
    device: str | None = None,
    max_new_tokens: int | None = None,
    inputs: Iterable[str] | None = None,
    console: Any = None,
) -> list[ChatTurn]:
    """What `spt-bench chat` does: load, then read lines from the terminal until /quit or EOF."""
    from rich.console import Console
    from rich.markup import escape

    console = console or Console()
    # Cheap checks of what was given come before asking for what is missing.
    check_chat_max_new_tokens(max_new_tokens)
    if run_dir is not None:
        read_run_config(Path(run_dir))
    if not persona:
        raise SptBenchError('give the bot a persona: --persona "i love cats." (repeatable)')
    with console.status("loading model..."):
        setup = load_responder(
            run_dir, model=model, method=method, device=device, max_new_tokens=max_new_tokens
        )
    console.print(f"[bold]chatting with[/] {escape(setup.description)}")

    def write(text: str) -> None:
        style = "dim" if text.startswith(("[SPT", "commands:", "(")) else ""
        console.print(escape(text), style=style)

    return chat_loop(
        setup.responder, persona, inputs if inputs is not None else _stdin(console), write
    )


def _stdin(console: Any) -> Iterable[str]:
    while True:
        try:
            yield console.input("[bold cyan]you:[/] ")
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
