"""Perplexity and Hits@1 log-likelihoods: the hf path (spt_bench.candidate_scoring, prefix
sharing) against vLLM's prompt log-probabilities (spt_bench.vllm_scoring) on the same token
sequences, SmolLM2-135M, text-prompt (a token-prompt method), ConvAI2 valid.

    .venv/bin/python scripts/bench_vllm_ppl.py --examples 64 --reps 3   # quiet machine only

Prints the load, each path's median seconds over --reps (vLLM's engine start separately), the
largest relative difference of a candidate's NLL sum, and whether the Hits@1 ranks agree.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--data", default=os.environ.get("SPT_BENCH_CONVAI2_DIR", "../shared/data/convai2")
    )
    args = ap.parse_args()

    import torch

    from spt_bench.candidate_scoring import score_candidate_tokens
    from spt_bench.data import load_examples
    from spt_bench.methods import get_method
    from spt_bench.model_metrics import prepare_candidates
    from spt_bench.models import load_backbone
    from spt_bench.vllm_engine import shutdown_engine
    from spt_bench.vllm_scoring import score_candidates_vllm

    torch.set_num_threads(os.cpu_count() or 1)
    pool = load_examples(Path(args.data) / "valid_self_original_no_cands.txt")
    step = max(1, len(pool) // args.examples)
    examples = pool[::step][: args.examples]
    method = get_method("text-prompt")(load_backbone("smollm2-135m", device="cpu"))
    formatter = method.build_formatter()
    _, prompts, cands, gold = prepare_candidates(
        examples, formatter, hits_k=(1,), n_candidates=args.candidates, distractor_pool=pool
    )
    n_seq = sum(len(c) for c in cands)
    hf_times, vllm_times = [], []
    hf = vl = None
    with tempfile.TemporaryDirectory() as run_dir:
        t0 = time.perf_counter()
        score_candidates_vllm(method, prompts[:1], cands[:1], run_dir=Path(run_dir))
        start_s = time.perf_counter() - t0
        for _ in range(args.reps):
            t0 = time.perf_counter()
            hf, _ = score_candidate_tokens(
                method, examples, prompts, cands, batch_size=args.batch_size
            )
            hf_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            vl = score_candidates_vllm(method, prompts, cands, run_dir=Path(run_dir))
            vllm_times.append(time.perf_counter() - t0)
            print(f"rep: hf {hf_times[-1]:.2f} s, vllm {vllm_times[-1]:.2f} s", flush=True)
        shutdown_engine()
    rel = max(
        abs(a[0] - b[0]) / max(abs(a[0]), 1e-9)
        for ra, rb in zip(hf, vl, strict=True)
        for a, b in zip(ra, rb, strict=True)
    )

    def top(rows: list) -> list[int]:
        return [max(range(len(r)), key=lambda j: -r[j][0] / r[j][1]) for r in rows]

    out = {
        "load_1min": os.getloadavg()[0],
        "examples": len(examples),
        "sequences": n_seq,
        "hf_s_median": round(statistics.median(hf_times), 2),
        "vllm_s_median": round(statistics.median(vllm_times), 2),
        "vllm_engine_start_s": round(start_s, 2),
        "speedup": round(statistics.median(hf_times) / statistics.median(vllm_times), 2),
        "max_rel_nll_diff": rel,
        "top1_agree": sum(a == b for a, b in zip(top(hf), top(vl), strict=True)),
        "gold": len(gold),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
