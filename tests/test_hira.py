"""`hira` (HiRA through PEFT's HiraConfig): LoRA's parameter budget by PEFT's own count, and a
trained adapter saved in PEFT's format that bare PEFT decodes exactly as the harness does."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from spt_bench.data.formatting import collate_generate, collate_train
from spt_bench.decode import DecodeSettings, generate_batch
from spt_bench.methods import get_method, make_options
from tests.decode_helpers import perturbed_tiny, toy_examples


def _method(name: str, backbone, **options):
    cls = get_method(name)
    torch.manual_seed(0)
    return cls(backbone, make_options(cls, options))


def test_hira_trains_what_peft_counts_and_as_many_parameters_as_lora_at_the_same_rank() -> None:
    hira = _method("hira", perturbed_tiny(), hira_r=4)
    ours = sum(p.numel() for p in hira.trainable_parameters())
    trainable, _total = hira.peft_model.get_nb_trainable_parameters()
    assert ours == trainable > 0
    lora = _method("lora", perturbed_tiny(), lora_r=4)
    assert ours == sum(p.numel() for p in lora.trainable_parameters())
    assert hira.summary()["adapter_params"] == ours


def test_trained_hira_adapter_in_peft_format_decodes_like_peft_generate(tmp_path: Path) -> None:
    from peft import PeftModel

    backbone = perturbed_tiny()
    method = _method("hira", backbone)
    f = method.build_formatter(max_input_tokens=64, max_response_tokens=16)
    batch = collate_train([f.encode_train(ex) for ex in toy_examples(6)], backbone.pad_token_id)
    opt = torch.optim.AdamW(method.trainable_parameters(), lr=5e-2)
    method.set_train_mode(True)
    losses = []
    for _ in range(8):
        loss, _ = method.training_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 0.05, losses
    method.save_adapter(tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["peft_type"] == "HIRA" and saved["r"] == 8
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()

    method.set_train_mode(False)
    examples = toy_examples(4)
    gen = collate_generate([f.prompt_ids(e) for e in examples], backbone.pad_token_id, examples)
    bare = PeftModel.from_pretrained(perturbed_tiny().model, str(tmp_path / "adapter")).eval()
    with torch.inference_mode():
        ours, _, _ = generate_batch(method, gen, DecodeSettings(max_new_tokens=8))
        out = bare.generate(
            input_ids=gen.input_ids,
            attention_mask=gen.attention_mask,
            max_new_tokens=8,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=backbone.pad_token_id,
        )
    ref = out[:, -8:].tolist()
    assert sum(len(t) for t in ours) >= 12
    for mine, theirs in zip(ours, ref, strict=True):
        assert mine == theirs[: len(mine)]
