"""The plain PyTorch / transformers references our figures are measured against: a training
step with the soft prompts prepended through `inputs_embeds` and `model(...).loss`, and
`model.generate` over the same prompts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spt_bench.batches import longest_first
from spt_bench.bench.profiling import PeakMemory, time_steps
from spt_bench.bench.steps import TrainFigures, train_figures

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from spt_bench.bench.settings import BenchSettings
    from spt_bench.data.example import Example
    from spt_bench.models import Backbone


def bench_plain_step(
    backbone: Backbone,
    prompts: torch.Tensor,
    batch: Any,
    settings: BenchSettings,
    device: torch.device,
) -> TrainFigures:
    """Plain transformers reference: K prompts prepended via inputs_embeds, one batch of K x B
    sequences, `model(...).loss` over full-vocabulary logits, backward, AdamW on the prompts."""
    import torch

    from spt_bench.models import autocast

    model = backbone.model
    k, plen, d = prompts.shape
    param = torch.nn.Parameter(prompts.clone().to(device))
    opt = torch.optim.AdamW([param], lr=1e-4)
    b, t = batch.input_ids.shape
    mask = torch.cat([batch.attention_mask.new_ones(b, plen), batch.attention_mask], 1).repeat(k, 1)
    labels = torch.cat([batch.labels.new_full((b, plen), -100), batch.labels], 1).repeat(k, 1)
    model.eval()

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with autocast(device):
            tok = model.get_input_embeddings()(batch.input_ids)
            prefix = param.to(tok.dtype)[:, None].expand(k, b, plen, d)
            embeds = torch.cat([prefix, tok[None].expand(k, b, t, d)], dim=2)
            out = model(
                inputs_embeds=embeds.reshape(k * b, plen + t, d),
                attention_mask=mask,
                labels=labels,
            )
        out.loss.backward()
        opt.step()
        return float(out.loss.detach())

    with PeakMemory(device) as mem:
        times, losses = time_steps(step, settings.reps, settings.warmup, device)
    name = f"plain transformers (K={k})"
    return train_figures(name, "plain", k, times, batch, mem, losses[0], "full vocabulary")


def stop_and_newline_ids(backbone: Backbone) -> tuple[list[int], list[int]]:
    """(EOS ids, ids of every token containing a newline): the plain path's eos_token_id list
    stops exactly where our decoder does."""
    from spt_bench.models import stop_tokens

    stops = stop_tokens(backbone)
    return sorted(stops.eos), sorted(stops.newline)


def _cut_at_stop(toks: list[int], stop: set[int], newline: set[int]) -> list[int]:
    """A generated row up to its first EOS (dropped) or newline token (kept)."""
    kept: list[int] = []
    for t in toks:
        if t in stop:
            break
        kept.append(t)
        if t in newline:
            break
    return kept


def plain_generate(
    method: Any,
    formatter: Any,
    examples: list[Example],
    batch_size: int,
    max_new_tokens: int,
) -> tuple[dict[str, str], int]:
    """Plain `model.generate` over `examples`: length-sorted, left-padded batches, the method's
    soft-prompt prefix through inputs_embeds, greedy, stopping at EOS or a newline token.
    Returns ({example id: cleaned response}, generated tokens)."""
    import torch

    from spt_bench.data.formatting import collate_generate
    from spt_bench.decode import build_prefixed_inputs, clean_response
    from spt_bench.models import autocast

    backbone = method.backbone
    stop, newline = stop_and_newline_ids(backbone)
    stop_set, newline_set = set(stop), set(newline)
    prompts = [formatter.prompt_ids(ex) for ex in examples]
    order = longest_first([len(p) for p in prompts])
    out: dict[str, str] = {}
    n_tokens = 0
    method.set_train_mode(False)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = collate_generate(
            [prompts[i] for i in idx], backbone.pad_token_id, [examples[i] for i in idx]
        ).to(backbone.device)
        with torch.inference_mode(), autocast(backbone.device):
            embeds, mask, _ = build_prefixed_inputs(method, batch)
            generated = backbone.model.generate(
                inputs_embeds=embeds,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                eos_token_id=stop + newline,
                pad_token_id=backbone.pad_token_id,
            )
        rows = [_cut_at_stop(toks, stop_set, newline_set) for toks in generated.tolist()]
        n_tokens += sum(len(r) for r in rows)
        texts = backbone.tokenizer.batch_decode(rows, skip_special_tokens=True)
        for j, i in enumerate(idx):
            out[examples[i].id] = clean_response(texts[j])
    return out, n_tokens
