"""Perplexity / Hits@k log-likelihoods through vLLM's prompt log-probabilities (token-prompt
methods only: no soft prompt, no key/value prefix; LoRA and full-ft through their exported,
merged weights). Each candidate is one request `prompt + candidate` with `prompt_logprobs=0`
and one generated token; requests of an example share their prompt, which vLLM's prefix cache
computes once.

Measured against the hf path by `scripts/bench_vllm_ppl.py` (docs/performance.md, "Perplexity
and Hits@1 on vLLM"): NLL sums agree to 2e-6 relative, but on the CPU it is 9x slower (full-
vocabulary log-softmax at every prompt position, no prefix cache for prompt log-probabilities),
so runs keep the hf path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from spt_bench.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from spt_bench.methods import Method
    from spt_bench.vllm_engine import VllmOptions


def check_token_prompts(method: Method) -> None:
    if method.prefix_length() or method.uses_kv_prefix():
        raise ConfigError(
            f"method {method.name!r} prepends a soft prompt or key/value prefix: its "
            "likelihoods are scored by the hf engine only"
        )


def score_candidates_vllm(
    method: Method,
    prompts: Sequence[list[int]],
    candidates: Sequence[Sequence[list[int]]],
    *,
    run_dir: Path,
    opts: VllmOptions | None = None,
) -> list[list[tuple[float, int]]]:
    """(nll_sum, n_tokens) of every candidate after its example's prompt, like
    `score_candidate_tokens` (same order)."""
    from vllm import SamplingParams

    from spt_bench.vllm_engine import VllmOptions, exported_model, get_engine

    check_token_prompts(method)
    model, fingerprint, _ = exported_model(method, run_dir)
    longest = max(len(p) + len(c) for p, cs in zip(prompts, candidates, strict=True) for c in cs)
    # one engine for every call: the model's positions (up to 2048), unless a row needs more
    limit = getattr(method.backbone.model.config, "max_position_embeddings", None) or 2048
    max_len = max(min(int(limit), 2048), -(-(longest + 1) // 64) * 64)
    engine = get_engine(
        model, fingerprint, method.backbone, opts or VllmOptions(), prompt_embeds=False,
        max_model_len=max_len, seed=0,
    )  # fmt: skip
    requests, spans = [], []
    for p, cs in zip(prompts, candidates, strict=True):
        for c in cs:
            requests.append({"prompt_token_ids": [*p, *c]})
            spans.append((len(p), list(c)))
    params = SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False, temperature=0.0)
    outputs = engine.llm.generate(requests, params, use_tqdm=False)
    flat = []
    for out, (start, cand) in zip(outputs, spans, strict=True):
        lps = out.prompt_logprobs
        nll = -sum(lps[start + j][tok].logprob for j, tok in enumerate(cand))
        flat.append((float(nll), len(cand)))
    result, i = [], 0
    for cs in candidates:
        result.append(flat[i : i + len(cs)])
        i += len(cs)
    return result
