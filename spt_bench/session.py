"""The pieces `run`, `evaluate`, `chat` and `bench` share to turn a config into a working
method: the resolved config (method options and lr filled in), the method over its backbone,
its formatter, the engine and length checks, and the training/decoding settings."""

from __future__ import annotations

from typing import Any

from spt_bench.config import RunConfig, config_from_dict
from spt_bench.errors import ConfigError


def finalize_config(config: RunConfig) -> tuple[RunConfig, type, Any]:
    """Fill in what defaults depend on (lr from the method, full method options)."""
    import dataclasses

    from spt_bench.methods import get_method, make_options

    cls = get_method(config.method.name)
    options = make_options(cls, config.method.resolved_options())
    values = config.to_dict()
    values["method"]["options"] = dataclasses.asdict(options)
    if values["train"]["lr"] is None:
        values["train"]["lr"] = cls.default_lr
    return config_from_dict(values), cls, options


def build_method(
    config: RunConfig,
    cls: type,
    options: Any,
    train_examples: list,
    *,
    from_checkpoint: bool = False,
) -> Any:
    """The configured method over its backbone, set up with the train split - unless it is a
    trained method about to be loaded from a checkpoint, whose trained state holds whatever
    `setup` would compute (`from_checkpoint`)."""
    from spt_bench.distributed import resolve_process_device
    from spt_bench.models import load_backbone

    backbone = load_backbone(
        config.model.name,
        device=resolve_process_device(config.model.device),
        dtype=config.model.dtype,
        trust_remote_code=config.model.trust_remote_code,
        seed=config.seed,
    )
    if from_checkpoint and cls.trains:
        return method_over(backbone, cls, options, None, seed=config.seed)
    return method_over(
        backbone, cls, options, train_examples, seed=config.seed,
        formatter=lambda method: make_formatter(method, config),
    )  # fmt: skip


def method_over(
    backbone: Any,
    cls: type,
    options: Any,
    train_examples: list | None,
    *,
    seed: int,
    formatter: Any = None,
) -> Any:
    """A method over an already loaded backbone, seeded, set up with the train split (None:
    not set up - a checkpoint will hold its state). `formatter(method)` builds the formatter
    `setup` gets (None: the method's default). The one way run, evaluate, chat and bench
    construct a method (bench puts several over one backbone)."""
    import torch

    torch.manual_seed(seed)
    method = cls(backbone, options)
    if train_examples is not None:
        fmt = formatter(method) if formatter is not None else None
        method.setup(train_examples, seed=seed, **({"formatter": fmt} if fmt else {}))
    return method


def check_decode_engine(config: RunConfig, method: Any) -> None:
    """Refuse a decode engine (or decoding mode) that cannot serve the method or run the model,
    before any work is done."""
    refusal = method.engine_refusal(config.decode.engine, config.decode.mode)
    if refusal is not None:
        raise ConfigError(refusal)
    if config.decode.engine == "vllm" and config.decode.mode != "beam":
        from spt_bench.vllm_engine import check_model_supported, check_single_process, require_vllm

        require_vllm()
        check_single_process()
        backbone = method.backbone
        check_model_supported(backbone.model.config, backbone.device, backbone.name)


def check_decode_length(config: RunConfig, method: Any, n_examples: int, console: Any) -> None:
    """decode.max_new_tokens within the model's context (else ConfigError, before the folder
    exists); a warning with the worst-case volume when it is large."""
    from spt_bench.decode import check_max_new_tokens

    note = check_max_new_tokens(
        method.backbone,
        config.data.max_input_tokens,
        config.decode.max_new_tokens,
        prefix_tokens=method.prefix_length(),
        n_examples=n_examples,
    )
    if note:
        if console is not None:
            console.print(f"[yellow]warning:[/yellow] {note}", highlight=False)


def make_formatter(method: Any, config: RunConfig) -> Any:
    return method.build_formatter(
        max_input_tokens=config.data.max_input_tokens,
        max_history_turns=config.data.max_history_turns,
        max_response_tokens=config.data.max_response_tokens,
    )


def train_settings(config: RunConfig) -> Any:
    from spt_bench.train import TrainSettings

    return TrainSettings.from_config(config.train, config.seed)


def decode_settings(config: RunConfig) -> Any:
    from spt_bench.decode import DecodeSettings

    return DecodeSettings.from_config(config.decode, config.seed)


def check_split_sizes(config: RunConfig, cls: type, train_ex: list, test_ex: list) -> None:
    """Refuse splits a run cannot use, before any model is loaded (including too few
    dialogues for the hits@k distractors, which would otherwise fail after training)."""
    from spt_bench.model_metrics import check_model_metrics_inputs

    if not test_ex:
        raise ConfigError("the test split is empty: nothing to evaluate")
    if cls.trains and not train_ex:
        raise ConfigError(f"the train split is empty: method {cls.name!r} has nothing to train on")
    check_model_metrics_inputs(config, test_ex)
    check_model_scoring(config)


def check_model_scoring(config: RunConfig) -> None:
    """A missing NLI model or judge fails before training, not after it."""
    from spt_bench.metrics.model_scores import check_scoring, scoring_from_config

    scoring = scoring_from_config(config.score, None)
    if scoring is not None:
        check_scoring(scoring)


def dev_batches(formatter: Any, dev: list, config: RunConfig, pad_id: int) -> list:
    """The dev split collated for the training loop's dev loss (decoding's batch size)."""
    from spt_bench.data.formatting import collate_dev

    return collate_dev(formatter, dev, config.decode.batch_size, pad_id)
