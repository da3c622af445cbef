"""Why SPT's retriever sends every input to one prompt: query geometry and untrained selection.

    python scripts/retriever_geometry.py [--data FILE] [--seeds 3] [--skip-ours]

Prints (docs/results.md, "Why the retriever collapsed"):
- the pairwise cosine between retriever queries of 256 examples (mean input embedding over
  persona + history), after the initial Linear, and for `--retriever-query hidden` (64 examples);
- how an untrained retriever distributes 256 held-out examples over K=4 prompts, with the
  authors' retriever and with `--retriever-center`, for vocabulary and N(0, 1) prompt init;
- the same for the query exactly as the authors' code forms it (issue 17, item 5): the mean
  input embedding over the whole sequence, padding included - at training BOS + input +
  response + EOS right-padded to 512 with their pad (= EOS for this tokenizer), at inference
  BOS + input left-padded to the batch's longest - with the share of padding, how the inference
  query follows it, and whether an example's selection changes with its batch-mates.
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
    parser.add_argument(
        "--skip-ours", action="store_true", help="only the authors' query section (item 5)"
    )
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

    if not args.skip_ours:
        ours(args, backbone, examples, spt, formatter_for, batch_for, queries)
    authors_queries(args, backbone, examples, spt)


def ours(args, backbone, examples, spt, formatter_for, batch_for, queries) -> None:
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


# ---------------------------------------------------------------- the authors' query (item 5)

AUTHORS_MAX_LEN = 512  # their training sequences are padded (and cut) to this length


def authors_training_ids(encoded, bos: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [N, 512], padding share [N]): BOS + input + response + EOS, right-padded with `pad`."""
    rows, shares = [], []
    for e in encoded:
        ids = ([bos] + list(e.input_ids))[:AUTHORS_MAX_LEN]
        shares.append(1 - len(ids) / AUTHORS_MAX_LEN)
        rows.append(ids + [pad] * (AUTHORS_MAX_LEN - len(ids)))
    return torch.tensor(rows), torch.tensor(shares)


def authors_inference_ids(encoded, bos: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [B, T], padding share [B]) of one batch: BOS + input, left-padded to the longest."""
    prompts = [[bos] + list(e.input_ids[: e.prompt_len]) for e in encoded]
    width = max(len(p) for p in prompts)
    rows = [[pad] * (width - len(p)) + p for p in prompts]
    return torch.tensor(rows), torch.tensor([1 - len(p) / width for p in prompts])


def mean_embedding(backbone, ids: torch.Tensor) -> torch.Tensor:
    """The authors' query: the mean input embedding over every position, padding included."""
    with torch.no_grad():
        return backbone.embed(ids).float().mean(dim=1)


def inference_queries(backbone, encoded, order, batch_size, bos, pad):
    """(queries [N, d], padding shares [N]) of `encoded` batched as `order` (a permutation) in
    batches of `batch_size`, returned in the original order."""
    n = len(encoded)
    q = torch.zeros(n, backbone.embed(torch.tensor([[bos]])).shape[-1])
    share = torch.zeros(n)
    for i in range(0, n, batch_size):
        idx = order[i : i + batch_size]
        ids, sh = authors_inference_ids([encoded[j] for j in idx], bos, pad)
        q[idx] = mean_embedding(backbone, ids)
        share[idx] = sh
    return q, share


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def counts(selected: torch.Tensor) -> str:
    return "/".join(str(c) for c in torch.bincount(selected, minlength=4).tolist())


