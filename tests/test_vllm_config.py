"""The vllm engine's configuration, without starting vLLM: options pass through to `vllm.LLM`,
the GGUF cache's stale quantization config is dropped, old configs naming `static` read as hf."""

from __future__ import annotations

import json

import pytest
from tiny_model import tiny_random

from spt_bench.config import config_from_dict
from spt_bench.errors import ConfigError
from spt_bench.session import decode_settings
from spt_bench.vllm_engine import VllmOptions, engine_kwargs, source_view


def test_parallel_sizes_and_kv_cache_pass_through_from_the_config_to_vllm() -> None:
    config = config_from_dict({"decode_engine": "vllm", "vllm_kv_cache_gb": 0.5,
                               "vllm_tensor_parallel_size": 2, "vllm_data_parallel_size": 4})  # fmt: skip
    settings = decode_settings(config)
    assert settings.engine == "vllm"
    assert settings.vllm == VllmOptions(kv_cache_gb=0.5, tensor_parallel_size=2,
                                        data_parallel_size=4)  # fmt: skip
    backbone = tiny_random()
    kw = engine_kwargs("/m", backbone, settings.vllm, prompt_embeds=True, max_model_len=512, seed=3)
    assert kw["tensor_parallel_size"] == 2 and kw["data_parallel_size"] == 4
    assert kw["kv_cache_memory_bytes"] == 2**29  # explicit, never a share of the machine's RAM
    assert kw["dtype"] == "float32" and kw["enable_prompt_embeds"] and kw["seed"] == 3
    assert kw["skip_tokenizer_init"] and kw["trust_remote_code"] is False


@pytest.mark.parametrize(
    "bad", [{"vllm_kv_cache_gb": 0}, {"vllm_tensor_parallel_size": 0}, {"decode_engine": "fast"}]
)
def test_bad_vllm_settings_are_one_line_config_errors(bad) -> None:
    with pytest.raises(ConfigError):
        config_from_dict(bad)


def test_a_config_naming_the_retired_static_engine_reads_as_hf() -> None:
    with pytest.warns(UserWarning, match="retired"):
        assert config_from_dict({"decode_engine": "static"}).decode.engine == "hf"


def test_the_gguf_cache_is_seen_through_a_view_without_its_quantization_config(tmp_path) -> None:
    src = tmp_path / "smollm2"
    src.mkdir()
    config = {"model_type": "llama", "quantization_config": {"quant_method": "gguf"}}
    (src / "config.json").write_text(json.dumps(config))
    (src / "model.safetensors").write_bytes(b"weights")
    view = source_view(src, tmp_path / "views")
    assert view != src and json.loads((view / "config.json").read_text()) == {"model_type": "llama"}
    assert (view / "model.safetensors").resolve() == (src / "model.safetensors").resolve()
    assert source_view(src, tmp_path / "views") == view  # made once
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert source_view(clean, tmp_path / "views") == clean  # loadable as is


def test_the_vllm_engine_refuses_a_multi_process_launch(monkeypatch) -> None:
    from spt_bench.vllm_engine import check_single_process

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="vllm_tensor_parallel_size"):
        check_single_process()
