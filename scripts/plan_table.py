"""The memory-plan table of docs/performance.md: the paper's backbones and methods, 1 GPU and
8 GPUs of 80 GiB, batch 2 per GPU, 512 tokens, bf16 (the authors' settings; L = 8 virtual
tokens on OPT, 1 on Llama-2-7B, K = 4 for SPT).

    .venv/bin/python scripts/plan_table.py > /tmp/plan.md
"""

from __future__ import annotations

from spt_bench.memory_plan import GIB, footprint, plan_rows

MODELS = ["facebook/opt-125m", "facebook/opt-1.3b", "facebook/opt-2.7b", "meta-llama/Llama-2-7b-hf"]
METHODS = ["prompt-tuning", "spt", "lora", "full-ft"]


def main() -> None:
    print("| backbone | method | trainable | 1 GPU | 8 GPUs DDP | 8 GPUs FSDP |")
    print("|---|---|---:|---:|---:|---:|")
    for model in MODELS:
        plen = 1 if "llama" in model.lower() else 8
        for method in METHODS:
            options = {"prompt_len": plen} if method in ("prompt-tuning", "spt") else {}
            if method == "spt":
                options["k"] = 4
            fp = footprint(method, model, options, dtype="bfloat16")
            (one,) = plan_rows(fp, 1, batch_size=2, seq_len=512, gpu_gb=80)
            ddp, fsdp = plan_rows(fp, 8, batch_size=16, seq_len=512, gpu_gb=80)

            def cell(r) -> str:
                return f"{r.total / GIB:.1f}" + ("" if r.fits else " (no)")

            print(f"| {model} | {method} | {fp.n_trainable:,} | {cell(one)} | {cell(ddp)} | "
                  f"{cell(fsdp)} |")  # fmt: skip


if __name__ == "__main__":
    main()
