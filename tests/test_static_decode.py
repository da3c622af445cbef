"""The `static` decoding engine gives the `hf` engine's outputs (CPU, fp32, tiny models)."""

from __future__ import annotations

import pytest
import torch
from decode_helpers import FixedPrefix, perturbed_tiny, toy_examples

from spt_bench.data.formatting import PromptFormatter, collate_generate
from spt_bench.decode import DecodeSettings, build_prefixed_inputs, generate_batch
from spt_bench.errors import ConfigError
from spt_bench.static_decode import StaticDecoder, unsupported_reason


@pytest.fixture(scope="module")
def backbone():
    return perturbed_tiny()


def _examples(n: int = 9):
    return toy_examples(n, turn_cycle=5)


_Prefixed = FixedPrefix


def _batch(bb, exs):
    formatter = PromptFormatter(bb.tokenizer)
    return collate_generate([formatter.prompt_ids(ex) for ex in exs], bb.pad_token_id, exs)


def test_static_prefill_logits_equal_transformers_forward(backbone) -> None:
    method = _Prefixed(backbone)
    embeds, mask, _ = build_prefixed_inputs(method, _batch(backbone, _examples()))
    with torch.inference_mode():
        hidden, _ = backbone.forward_base(embeds, mask)
        want = backbone.lm_head(hidden[:, -1])
        got, _, _ = StaticDecoder(backbone).prefill(embeds, mask, 4)
    assert (mask == 0).any()  # the batch really is left-padded
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("with_prefix", [False, True])
def test_static_engine_greedy_tokens_equal_hf_engine(backbone, with_prefix) -> None:
    from spt_bench.methods import get_method

    method = _Prefixed(backbone) if with_prefix else get_method("full-ft")(backbone)
    batch = _batch(backbone, _examples())
    with torch.inference_mode():
        hf = generate_batch(method, batch, DecodeSettings(max_new_tokens=12))
        st = generate_batch(method, batch, DecodeSettings(max_new_tokens=12, engine="static"))
    assert st == hf
    assert len({tuple(t) for t in hf[0]}) > 1  # rows differ, so the check has teeth


def test_static_engine_stops_rows_like_hf_and_compacts(backbone, monkeypatch) -> None:
    """Stopping per row, with rows finishing at different steps, so the eager engine compacts
    its buffers to the live rows mid-batch - and still matches."""
    from spt_bench.static_decode import DecodeSteps

    compacted: list[int] = []
    select_rows = DecodeSteps.select_rows

    def spy(self, rows):
        compacted.append(len(rows))
        return select_rows(self, rows)

    monkeypatch.setattr(DecodeSteps, "select_rows", spy)
    bb = backbone
    method = _Prefixed(bb)
    head = bb.model.get_output_embeddings()
    saved = head.weight.detach().clone()
    try:
        with torch.no_grad():  # make newline tokens likelier: rows stop at steps 2..16
            head.weight[bb.newline_token_mask()] *= 1.2
        batch = _batch(bb, _examples(12))
        with torch.inference_mode():
            hf = generate_batch(method, batch, DecodeSettings(max_new_tokens=16))
            st = generate_batch(method, batch, DecodeSettings(max_new_tokens=16, engine="static"))
    finally:
        with torch.no_grad():
            head.weight.copy_(saved)
    assert st == hf
    assert hf[1].count("newline") >= 8 and len({len(t) for t in hf[0]}) >= 5
    assert compacted and compacted[0] <= 6  # compacted once half of the 12 rows were done


def test_static_engine_sampling_equals_hf_engine_for_the_same_seed(backbone) -> None:
    method = _Prefixed(backbone)
    batch = _batch(backbone, _examples())
    s = dict(mode="sample", max_new_tokens=10, temperature=1.0, top_p=0.9)
    with torch.inference_mode():
        hf = generate_batch(method, batch, DecodeSettings(**s), torch.Generator().manual_seed(3))
        st = generate_batch(
            method, batch, DecodeSettings(**s, engine="static"), torch.Generator().manual_seed(3)
        )
    assert st == hf


def test_static_engine_rejects_an_unsupported_architecture(backbone) -> None:
    saved = backbone.model.config.model_type
    try:
        backbone.model.config.model_type = "gpt2"
        reason = unsupported_reason(backbone)
        assert reason is not None and "--decode-engine hf" in reason
        with pytest.raises(ConfigError, match="static decoding engine"):
            StaticDecoder(backbone)
    finally:
        backbone.model.config.model_type = saved


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"use_sliding_window": True}, "sliding-window"),
        (
            {"rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}},
            "dynamic RoPE",
        ),
    ],
)
def test_static_engine_names_the_feature_it_does_not_implement(backbone, change, says) -> None:
    config = backbone.model.config
    saved = {k: getattr(config, k, None) for k in change}
    try:
        for k, v in change.items():
            setattr(config, k, v)
        assert says in (unsupported_reason(backbone) or "")
    finally:
        for k, v in saved.items():
            setattr(config, k, v)
    assert unsupported_reason(backbone) is None


def test_unknown_decode_engine_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="decode.engine must be one of"):
        DecodeSettings(engine="turbo")


def test_static_engine_runs_lora_adapters_like_the_hf_engine() -> None:
    """peft injects LoRA layers into the projections the static engine calls, so a trained
    adapter changes its outputs exactly as it changes the hf engine's."""
    from spt_bench.methods import get_method

    bb = perturbed_tiny()
    batch = _batch(bb, _examples())
    with torch.inference_mode():
        base = generate_batch(
            get_method("full-ft")(bb), batch, DecodeSettings(max_new_tokens=8, engine="static")
        )
    method = get_method("lora")(bb)
    method.set_train_mode(False)  # as decode() does: no LoRA dropout
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in bb.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    with torch.inference_mode():
        hf = generate_batch(method, batch, DecodeSettings(max_new_tokens=8))
        st = generate_batch(method, batch, DecodeSettings(max_new_tokens=8, engine="static"))
    assert st == hf
    assert st[0] != base[0]  # the adapter matters, so the equality has teeth


def test_static_decoding_step_traces_as_one_graph_without_host_syncs(backbone) -> None:
    """What CUDA-graph capture needs, checked on CPU: torch.compile(fullgraph=True) refuses a
    step with a graph break (`.item()`, `.tolist()`, data-dependent Python). The traced step
    advances the state exactly like the eager one."""
    from spt_bench.static_decode import DecodeSteps

    embeds, mask, _ = build_prefixed_inputs(_Prefixed(backbone), _batch(backbone, _examples()))
    decoder = StaticDecoder(backbone)
    results = []
    with torch.inference_mode():
        for traced in (False, True):
            logits, kv, positions = decoder.prefill(embeds, mask, 4)
            steps = DecodeSteps(
                decoder, kv, logits.argmax(-1), positions, mask.shape[1], cuda_graph=False
            )
            step = lambda s=steps: s._step(full_width=True)  # noqa: E731
            if traced:
                torch._dynamo.reset()
                step = torch.compile(step, fullgraph=True, backend="eager")
            tokens = []
            for _ in range(3):
                step()
                tokens.append(steps.token.tolist())
            results.append((tokens, steps.write.tolist(), steps.position.tolist()))
    assert results[0] == results[1]
