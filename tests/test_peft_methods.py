"""PEFT methods (peft, prefix-tuning, p-tuning-v2, ia3, dora, hira) on the tiny-random model: they
learn, leave the frozen LM bit-identical, decode like PEFT itself, and save adapters that bare
PEFT loads with the same logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_model import tiny_random

from spt_bench.data import load_examples
from spt_bench.data.formatting import collate_generate, collate_train
from spt_bench.decode import DecodeSettings, generate_batch
from spt_bench.errors import ConfigError
from spt_bench.methods import get_method, make_options
from spt_bench.model_metrics import prepare_candidates, score_candidate_tokens
from spt_bench.models import load_backbone
from tests.decode_helpers import perturbed_tiny, toy_examples

# name -> options; `peft` runs PEFT's PROMPT_TUNING (the input-embedding prefix path)
NEW_METHODS = {
    "prefix-tuning": {},
    "prefix-tuning-no-mlp": {"prefix_projection": False},
    "p-tuning-v2": {},
    "ia3": {},
    "dora": {},
    "hira": {},
    "peft": {"peft_type": "PROMPT_TUNING", "peft_args": {"num_virtual_tokens": 4}},
}
KV_METHODS = ("prefix-tuning", "prefix-tuning-no-mlp", "p-tuning-v2")


def _make(key: str, backbone, seed: int = 0):
    name = key.removesuffix("-no-mlp")
    cls = get_method(name)
    torch.manual_seed(seed)
    return cls(backbone, make_options(cls, NEW_METHODS[key]))


def _perturb_adapter(method, scale: float = 0.5) -> None:
    """Random trained-like adapter values (IA3 starts at identity, LoRA's B at zero)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in method.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


@pytest.mark.parametrize("key", list(NEW_METHODS))
def test_loss_falls_and_the_frozen_lm_stays_bit_identical(key: str) -> None:
    backbone = perturbed_tiny()  # larger weights: (IA)3's rescaling has something to scale
    method = _make(key, backbone)
    trained = {id(p) for p in method.trainable_parameters()}
    frozen = {n: p.detach().clone() for n, p in backbone.model.named_parameters()
              if id(p) not in trained}  # fmt: skip
    f = method.build_formatter(max_input_tokens=96, max_response_tokens=16)
    batch = collate_train([f.encode_train(ex) for ex in toy_examples(6)], backbone.pad_token_id)
    opt = torch.optim.AdamW(method.trainable_parameters(), lr=3e-2)
    method.set_train_mode(True)
    losses = []
    for _ in range(6):
        loss, parts = method.training_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 0.02 and losses[-1] == min(losses), losses
    for n, p in backbone.model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n


@pytest.mark.parametrize("key", ["ia3", "dora", "hira"])
def test_hf_engine_decodes_like_peft_generate(key: str) -> None:
    backbone = perturbed_tiny()
    method = _make(key, backbone)
    _perturb_adapter(method, 0.5)
    method.set_train_mode(False)
    f = method.build_formatter(max_input_tokens=64)
    examples = toy_examples(4)
    batch = collate_generate([f.prompt_ids(e) for e in examples], backbone.pad_token_id, examples)
    assert len(set(batch.attention_mask.sum(1).tolist())) > 1  # left padding in the batch
    with torch.inference_mode():
        ours, _, _ = generate_batch(method, batch, DecodeSettings(max_new_tokens=8))
        out = method.peft_model.generate(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            max_new_tokens=8,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=backbone.pad_token_id,
        )
    ref = out[:, -8:].tolist()
    assert sum(len(t) for t in ours) >= 12
    for mine, theirs in zip(ours, ref, strict=True):
        assert mine == theirs[: len(mine)]


@pytest.mark.parametrize("key", [*KV_METHODS, "peft"])
def test_hf_engine_decodes_like_a_greedy_loop_over_peft_forward(key: str) -> None:
    """The reference for prompt-learning adapters is PEFT's own forward (prefix injected by
    PEFT), rerun on the whole sequence at every step: PEFT 0.21's `generate` hands the prefix
    to the model as `past_key_values`, which transformers >= 5.2x no longer reads (its argument
    is `cache`), so for prefix tuning it decodes without the prefix, and for prompt tuning its
    tokens after the first differ from PEFT's own forward."""
    backbone = perturbed_tiny()
    method = _make(key, backbone)
    _perturb_adapter(method, 0.05 if key == "peft" else 0.5)
    method.set_train_mode(False)
    f = method.build_formatter(max_input_tokens=64)
    examples = toy_examples(4)
    prompts = [f.prompt_ids(e) for e in examples]
    batch = collate_generate(prompts, backbone.pad_token_id, examples)
    with torch.inference_mode():
        ours, _, _ = generate_batch(method, batch, DecodeSettings(max_new_tokens=6))
        assert sum(len(t) for t in ours) >= 10
        for mine, prompt in zip(ours, prompts, strict=True):
            ids = list(prompt)
            for _ in range(len(mine)):
                x = torch.tensor([ids])
                logits = method.peft_model(input_ids=x, attention_mask=torch.ones_like(x)).logits
                ids.append(int(logits[0, -1].argmax()))
            assert mine == ids[len(prompt) :]


@pytest.mark.parametrize("key", list(NEW_METHODS))
def test_saved_adapter_reloads_in_bare_peft_with_the_same_logits(key: str, tmp_path: Path) -> None:
    from peft import PeftModel

    backbone = perturbed_tiny()
    method = _make(key, backbone)
    _perturb_adapter(method, 0.05 if key == "peft" else 0.5)
    method.save_adapter(tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["task_type"] == "CAUSAL_LM"
    method.set_train_mode(False)
    f = method.build_formatter(max_input_tokens=64, max_response_tokens=16)
    batch = collate_train([f.encode_train(ex) for ex in toy_examples(3)], backbone.pad_token_id)
    with torch.no_grad():
        out = method.inference_nll(batch)
        bare = PeftModel.from_pretrained(perturbed_tiny().model, str(tmp_path / "adapter"))
        bare.eval()
        logits = bare(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        if method.peft_type == "PROMPT_TUNING":  # PEFT returns the virtual tokens' logits too
            logits = logits[:, -batch.input_ids.shape[1] :]
        scored = batch.labels[:, 1:] != -100
        ref = torch.nn.functional.cross_entropy(
            logits[:, :-1][scored].float(), batch.labels[:, 1:][scored], reduction="none"
        )
    assert torch.allclose(out.token_nll, ref, atol=1e-5), (out.token_nll - ref).abs().max()


def test_kv_prefix_hits_at_1_with_prefix_sharing_equals_full_forwards() -> None:
    backbone = tiny_random()
    method = _make("prefix-tuning", backbone)
    _perturb_adapter(method)
    sample = load_examples("sample")
    f = method.build_formatter()
    examples = sample[:5]
    _, prompts, cands, _ = prepare_candidates(
        examples, f, hits_k=(1,), n_candidates=4, distractor_pool=sample
    )
    kwargs = {"batch_size": 3, "rows_per_forward": 5}
    shared, used = score_candidate_tokens(method, examples, prompts, cands, **kwargs)
    naive, _ = score_candidate_tokens(
        method, examples, prompts, cands, use_prefix_sharing=False, **kwargs
    )
    assert used
    for row_s, row_n in zip(shared, naive, strict=True):
        for (s1, n1), (s2, n2) in zip(row_s, row_n, strict=True):
            assert n1 == n2 and s1 / n1 == pytest.approx(s2 / n2, abs=1e-4)


def test_engines_that_cannot_serve_a_kv_prefix_refuse_it_in_one_line() -> None:
    from spt_bench.config import config_from_dict
    from spt_bench.session import check_decode_engine

    backbone = tiny_random()
    prefix = _make("p-tuning-v2", backbone)
    msg = prefix.engine_refusal("vllm")
    assert msg and "'p-tuning-v2'" in msg and "\n" not in msg
    assert prefix.engine_refusal("hf") is None
    assert "beam" in prefix.engine_refusal("hf", "beam")
    with pytest.raises(ConfigError, match="cannot be decoded by the 'vllm' engine"):
        check_decode_engine(
            config_from_dict({"method": "p-tuning-v2", "decode_engine": "vllm"}), prefix
        )
    ia3 = _make("ia3", tiny_random())
    assert ia3.engine_refusal("vllm") is None and ia3.engine_refusal("hf", "beam") is None


def test_generic_peft_reads_peft_format_files_and_rejects_bad_configs(tmp_path: Path) -> None:
    cls = get_method("peft")
    cfg = tmp_path / "ia3.json"
    cfg.write_text(json.dumps({"peft_type": "IA3", "target_modules": ["k_proj", "down_proj"],
                               "feedforward_modules": ["down_proj"]}))  # fmt: skip
    method = cls(tiny_random(), make_options(cls, {"peft_config": str(cfg)}))
    assert method.peft_type == "IA3" and method.summary()["trainable_params"] > 0
    with pytest.raises(ConfigError, match="needs peft_type"):
        make_options(cls, {})
    with pytest.raises(ConfigError, match="unknown peft_type 'NOPE'"):
        cls(tiny_random(), make_options(cls, {"peft_type": "NOPE"}))
    with pytest.raises(ConfigError, match="has no field 'bogus'"):
        cls(tiny_random(),
            make_options(cls, {"peft_type": "IA3", "peft_args": '{"bogus": 1}'}))  # fmt: skip
    with pytest.raises(ConfigError, match="not supported"):
        cls(tiny_random(), make_options(cls, {"peft_type": "CPT"}))


def test_peft_with_lora_type_equals_the_lora_method() -> None:
    """`lora` is unchanged; the generic method with the same LoRA config gives the same loss."""
    losses = []
    for name, opts in (("lora", {"lora_r": 4, "lora_alpha": 8.0}),
                       ("peft", {"peft_type": "LORA", "peft_args": {"r": 4, "lora_alpha": 8,
                                                                    "lora_dropout": 0.05}})):  # fmt: skip
        backbone = perturbed_tiny()
        cls = get_method(name)
        torch.manual_seed(0)
        method = cls(backbone, make_options(cls, opts))
        _perturb_adapter(method)
        method.set_train_mode(False)
        f = method.build_formatter(max_response_tokens=16)
        batch = collate_train([f.encode_train(ex) for ex in toy_examples(3)], 0)
        with torch.no_grad():
            losses.append(method.training_loss(batch)[0])
    assert torch.equal(losses[0], losses[1])


def test_methods_table_counts_every_method_on_the_meta_device_from_smollm2_s_config() -> None:
    """Fast half of the check below: no weights loaded, the counts follow from the config."""
    from transformers import AutoConfig

    from spt_bench.methods import list_methods
    from spt_bench.peft_method import _smollm2_config, trainable_counts_on_meta

    counts = trainable_counts_on_meta("smollm2-135m")
    assert set(counts) == {cls.name for cls in list_methods()}
    assert all(isinstance(n, int) for n in counts.values()), counts
    assert counts["text-prompt"] == 0 and min(n for n in counts.values() if n) > 0
    cfg = _smollm2_config(AutoConfig)
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    per_token = cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * head_dim
    assert counts["p-tuning-v2"] == 8 * per_token  # a key and a value per layer per token
    assert counts["prompt-tuning"] % cfg.hidden_size == 0 and counts["full-ft"] > 10**8


# slow (loads SmolLM2-135M three times; on a fresh machine it is first converted from the GGUF)
@pytest.mark.slow
def test_methods_table_counts_on_the_meta_device_equal_the_loaded_smollm2() -> None:
    from spt_bench.peft_method import trainable_counts_on_meta

    counts = trainable_counts_on_meta("smollm2-135m")
    for name in ("prefix-tuning", "dora", "spt"):
        backbone = load_backbone("smollm2-135m", device="cpu")
        cls = get_method(name)
        method = cls(backbone, make_options(cls, {}))
        assert counts[name] == sum(p.numel() for p in method.trainable_parameters()), name
    cfg = backbone.model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    per_token = cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * head_dim
    assert counts["p-tuning-v2"] == 8 * per_token  # a key and a value per layer per token
    assert counts["text-prompt"] == 0
    assert counts["full-ft"] == sum(p.numel() for p in backbone.model.parameters())


def test_prefix_tuning_run_resumes_evaluates_chats_and_exports_a_peft_adapter(
    tmp_path: Path,
) -> None:
    """Through the runner: a killed prefix-tuning run resumed ends with the uninterrupted run's
    weights; evaluate re-decodes the same predictions from the checkpoint; chat answers; the
    checkpoint's adapter/ folder loads in bare PEFT; metrics.json counts the trained tensors."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from spt_bench.chat import load_responder
    from spt_bench.config import RunConfig, config_from_dict
    from spt_bench.evaluation import evaluate_run
    from spt_bench.io import read_jsonl
    from spt_bench.runner import run

    class Killed(Exception):
        pass

    def config(name: str) -> RunConfig:
        return config_from_dict(dict(
            method="prefix-tuning", model="tiny-random", max_steps=3, save_every=1,
            train_limit=6, dev_limit=2, eval_limit=3, batch_size=2, max_new_tokens=4,
            bertscore=False, hits_candidates=3, out=str(tmp_path), name=name,
        ))  # fmt: skip

    whole = run(config("whole"), progress=False).run_dir

    def kill_at_2(step: int) -> None:
        if step == 2:
            raise Killed

    with pytest.raises(Killed):
        run(config("killed"), progress=False, on_train_step=kill_at_2)
    resumed = run(config("killed"), resume=True, progress=False).run_dir
    last = "checkpoint/step-000003"
    a = load_file(str(whole / last / "trained.safetensors"))
    b = load_file(str(resumed / last / "trained.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any("prompt_encoder" in k for k in a)  # the MLP is in trained state (resume)

    preds = [r["prediction"] for r in read_jsonl(resumed / "predictions.jsonl")]
    metrics = json.loads((resumed / "metrics.json").read_text())
    assert metrics["method"]["trainable_params"] == sum(t.numel() for t in a.values())
    assert metrics["method"]["peft_type"] == "PREFIX_TUNING"
    again = evaluate_run(resumed, progress=False).run_dir
    assert [r["prediction"] for r in read_jsonl(again / "predictions.jsonl")] == preds

    reply = load_responder(resumed).responder.respond(("i like tea.",), ("hi there",))
    assert isinstance(reply.text, str)
    bare = PeftModel.from_pretrained(tiny_random().model, str(resumed / last / "adapter"))
    assert bare.peft_config["default"].peft_type == "PREFIX_TUNING"
