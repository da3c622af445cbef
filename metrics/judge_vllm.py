"""The judge on vLLM (`--judge-engine vllm`): the same prompts and estimator as the hf engine.

One request per prompt, `max_tokens=1`, `allowed_token_ids` = the five score tokens and
`logprobs=5` with the engine's `logprobs_mode="processed_logits"`: the returned values are the
score tokens' logits at the answer position, so softmax over them and sum_s s * p(s) is exactly
the hf engine's G-Eval score (equal to ~1e-5, tested). Prefix caching shares the rubric's and
the chat template's prefix between requests. The engine (and its worker processes, watched by
spt_bench.engine_reaper) lives until `shutdown_judge_engine`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spt_bench.errors import ConfigError

_ENGINE: dict[str, Any] = {}  # {"key": (folder, max_len), "llm": LLM, "reaper": process}
MIN_MODEL_LEN = 2048
KV_CACHE_BYTES = 2**30  # explicit: vLLM's CPU default would reserve most of the RAM


def judge_model_folder(name: str) -> str:
    """What vLLM loads for a judge model name (the SmolLM2 cache through a clean view)."""
    from spt_bench.models import IN_MEMORY_MODELS, SMOLLM2, cache_root, smollm2_model_dir
    from spt_bench.vllm_engine import source_view

    if name in IN_MEMORY_MODELS:
        raise ConfigError(f"judge {name!r} is built in memory: use --judge-engine hf")
    source = smollm2_model_dir() if name == SMOLLM2 else Path(name)
    if not source.is_dir():
        raise ConfigError(f"--judge-engine vllm needs a local model folder, got {name!r}")
    return str(source_view(source, cache_root() / "vllm-views"))


def _engine(folder: str, max_len: int) -> Any:
    from spt_bench.engine_reaper import start_reaper, stop_reaper

    key = (folder, max(MIN_MODEL_LEN, max_len))
    if (
        _ENGINE.get("key") is not None
        and _ENGINE["key"][0] == folder
        and _ENGINE["key"][1] >= max_len
    ):
        return _ENGINE["llm"]
    shutdown_judge_engine()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    from vllm import LLM

    reaper = start_reaper()
    try:
        llm = LLM(model=folder, skip_tokenizer_init=True, dtype="float32", seed=0,
                  max_model_len=key[1], kv_cache_memory_bytes=KV_CACHE_BYTES,
                  enable_prefix_caching=True, logprobs_mode="processed_logits",
                  trust_remote_code=False, enforce_eager=True)  # fmt: skip
    except BaseException:
        stop_reaper(reaper, kill=True)
        raise
    _ENGINE.update(key=key, llm=llm, reaper=reaper)
    return llm


def vllm_expected_scores(
    model: str, prompts: Sequence[list[int]], score_ids: Sequence[int]
) -> list[float]:
    """G-Eval score of each token-id prompt on vLLM (see the module docstring)."""
    from spt_bench.vllm_engine import require_vllm

    require_vllm()
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    llm = _engine(judge_model_folder(model), max(len(p) for p in prompts) + 1)
    params = SamplingParams(max_tokens=1, temperature=0.0, allowed_token_ids=list(score_ids),
                            logprobs=len(score_ids), detokenize=False)  # fmt: skip
    outs = llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params,
                        use_tqdm=False)  # fmt: skip
    scores = []
    for out in outs:
        top = out.outputs[0].logprobs[0]
        logits = [top[i].logprob for i in score_ids]
        m = max(logits)
        weights = [math.exp(v - m) for v in logits]
        scores.append(sum((k + 1) * w for k, w in enumerate(weights)) / sum(weights))
    return scores


def shutdown_judge_engine() -> None:
    """Stop the judge's engine and its worker processes (no-op when none runs)."""
    from spt_bench.engine_reaper import stop_reaper

    llm, reaper = _ENGINE.pop("llm", None), _ENGINE.pop("reaper", None)
    _ENGINE.clear()
    if llm is None:
        return
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    try:
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
    finally:
        stop_reaper(reaper)
    del llm
    import gc

    gc.collect()
