"""`spt-bench plan`: the parameter, gradient and AdamW figures are the code's own (checked
against a real allocation on the CPU), FSDP divides only the decoder layers, and bad input is
one line."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_model import tiny_random
from typer.testing import CliRunner

from spt_bench.memory_plan import footprint, plan_rows
from spt_bench.methods import get_method, make_options


def _real_bytes(method_name: str) -> dict[str, int]:
    """Bytes a real tiny-random run holds after one AdamW step: every parameter, the
    gradients, and AdamW's moments."""
    backbone = tiny_random(seed=0)
    cls = get_method(method_name)
    method = cls(backbone, make_options(cls, {}))
    params = [p for p in method.trainable_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    held = {id(p): p for p in backbone.model.parameters()}
    held.update({id(p): p for p in params})
    return {
        "params": sum(p.numel() * p.element_size() for p in held.values()),
        "grads": sum(p.grad.numel() * p.grad.element_size() for p in params),
        "optimizer": sum(
            v.numel() * v.element_size() for s in opt.state.values() for v in s.values()
            if v.dim() > 0
        ),
    }  # fmt: skip


@pytest.mark.parametrize("method", ["full-ft", "lora", "spt"])
def test_plan_figures_equal_a_real_allocation_on_the_cpu(method):
    fp = footprint(method, "tiny-random", dtype="float32")
    (single,) = plan_rows(fp, 1, batch_size=2, seq_len=16, gpu_gb=80)
    real = _real_bytes(method)
    assert (single.params, single.grads, single.optimizer) == (
        real["params"], real["grads"], real["optimizer"]
    )  # fmt: skip


def test_fsdp_plan_divides_the_decoder_layers_only():
    fp = footprint("full-ft", "tiny-random", dtype="float32")
    ddp, fsdp = plan_rows(fp, 2, batch_size=4, seq_len=16, gpu_gb=80)
    assert fsdp.params == fp.layer_params // 2 + fp.other_params
    assert ddp.params == fp.layer_params + fp.other_params
    assert fsdp.optimizer == 2 * fsdp.grads and fsdp.gathered == 2 * fp.max_layer
    assert ddp.activations == fsdp.activations  # data parallel either way: same rows per process


def test_plan_command_prints_a_table_and_json_and_refuses_unknown_models():
    from spt_bench.commands.app import app

    runner = CliRunner()
    md = runner.invoke(app, ["plan", "--method", "lora", "--model", "tiny-random",
                             "--processes", "1,2"])  # fmt: skip
    assert md.exit_code == 0, md.output
    assert [line.split("|")[1].strip() for line in md.output.splitlines()[4:]] == [
        "single", "ddp", "fsdp"
    ]  # fmt: skip
    js = runner.invoke(app, ["plan", "--method", "lora", "--model", "tiny-random",
                             "--format", "json", "--processes", "2"])  # fmt: skip
    assert js.exit_code == 0, js.output
    rows = json.loads(js.output)["rows"]
    assert [r["strategy"] for r in rows] == ["ddp", "fsdp"]
    bad = runner.invoke(app, ["plan", "--model", "no/such-model"])
    assert bad.exit_code == 2 and bad.output.count("\n") == 1
    assert "no config for model 'no/such-model'" in bad.output
