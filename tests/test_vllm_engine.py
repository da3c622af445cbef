"""The `vllm` decoding engine gives the `hf` engine's rows (CPU, fp32, a tiny Llama).

One vLLM engine serves the frozen-backbone methods (token prompts and prompt embeddings);
full-ft and LoRA each start one on the weights they export. Skipped where vLLM is not
installed, unless SPT_BENCH_REQUIRE_VLLM=1 (CI: `make test` sets it, so these cannot rot).
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from decode_helpers import FixedPrefix, toy_examples
from vllm_helpers import tiny_backbone, tiny_llama_folder

from spt_bench.data.formatting import PromptFormatter
from spt_bench.decode import DecodeSettings
from spt_bench.engines import decode
from spt_bench.methods import get_method, make_options
from spt_bench.vllm_engine import MODEL_SUBDIR, shutdown_engine, vllm_available

if not vllm_available():
    if os.environ.get("SPT_BENCH_REQUIRE_VLLM") == "1":
        raise RuntimeError("SPT_BENCH_REQUIRE_VLLM=1 but vLLM is not installed (make setup)")
    pytest.skip("vLLM is not installed", allow_module_level=True)

# slow: each test starts a vLLM engine (CPU build, 20-30 s); the fast suite keeps the engine's
# configuration (test_vllm_config: sizes, refusals, the GGUF view, multi-process refusal) and
# the hf engine's decoding, which these tests compare vLLM's rows against
pytestmark = pytest.mark.slow

MAX_NEW = 12


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny") / "model"


@pytest.fixture(scope="module", autouse=True)
def _engine_down():
    yield
    shutdown_engine()


def _both(method, tmp_path, n: int = 9, formatter=None, **kw):
    formatter = formatter or method.build_formatter()
    exs = toy_examples(n, turn_cycle=5)
    hf, _ = decode(method, formatter, exs, DecodeSettings(max_new_tokens=MAX_NEW, **kw),
                   tmp_path / "hf" / "predictions.jsonl")  # fmt: skip
    vl, stats = decode(method, formatter, exs,
                       DecodeSettings(max_new_tokens=MAX_NEW, engine="vllm", **kw),
                       tmp_path / "vllm" / "predictions.jsonl")  # fmt: skip
    return hf, vl, stats


def _same(hf, vl) -> float:
    keys = ("id", "raw_prediction", "prediction", "stop", "n_new_tokens", "selected_prompt")
    same = [all(a.get(k) == b.get(k) for k in keys) for a, b in zip(hf, vl, strict=True)]
    return sum(same) / len(same)


def test_spt_rows_equal_hf_with_per_example_prompts(folder, tmp_path) -> None:
    cls = get_method("spt")
    method = cls(tiny_backbone(folder), make_options(cls, {"k": 4, "prompt_len": 3,
                                                          "retriever_center": True}))  # fmt: skip
    method.setup(toy_examples(16, turn_cycle=5), seed=0)
    hf, vl, stats = _both(method, tmp_path)
    assert _same(hf, vl) == 1.0  # 9/9 rows token-identical, selected prompts included
    assert len({r["selected_prompt"] for r in hf}) > 1  # the retriever really routes
    assert stats.engine == "vllm" and stats.engine_start_s > 0 and stats.n_decoded == 9
    assert len({r["raw_prediction"] for r in vl}) > 1


def test_each_request_carries_its_own_soft_prompt(folder, tmp_path) -> None:
    """Odd and even rows get different prompts in one vLLM call; swapping them changes rows."""
    backbone = tiny_backbone(folder)
    method = FixedPrefix(backbone, length=3)
    formatter = PromptFormatter(backbone.tokenizer)
    hf, vl, _ = _both(method, tmp_path, formatter=formatter)
    assert _same(hf, vl) == 1.0
    method.table = method.table.flip(0)
    _, swapped, _ = _both(method, tmp_path / "swapped", formatter=formatter)
    assert [r["raw_prediction"] for r in swapped] != [r["raw_prediction"] for r in vl]


@pytest.mark.parametrize("name", ["prompt-tuning", "text-prompt"])
def test_frozen_backbone_methods_equal_hf(folder, tmp_path, name) -> None:
    cls = get_method(name)
    opts = {"prompt_len": 3} if name == "prompt-tuning" else {}
    method = cls(tiny_backbone(folder), make_options(cls, opts))
    hf, vl, _ = _both(method, tmp_path)
    assert _same(hf, vl) == 1.0
    assert not (tmp_path / "vllm" / MODEL_SUBDIR).exists()  # loaded from its own folder


def test_resume_decodes_only_missing_rows(folder, tmp_path) -> None:
    method = get_method("text-prompt")(tiny_backbone(folder))
    formatter = method.build_formatter()
    exs = toy_examples(9, turn_cycle=5)
    settings = DecodeSettings(max_new_tokens=MAX_NEW, engine="vllm")
    full, _ = decode(method, formatter, exs, settings, tmp_path / "full" / "predictions.jsonl")
    out = tmp_path / "resumed" / "predictions.jsonl"
    decode(method, formatter, exs[:4], settings, out)
    with out.open("a") as f:  # a kill mid-write leaves a truncated last line
        f.write('{"id": "d7", "predic')
    rows, stats = decode(method, formatter, exs, settings, out)
    assert stats.n_skipped == 4 and stats.n_decoded == 5
    assert rows == full
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == [e.id for e in exs]


def _train_like(method, seed: int) -> None:
    """Move the trainable weights as training would (so exported weights must be the new ones)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in method.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def test_full_ft_decodes_its_trained_weights_from_the_run_folder(folder, tmp_path) -> None:
    method = get_method("full-ft")(tiny_backbone(folder))
    _train_like(method, 1)
    hf, vl, _ = _both(method, tmp_path)
    assert _same(hf, vl) == 1.0
    exported = tmp_path / "vllm" / MODEL_SUBDIR
    assert (exported / "config.json").is_file() and (exported / "model.safetensors").is_file()
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_lora_decodes_its_merged_adapters(folder, tmp_path) -> None:
    cls = get_method("lora")
    method = cls(tiny_backbone(folder), make_options(cls, {}))
    _train_like(method, 2)  # LoRA's B starts at zero: without this the adapter changes nothing
    hf, vl, _ = _both(method, tmp_path)
    assert _same(hf, vl) == 1.0
    names = [n for n, _ in method.backbone.model.named_parameters()]
    assert any("lora_" in n for n in names)  # the live model keeps its adapters after export


