"""Why SPT's retriever sends every input to one prompt: query geometry and untrained selection.

    python scripts/retriever_geometry.py [--data FILE] [--seeds 3]

Prints (docs/results.md, "Why the retriever collapsed"):
- the pairwise cosine between retriever queries of 256 examples (mean input embedding over
  persona + history), after the initial Linear, and for `--retriever-query hidden` (64 examples);
- how an untrained retriever distributes 256 held-out examples over K=4 prompts, with the
  authors' retriever and with `--retriever-center`, for vocabulary and N(0, 1) prompt init.
Examples: the ConvAI2 valid file shuffled with random.Random(0); queries 0-255, centre from 0-1023,
held-out 1024-1279. CPU, a few minutes.
"""

from __future__ import annotations

import argparse
import random

import torch
import torch.nn.functional as F

from spt_bench.data.formatting import collate_train
from spt_bench.data.resolve import load_examples
from spt_bench.methods import get_method, make_options
from spt_bench.models import load_backbone


def pairwise_cosine(x: torch.Tensor) -> tuple[float, float]:
    """(mean, min) cosine over all pairs of distinct rows."""
    x = F.normalize(x.float(), dim=-1)
    c = x @ x.T
    off = c[~torch.eye(c.shape[0], dtype=torch.bool)]
    return float(off.mean()), float(off.min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/convai2/valid_self_original_no_cands.txt")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()

    backbone = load_backbone(args.model, device="cpu")
    examples = load_examples(args.data)
    random.Random(0).shuffle(examples)
    spt = get_method("spt")

    def formatter_for(method):
        return method.build_formatter(max_input_tokens=256)

    def batch_for(method, rows):
        formatter = formatter_for(method)
        return collate_train([formatter.encode_train(e) for e in rows], backbone.pad_token_id)

    def queries(options, rows):
        """A fresh (seed 0) method with `options` and its retriever queries of `rows`."""
        torch.manual_seed(0)
        method = spt(backbone, make_options(spt, options))
        b = batch_for(method, rows)
        with torch.no_grad():
            return method, method.core.query(b.input_ids, b.attention_mask, b.prompt_mask)

    method, q = queries({}, examples[:256])
    with torch.no_grad():
        mean, low = pairwise_cosine(q)
        print(
            f"queries (input embeddings), 256 examples: pairwise cosine mean {mean:.3f} min {low:.3f}"
        )
        share = float(q.mean(0).norm() / q.norm(dim=1).mean())
        print(f"  norm of the mean query / mean query norm: {share:.3f}")
        mean, _ = pairwise_cosine(method.core.retriever.proj(q))
        print(f"  after the initial Linear (seed 0): {mean:.3f}")
        mean, _ = pairwise_cosine(q - q.mean(0))
        print(f"  centred: {mean:.3f}")
        mean, _ = pairwise_cosine(method.core.prompt_pool.keys())
        print(f"prompt keys (vocabulary init), pairwise cosine mean {mean:.3f}")

    _, q = queries({"retriever_query": "hidden"}, examples[:64])
    mean, low = pairwise_cosine(q)
    print(
        f"queries (last hidden state), 64 examples: pairwise cosine mean {mean:.3f} min {low:.3f}"
    )

    train, held = examples[:1024], examples[1024:1280]
    for options in (
        {},
        {"prompt_init": "normal"},
        {"retriever_center": True},
        {"retriever_center": True, "prompt_init": "normal"},
    ):
        counts = []
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            method = spt(backbone, make_options(spt, options))
            method.setup(train, seed=seed, formatter=formatter_for(method))
            b = batch_for(method, held)
            with torch.no_grad():
                s = method.core.scores(b.input_ids, b.attention_mask, b.prompt_mask)
            counts.append(
                "/".join(str(c) for c in torch.bincount(s.argmax(1), minlength=4).tolist())
            )
        label = ", ".join(f"{k}={v}" for k, v in options.items()) or "authors' retriever"
        print(
            f"untrained selection of 256 held-out examples [{label}], seeds 0-{args.seeds - 1}: "
            + "  ".join(counts)
        )


if __name__ == "__main__":
    main()
