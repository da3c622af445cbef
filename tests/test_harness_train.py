"""The shared training loop: resume, determinism, accumulation, logging, divergence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_model import tiny_random

from spt_bench.data.example import Example
from spt_bench.errors import SptBenchError
from spt_bench.methods import get_method, make_options
from spt_bench.train import (
    MicroBatchStream,
    TrainingDiverged,
    TrainSettings,
    load_trained_weights,
    read_checkpoint_state,
    train,
)


def _examples(n: int = 12) -> list[Example]:
    out = []
    for i in range(n):
        persona = (f"i like colour {i % 3}.", "i have a dog.")
        history = tuple(f"message {j} of dialogue {i}" for j in range(1 + i % 3))
        out.append(Example(f"d{i}", len(history) - 1, persona, history, f"reply number {i}."))
    return out


def _setup(method: str = "lora", seed: int = 0, **options):
    backbone = tiny_random(seed=seed)
    cls = get_method(method)
    torch.manual_seed(seed)
    m = cls(backbone, make_options(cls, options))
    formatter = m.build_formatter(max_input_tokens=96, max_response_tokens=16)
    encoded = [formatter.encode_train(ex) for ex in _examples()]
    dev = [formatter.encode_train(ex) for ex in _examples(4)]
    from spt_bench.data.formatting import collate_train

    dev_batches = [collate_train(dev, backbone.pad_token_id)]
    return m, encoded, dev_batches


def _params(m) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.trained_state().items()}


def test_resume_after_kill_ends_with_the_same_parameters(tmp_path: Path) -> None:
    # LoRA has dropout, so this also checks that the RNG state travels with the checkpoint.
    settings = TrainSettings(max_steps=6, batch_size=3, grad_accum=2, lr=1e-2, save_every=2,
                             eval_every=3, seed=1)  # fmt: skip
    m, enc, dev = _setup(lora_dropout=0.3)
    train(m, enc, dev, settings, tmp_path / "a", pad_id=0, progress=False)
    reference = _params(m)

    class Killed(Exception):
        pass

    def kill_at_5(step: int) -> None:
        if step == 5:
            raise Killed

    m2, enc2, dev2 = _setup(lora_dropout=0.3)
    with pytest.raises(Killed):
        train(m2, enc2, dev2, settings, tmp_path / "b", pad_id=0, progress=False, on_step=kill_at_5)
    assert read_checkpoint_state(tmp_path / "b")["last_step"] == 4
    m3, enc3, dev3 = _setup(lora_dropout=0.3)  # a fresh process: new model, new optimiser
    result = train(m3, enc3, dev3, settings, tmp_path / "b", pad_id=0, progress=False, resume=True)
    assert result.steps == 6
    resumed = _params(m3)
    assert reference.keys() == resumed.keys()
    for k in reference:
        assert torch.equal(reference[k], resumed[k]), k
    # the log has each step exactly once, as an uninterrupted run's log does
    steps = [r["step"] for r in map(json.loads, (tmp_path / "b/train_log.jsonl").open())
             if r["type"] == "train"]  # fmt: skip
    assert steps == [1, 2, 3, 4, 5, 6]


def test_same_seed_gives_identical_training(tmp_path: Path) -> None:
    settings = TrainSettings(max_steps=3, batch_size=4, lr=1e-2, seed=3)
    runs = []
    for name in ("a", "b"):
        m, enc, dev = _setup(lora_dropout=0.2)
        train(m, enc, dev, settings, tmp_path / name, pad_id=0, progress=False)
        runs.append(_params(m))
    for k in runs[0]:
        assert torch.equal(runs[0][k], runs[1][k])


def test_grad_accumulation_matches_a_large_batch(tmp_path: Path) -> None:
    # full-ft, one step: 2 micro-batches of 2 == one batch of 4 on the same data (equal token
    # counts per micro-batch, so the mean of micro-batch means is the batch mean). The logged
    # loss and pre-clipping gradient norm must agree (Adam's first step hides the grad scale).
    exs = [Example("d", 0, ("p.",), ("hello",), f"same length reply {i}.") for i in range(4)]
    logs = []
    for bs, ga in ((4, 1), (2, 2)):
        backbone = tiny_random()
        m = get_method("full-ft")(backbone)
        f = m.build_formatter()
        enc = [f.encode_train(e) for e in exs]
        s = TrainSettings(max_steps=1, batch_size=bs, grad_accum=ga, lr=1e-3, warmup_ratio=0)
        train(m, enc, [], s, tmp_path / f"{bs}-{ga}", pad_id=0, progress=False)
        logs.append(json.loads((tmp_path / f"{bs}-{ga}/train_log.jsonl").read_text()))
    assert logs[0]["loss"] == pytest.approx(logs[1]["loss"], rel=1e-5)
    assert logs[0]["grad_norm"] == pytest.approx(logs[1]["grad_norm"], rel=1e-4)


def test_log_rows_hold_every_loss_component_lr_and_dev_loss(tmp_path: Path) -> None:
    settings = TrainSettings(max_steps=4, batch_size=4, lr=1e-2, warmup_ratio=0.5, eval_every=2)
    m, enc, dev = _setup()
    train(m, enc, dev, settings, tmp_path, pad_id=0, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "train_log.jsonl").open()]
    tr = [r for r in rows if r["type"] == "train"]
    dv = [r for r in rows if r["type"] == "dev"]
    assert [r["step"] for r in tr] == [1, 2, 3, 4]
    assert [r["step"] for r in dv] == [2, 4]
    for r in tr:
        for key in ("loss", "nll", "lr", "grad_norm", "examples_per_s", "epoch"):
            assert key in r
    # warm-up over 2 steps, then linear decay to 0 at step 4
    assert [round(r["lr"], 6) for r in tr] == [0.005, 0.01, 0.01, 0.005]
    assert all("dev_loss" in r and r["dev_loss"] > 0 for r in dv)


def test_best_checkpoint_is_the_lowest_dev_loss_and_is_loaded(tmp_path: Path) -> None:
    settings = TrainSettings(max_steps=4, batch_size=4, lr=3e-2, eval_every=1, seed=0)
    m, enc, dev = _setup()
    train(m, enc, dev, settings, tmp_path, pad_id=0, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "train_log.jsonl").open()]
    dv = [r for r in rows if r["type"] == "dev"]
    best = min(dv, key=lambda r: r["dev_loss"])
    state = read_checkpoint_state(tmp_path)
    assert state["best_step"] == best["step"]
    assert state["best_dev_loss"] == pytest.approx(best["dev_loss"])
    # only the folders named in state.json remain
    folders = sorted(p.name for p in (tmp_path / "checkpoint").glob("step-*"))
    assert set(folders) == {state["best"], state["last"]}
    m2, _, _ = _setup()
    assert load_trained_weights(m2, tmp_path, "final") == state["best"]
    m2.set_train_mode(False)
    loss = m2.dev_metrics(dev)["dev_loss"]
    assert loss == pytest.approx(best["dev_loss"], rel=1e-4)


def test_early_stopping_stops_after_patience(tmp_path: Path) -> None:
    # lr so large that dev loss gets worse after the first evaluation
    settings = TrainSettings(max_steps=20, batch_size=4, lr=5.0, eval_every=1,
                             early_stopping_patience=2, max_grad_norm=0)  # fmt: skip
    m, enc, dev = _setup()
    result = train(m, enc, dev, settings, tmp_path, pad_id=0, progress=False)
    assert result.stopped_early
    assert result.steps < 20


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    m, enc, dev = _setup()
    original = m.training_loss
    calls = {"n": 0}

    def poisoned(batch):
        calls["n"] += 1
        loss, comps = original(batch)
        return (loss * float("nan"), comps) if calls["n"] >= 3 else (loss, comps)

    m.training_loss = poisoned
    settings = TrainSettings(max_steps=5, batch_size=4, lr=1e-2, save_every=1)
    with pytest.raises(TrainingDiverged, match="step 3.*NaN/inf.*step-000002"):
        train(m, enc, dev, settings, tmp_path, pad_id=0, progress=False)
    state = read_checkpoint_state(tmp_path)
    assert state["last"] == "step-000002"
    assert (tmp_path / "checkpoint/step-000002/trained.safetensors").is_file()
    assert issubclass(TrainingDiverged, SptBenchError)


def test_data_order_depends_only_on_seed_and_step() -> None:
    s = TrainSettings(batch_size=3, grad_accum=2, seed=5)
    a = MicroBatchStream(10, s)
    b = MicroBatchStream(10, s)
    seq_a = [a.micro_batches(i) for i in range(6)]
    seq_b = [b.micro_batches(i) for i in reversed(range(6))][::-1]
    assert seq_a == seq_b
    # each epoch covers every example once
    epoch0 = [i for step in seq_a[:2] for _, mb in step for i in mb]
    assert sorted(epoch0) == list(range(10))


def test_length_bucketing_groups_similar_lengths_and_stays_deterministic() -> None:
    lengths = [5, 100, 6, 98, 7, 97, 8, 96] * 4
    s = TrainSettings(batch_size=4, seed=2)
    a = MicroBatchStream(len(lengths), s, lengths)
    batches = [mb for step in range(8) for _, mb in a.micro_batches(step)]
    assert sorted(i for mb in batches for i in mb) == list(range(len(lengths)))
    spread = [max(lengths[i] for i in mb) - min(lengths[i] for i in mb) for mb in batches]
    assert max(spread) < 50  # short and long rows never share a batch here
    b = MicroBatchStream(len(lengths), s, lengths)
    assert [mb for step in range(8) for _, mb in b.micro_batches(step)] == batches


def test_random_batches_are_chunks_of_the_seeded_permutation_and_mix_lengths() -> None:
    # the authors' batching (--random-batches / bucket_by_length: false): SPT's contrastive
    # pairs are then any two examples of the data, not two of similar length
    import torch

    lengths = [5, 100, 6, 98, 7, 97, 8, 96] * 4
    s = TrainSettings(batch_size=4, seed=2, bucket_by_length=False)
    stream = MicroBatchStream(len(lengths), s, None)
    batches = [mb for step in range(8) for _, mb in stream.micro_batches(step)]
    perm = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(2 * 100_003))
    assert batches == [perm.tolist()[i : i + 4] for i in range(0, len(lengths), 4)]
    spread = [max(lengths[i] for i in mb) - min(lengths[i] for i in mb) for mb in batches]
    assert max(spread) > 50  # short and long rows share batches
    bucketed = MicroBatchStream(len(lengths), s, lengths)
    pairs = {frozenset((i, j)) for mb in batches for i in mb for j in mb if i < j}
    pairs_b = {
        frozenset((i, j))
        for step in range(8)
        for _, mb in bucketed.micro_batches(step)
        for i in mb
        for j in mb
        if i < j
    }
    assert pairs != pairs_b  # bucketing changes which pairs meet in a batch


def _count_layer_forwards(model) -> tuple[list[int], list]:
    from spt_bench.models import checkpointed_layers

    counts = [0] * len(checkpointed_layers(model))
    hooks = []
    for i, layer in enumerate(checkpointed_layers(model)):

        def hook(*_args, i=i):
            counts[i] += 1

        # the inner forward (not __call__) is what checkpointing replays in backward
        hooks.append(layer.self_attn.register_forward_hook(hook))
    return counts, hooks


@pytest.mark.parametrize("fraction", [0.5, 1.0])
def test_activation_checkpointing_recomputes_chosen_layers_and_keeps_the_losses(
    tmp_path: Path, fraction: float
) -> None:
    settings = TrainSettings(max_steps=3, batch_size=4, lr=1e-2, seed=0)
    m, enc, dev = _setup("spt", k=2)
    plain_counts, hooks = _count_layer_forwards(m.backbone.model)
    train(m, enc, dev, settings, tmp_path / "plain", pad_id=0, progress=False)
    for h in hooks:
        h.remove()
    plain_log = [json.loads(x) for x in (tmp_path / "plain" / "train_log.jsonl").open()]

    m, enc, dev = _setup("spt", k=2)
    counts, hooks = _count_layer_forwards(m.backbone.model)
    settings.activation_checkpointing = fraction
    train(m, enc, dev, settings, tmp_path / "ckpt", pad_id=0, progress=False)
    for h in hooks:
        h.remove()
    ckpt_log = [json.loads(x) for x in (tmp_path / "ckpt" / "train_log.jsonl").open()]
    for a, b in zip(plain_log, ckpt_log, strict=True):
        for key in ("loss", "nll", "sel", "fusion", "ctr", "dev_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key
    # a checkpointed layer runs its forward twice per training step (once more in backward)
    recomputed = [i for i, (c, p) in enumerate(zip(counts, plain_counts, strict=True)) if c > p]
    assert len(recomputed) == round(fraction * len(counts))
    # the frozen backbone is back in evaluation mode with checkpointing off afterwards
    assert not m.backbone.model.training
    assert not any(getattr(x, "gradient_checkpointing", False) for x in m.backbone.model.modules())


def test_activation_checkpointing_fraction_outside_zero_one_is_refused() -> None:
    from spt_bench.config import TrainConfig
    from spt_bench.errors import ConfigError

    with pytest.raises(ConfigError, match="activation_checkpointing"):
        TrainConfig(activation_checkpointing=1.5)


@pytest.mark.parametrize("method", ["spt", "full-ft", "lora"])
def test_lean_activations_train_the_same_loss_curve_and_are_restored(
    tmp_path: Path, method: str, monkeypatch
) -> None:
    from spt_bench import lean_autograd

    logs = {}
    original = lean_autograd._RMSNorm.backward
    for lean in (False, True):
        calls: list[int] = []

        def counted(ctx, grad, calls=calls):
            calls.append(1)
            return original(ctx, grad)

        monkeypatch.setattr(lean_autograd._RMSNorm, "backward", staticmethod(counted))
        settings = TrainSettings(max_steps=3, batch_size=4, lr=1e-2, seed=0, lean_activations=lean)
        m, enc, dev = _setup(method, **({"k": 2} if method == "spt" else {}))
        train(m, enc, dev, settings, tmp_path / str(lean), pad_id=0, progress=False)
        logs[lean] = [json.loads(x) for x in (tmp_path / str(lean) / "train_log.jsonl").open()]
        assert bool(calls) == lean  # the lean backward ran exactly when asked for
        assert not lean_autograd.lean_modules(m.backbone.model)[0][0].__dict__.get("forward")
    for a, b in zip(logs[False], logs[True], strict=True):
        for key in ("loss", "nll", "sel", "fusion", "ctr", "dev_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key