def test_vllm_prompt_logprobs_give_the_hf_paths_likelihoods(folder, tmp_path) -> None:
    """Perplexity/Hits@1 through vLLM's prompt log-probabilities (token-prompt methods) equal
    the hf path's NLL sums (fp32: within float summation order)."""
    from spt_bench.model_metrics import prepare_candidates, score_candidate_tokens
    from spt_bench.vllm_scoring import score_candidates_vllm

    method = get_method("text-prompt")(tiny_backbone(folder))
    formatter = method.build_formatter()
    exs = toy_examples(6, turn_cycle=3)
    _, prompts, cands, _ = prepare_candidates(
        exs, formatter, hits_k=(1,), n_candidates=4, distractor_pool=toy_examples(12)
    )
    hf, _ = score_candidate_tokens(method, exs, prompts, cands, batch_size=3)
    vl = score_candidates_vllm(method, prompts, cands, run_dir=tmp_path)
    for row_hf, row_vl in zip(hf, vl, strict=True):
        for (a, n), (b, m) in zip(row_hf, row_vl, strict=True):
            assert n == m
            assert b == pytest.approx(a, rel=1e-4)


def test_raw_vllm_on_prompt_embeddings_generates_what_it_does_on_token_ids(folder, tmp_path):
    """bench's raw vLLM reference: the same prompts as ids and as embeddings (a method without
    prefix) give the same greedy tokens, on the engine our decoder uses."""
    from spt_bench.bench.raw_vllm import RawVllm

    method = get_method("text-prompt")(tiny_backbone(folder))
    formatter = method.build_formatter()
    exs = toy_examples(5, turn_cycle=3)
    ids = RawVllm(method, formatter, exs, 2, MAX_NEW, tmp_path, "prompt ids")
    embeds = RawVllm(method, formatter, exs, 2, MAX_NEW, tmp_path, "prompt embeds")
    (_, n_ids), (_, n_embeds) = ids.run(), embeds.run()
    assert n_ids == n_embeds > 0
    assert all("prompt_embeds" in r for r in embeds.requests())
    assert ids.prompt_tokens() == sum(len(formatter.prompt_ids(ex)) for ex in exs)


def test_bench_times_raw_vllm_on_the_same_prompts_and_the_compute_bound(folder, tmp_path):
    """`bench --decode-engine hf,vllm`: raw vLLM rows on the timed prompts (not the warm-up's),
    our engine's ratio to them, and the FLOPs against the measured GEMM rate."""
    from spt_bench.bench import BenchSettings, run_bench
    from spt_bench.data import write_examples_jsonl

    data = tmp_path / "short.jsonl"
    write_examples_jsonl(toy_examples(6, turn_cycle=3), data)
    settings = BenchSettings(
        model=str(tiny_llama_folder(folder)), data=str(data), train=False, n_decode=6,
        decode_batch_sizes="2", decode_engines="hf,vllm", plain_generate=False,
        max_new_tokens=MAX_NEW, decode_method="text-prompt", dtype="float32",
    )  # fmt: skip
    dec = run_bench(settings)["decode"]
    raw = dec["raw_vllm"]
    assert [j["path"] for j in raw["jobs"]] == ["raw vllm (prompt ids)", "raw vllm (prompt embeds)"]
    for job in raw["jobs"]:
        assert len(job["seconds_all"]) == 1 and job["new_tokens"] > 0
    # the timed subset is all 6 prompts (the warm-up's longest batch has 2)
    assert raw["jobs"][0]["prompt_tokens"] == raw["prompt_tokens"]
    assert raw["ours_over_raw_vllm_(prompt_ids)"] > 0 and raw["forward_gflop"] > 0
    assert raw["achieved_gflops_hf_engine"] > 0