def authors_queries(args, backbone, examples, spt) -> None:
    tok = backbone.tokenizer
    # their pad is EOS for this tokenizer (the harness replaced it by a non-EOS pad, so it is
    # taken from EOS here); BOS: the tokenizer's BOS token, which their code prepends
    bos, pad = int(tok.bos_token_id), int(tok.eos_token_id)
    print(f"\nthe authors' query: BOS id {bos}, pad id {pad} (= EOS), mean over all positions")
    method = spt(backbone, make_options(spt, {}))
    # inputs cut to 446 tokens so that BOS + input + response (<= 64 + EOS) fits in 512
    formatter = method.build_formatter(max_input_tokens=446)
    enc = [formatter.encode_train(e) for e in examples[:256]]
    held = [formatter.encode_train(e) for e in examples[1024:1280]]
    pad_emb = backbone.embed(torch.tensor([pad])).float()[0].detach()

    ids, train_share = authors_training_ids(enc, bos, pad)
    kinds = {"training (512, right-padded)": (mean_embedding(backbone, ids), train_share)}
    for bs in (8, 32):
        q, share = inference_queries(backbone, enc, list(range(len(enc))), bs, bos, pad)
        kinds[f"inference (batches of {bs} in file order, left-padded)"] = (q, share)
    for label, (q, share) in kinds.items():
        mean, low = pairwise_cosine(q)
        print(f"{label}, 256 examples: pairwise cosine mean {mean:.3f} min {low:.3f}")
        print(
            f"  padding share of the sequence: mean {float(share.mean()):.3f} "
            f"min {float(share.min()):.3f} max {float(share.max()):.3f}"
        )
        after = []
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            m = spt(backbone, make_options(spt, {}))
            with torch.no_grad():
                after.append(pairwise_cosine(m.core.retriever.proj(q)))
        print(
            "  after the initial Linear, seeds 0-"
            f"{args.seeds - 1}: " + "  ".join(f"mean {a:.3f} min {b:.3f}" for a, b in after)
        )
        cos_pad = F.cosine_similarity(q, pad_emb[None], dim=-1)
        print(
            f"  cosine of the query with the pad embedding vs padding share: Pearson r "
            f"{pearson(cos_pad, share):.3f}"
        )

    # untrained selections of the held-out examples, and their dependence on batch-mates
    ids, held_train_share = authors_training_ids(held, bos, pad)
    q_train = mean_embedding(backbone, ids)
    order = list(range(len(held)))
    shuffled = order[:]
    random.Random(1).shuffle(shuffled)
    q_alone, _ = inference_queries(backbone, held, order, 1, bos, pad)
    for init in ("vocab", "normal"):
        for label, bs in (("training query", None), ("inference query, batch 8", 8),
                          ("inference query, batch 32", 32)):  # fmt: skip
            sel_counts, changed, changed_alone, by_pad = [], [], [], []
            for seed in range(args.seeds):
                torch.manual_seed(seed)
                m = spt(backbone, make_options(spt, {"prompt_init": init}))
                keys = m.core.prompt_pool.keys()

                def select(q, m=m, keys=keys):
                    with torch.no_grad():
                        return m.core.retriever(q, keys).argmax(dim=1)

                if bs is None:
                    sel_counts.append(counts(select(q_train)))
                    continue
                q1, share = inference_queries(backbone, held, order, bs, bos, pad)
                q2, _ = inference_queries(backbone, held, shuffled, bs, bos, pad)
                s1, s2, s0 = select(q1), select(q2), select(q_alone)
                sel_counts.append(counts(s1))
                changed.append(int((s1 != s2).sum()))
                changed_alone.append(int((s1 != s0).sum()))
                low = share <= share.median()
                by_pad.append(f"{counts(s1[low])} | {counts(s1[~low])}")
            print(
                f"untrained selection of 256 held-out examples [authors' {label}, {init} init], "
                f"seeds 0-{args.seeds - 1}: " + "  ".join(sel_counts)
            )
            if bs is not None:
                print(
                    f"  selection changed by other batch-mates (same batch size, reshuffled): "
                    f"{'/'.join(map(str, changed))} of 256; alone (no padding) vs in the batch: "
                    f"{'/'.join(map(str, changed_alone))} of 256"
                )
                print(
                    "  selection by padding share (below/at median | above median): "
                    + "   ".join(by_pad)
                )
    print(f"held-out training sequences: padding share mean {float(held_train_share.mean()):.3f}")


if __name__ == "__main__":
    main()
