"""SPT's core: the K-batched forward, the four losses and their switches, selection, state."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest
import torch
import torch.nn.functional as F
from synthetic_helpers import (
    PAD,
    collate,
    make_example,
    tiny_backbone,
)
from tiny_model import tiny_random

from spt_bench.errors import ConfigError
from spt_bench.spt import SelectivePromptTuning, SptOptions
from spt_bench.spt.analysis import prompt_usage
from spt_bench.spt.core import PromptRetriever, SelectivePrompting, fusion_cross_entropy
from spt_bench.spt.soft_prompt import PromptPool, prompted_response_nll

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def backbone():
    # A larger init than the default so logits (and per-prompt losses) differ noticeably.
    return tiny_backbone(layers=2, init_range=0.3, seed=1)


def mixed_batch(n: int = 5, seed: int = 0):
    """Examples of both families with different prompt lengths (so rows are padded)."""
    rng = random.Random(seed)
    return collate([make_example(i % 2, rng, i) for i in range(n)])


def new_core(backbone, seed: int = 0, **options) -> SelectivePrompting:
    torch.manual_seed(seed)
    return SelectivePrompting(backbone, SptOptions(**options))


def reference_logits(
    backbone, prompt: torch.Tensor, batch, b: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [R, V], targets [R]) of example b alone, no padding, plain HF forward, full vocab."""
    n = int(batch.attention_mask[b].sum())
    ids = batch.input_ids[b, :n]
    labels = batch.labels[b, :n]
    embeds = torch.cat([prompt, backbone.embed(ids)], dim=0)[None]
    logits = backbone.model(inputs_embeds=embeds).logits[0, prompt.shape[0] - 1 : -1]
    scored = labels != -100
    return logits[scored].float(), labels[scored]


def test_batched_k_prompt_forward_matches_k_separate_forwards(backbone) -> None:
    core = new_core(backbone, k=3, prompt_len=4)
    batch = mixed_batch()
    prompts = core.prompt_pool.prompts.detach()
    out = prompted_response_nll(
        backbone, prompts, batch.input_ids, batch.attention_mask, batch.labels, return_logits=True
    )
    for k in range(3):
        for b in range(len(batch)):
            logits, targets = reference_logits(backbone, prompts[k], batch, b)
            ref = F.cross_entropy(logits, targets)
            # Tolerance: 1e-5 absolute on a per-example mean NLL (fp32; batching and padding
            # change only the summation order). Measured: <= 9.6e-7; the logits are identical.
            assert abs(float(out.example_nll[k, b]) - float(ref)) < 1e-5
            rows = out.example_index == b
            assert torch.allclose(out.logits[k][rows], logits, atol=1e-4)
    # Logits exist only at response positions (response tokens + EOS), not for persona/history.
    assert out.logits.shape[1] == batch.n_response_tokens


def test_losses_match_a_hand_computation_from_separate_forwards(backbone) -> None:
    core = new_core(backbone, k=3, prompt_len=4)
    batch = mixed_batch()
    personas = [e.persona for e in batch.examples]
    total, logs = core.losses(
        batch.input_ids, batch.attention_mask, batch.labels, batch.prompt_mask, personas
    )
    with torch.no_grad():
        s = core.scores(batch.input_ids, batch.attention_mask, batch.prompt_mask)  # [B, K]
        prompts = core.prompt_pool.prompts
        per_example = [
            [reference_logits(backbone, prompts[k], batch, b) for b in range(len(batch))]
            for k in range(3)
        ]
        token_ce = torch.cat(
            [F.cross_entropy(lg, t, reduction="none") for row in per_example for lg, t in row]
        )
        nll = token_ce.mean()
        lm_nll = torch.tensor(
            [[float(F.cross_entropy(lg, t)) for lg, t in row] for row in per_example]
        )  # [K, B]
        p_gold = torch.softmax(-lm_nll.T, dim=-1)
        p_ret = torch.softmax(s, dim=-1)
        sel = (p_gold * (p_gold.log() - p_ret.log())).sum(-1).mean()
        fused_ce = []
        for b in range(len(batch)):
            fused = sum(s[b, k] * per_example[k][b][0] for k in range(3))
            fused_ce.append(F.cross_entropy(fused, per_example[0][b][1], reduction="none"))
        # the authors' reduction (default): mean per example, then over the batch
        fusion = torch.stack([ce.mean() for ce in fused_ce]).mean()
        import sacrebleu

        pair_losses = []
        for i in range(len(batch)):
            for j in range(i + 1, len(batch)):
                a, c = " ".join(personas[i]), " ".join(personas[j])
                bleu = (
                    sacrebleu.sentence_bleu(a, [c]).score + sacrebleu.sentence_bleu(c, [a]).score
                ) / 2
                cos = F.cosine_similarity(s[i], s[j], dim=0)
                pair_losses.append(1 - cos if bleu > 20 else cos.clamp_min(0))
        ctr = torch.stack(pair_losses).mean()
    assert logs["nll"] == pytest.approx(float(nll), abs=1e-5)
    assert logs["sel"] == pytest.approx(float(sel), abs=1e-5)
    assert logs["fusion"] == pytest.approx(float(fusion), abs=1e-4)
    assert logs["ctr"] == pytest.approx(float(ctr), abs=1e-6)
    expected = nll + 0.4 * sel + 1.0 * fusion + 0.4 * ctr
    assert float(total.detach()) == pytest.approx(float(expected), abs=1e-4)
    assert 0 <= logs["retriever_entropy"] <= math.log(3) + 1e-6
    assert 0 <= logs["selection_agreement"] <= 1


def test_fusion_reduction_example_vs_token_on_unequal_response_lengths(backbone) -> None:
    batch = mixed_batch()
    labels = batch.labels.clone()
    first = int((labels[0] != -100).nonzero()[0])
    labels[0, first] = -100  # example 0 now has one response token fewer than the others
    batch = dataclasses.replace(batch, labels=labels)
    personas = [e.persona for e in batch.examples]
    args = (batch.input_ids, batch.attention_mask, batch.labels, batch.prompt_mask, personas)
    logs = {r: new_core(backbone, k=3, prompt_len=4, fusion_reduction=r).losses(*args)[1]
            for r in ("example", "token")}  # fmt: skip
    core = new_core(backbone, k=3, prompt_len=4)
    with torch.no_grad():
        s = core.scores(batch.input_ids, batch.attention_mask, batch.prompt_mask)
        ce = []
        for b in range(len(batch)):
            parts = [
                reference_logits(backbone, core.prompt_pool.prompts[k], batch, b) for k in range(3)
            ]
            fused = sum(s[b, k] * parts[k][0] for k in range(3))
            ce.append(F.cross_entropy(fused, parts[0][1], reduction="none"))
    assert len(ce[0]) < len(ce[1])
    assert logs["example"]["fusion"] == pytest.approx(
        float(torch.stack([c.mean() for c in ce]).mean()), abs=1e-4
    )
    assert logs["token"]["fusion"] == pytest.approx(float(torch.cat(ce).mean()), abs=1e-4)
    assert logs["token"]["fusion"] != pytest.approx(logs["example"]["fusion"], abs=1e-4)
    assert logs["token"]["nll"] == logs["example"]["nll"]


def test_fusion_reductions_weigh_examples_or_tokens() -> None:
    # two examples: 1 token with loss ~0 and 3 tokens with loss ~ln 4 (uniform over 4 classes)
    fused = torch.tensor([[50.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    targets = torch.tensor([0, 1, 2, 3])
    index = torch.tensor([0, 1, 1, 1])
    example = fusion_cross_entropy(fused, targets, index, 2, "example")
    token = fusion_cross_entropy(fused, targets, index, 2, "token")
    assert float(example) == pytest.approx(math.log(4) / 2, abs=1e-6)
    assert float(token) == pytest.approx(3 * math.log(4) / 4, abs=1e-6)


@pytest.mark.parametrize("threshold", [1.0, 20.0])
def test_retriever_activation_equals_torch_softplus_module(threshold: float) -> None:
    torch.manual_seed(0)
    retriever = PromptRetriever(16, threshold=threshold)
    query, keys = torch.randn(64, 16), torch.randn(4, 16)
    with torch.no_grad():
        q, k = retriever.proj(query), retriever.proj(keys)
        cos = F.cosine_similarity(q[:, None, :], k[None, :, :], dim=-1)
        expected = torch.nn.Softplus(beta=10, threshold=threshold)(cos)
        got = retriever(query, keys)
    assert torch.equal(got, expected)
    assert float(cos.max()) > 0.1 and float(cos.min()) < 0.1  # both regimes are exercised


def test_default_retriever_activation_is_the_authors_exact_cosine_above_0_1() -> None:
    assert SptOptions().softplus_threshold == 1.0
    cos = torch.tensor([-0.5, 0.0, 0.05, 0.1001, 0.3, 0.9])
    authors = torch.nn.Softplus(beta=10, threshold=1)(cos)
    with torch.no_grad():
        retriever = PromptRetriever(2)
        retriever.proj.weight.copy_(torch.eye(2))
        retriever.proj.bias.zero_()
        angles = torch.arccos(cos)
        query = torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)
        got = retriever(query, torch.tensor([[1.0, 0.0]]))[:, 0]
    assert torch.allclose(got, authors, atol=1e-6)
    above = cos > 0.1
    assert torch.allclose(got[above], cos[above], atol=1e-6)  # identity: the cosine itself
    # torch's default threshold (20) is smooth there: 0.031 above the cosine at cos = 0.1
    smooth = torch.nn.functional.softplus(torch.tensor(0.1), beta=10)
    assert float(smooth) - 0.1 == pytest.approx(0.0313, abs=1e-4)
    # and theirs jumps down at 0.1, so it is not monotonic there (docs/method.md)
    sp = torch.nn.Softplus(beta=10, threshold=1)
    assert float(sp(torch.tensor(0.09))) > float(sp(torch.tensor(0.12)))


def test_normalized_fusion_mixes_logits_with_scores_that_sum_to_one(backbone) -> None:
    batch = mixed_batch()
    personas = [e.persona for e in batch.examples]
    args = (batch.input_ids, batch.attention_mask, batch.labels, batch.prompt_mask, personas)
    raw = new_core(backbone, k=3, prompt_len=4)
    normalized = new_core(backbone, k=3, prompt_len=4, fusion_weights="normalized")
    _, raw_logs = raw.losses(*args)
    _, logs = normalized.losses(*args)
    with torch.no_grad():
        s = normalized.scores(batch.input_ids, batch.attention_mask, batch.prompt_mask)
        w = s / s.sum(-1, keepdim=True)
        prompts = normalized.prompt_pool.prompts
        ce = []
        for b in range(len(batch)):
            parts = [reference_logits(backbone, prompts[k], batch, b) for k in range(3)]
            fused = sum(w[b, k] * parts[k][0] for k in range(3))
            ce.append(F.cross_entropy(fused, parts[0][1], reduction="none"))
        expected = torch.stack([c.mean() for c in ce]).mean()
    assert logs["fusion"] == pytest.approx(float(expected), abs=1e-4)
    # same seed, same prompts and retriever: only the fusion term differs
    assert logs["nll"] == raw_logs["nll"] and logs["sel"] == raw_logs["sel"]
    assert logs["fusion"] != pytest.approx(raw_logs["fusion"], abs=1e-3)
    assert logs["score_sum"] == pytest.approx(float(s.sum(-1).mean()), abs=1e-6)


@pytest.mark.parametrize(
    ("switch", "term", "weight"),
    [("selection_loss", "sel", 0.4), ("fusion", "fusion", 1.0), ("contrastive", "ctr", 0.4)],
)
def test_each_switch_removes_exactly_its_term(
    backbone, switch: str, term: str, weight: float
) -> None:
    batch = mixed_batch()
    personas = [e.persona for e in batch.examples]
    args = (batch.input_ids, batch.attention_mask, batch.labels, batch.prompt_mask, personas)
    full_total, full = new_core(backbone, k=3, prompt_len=4).losses(*args)
    off_total, off = new_core(backbone, k=3, prompt_len=4, **{switch: False}).losses(*args)
    assert term in full and term not in off
    for name in ("nll", "sel", "fusion", "ctr"):
        if name != term:
            assert off[name] == full[name]  # same seed, same batch: bit-identical terms
    assert float(off_total.detach()) == pytest.approx(
        float(full_total.detach()) - weight * full[term], abs=1e-5
    )


def test_loss_weights_scale_only_their_term(backbone) -> None:
    batch = mixed_batch()
    args = (
        batch.input_ids,
        batch.attention_mask,
        batch.labels,
        batch.prompt_mask,
        [e.persona for e in batch.examples],
    )
    base_total, base = new_core(backbone, k=3, prompt_len=4).losses(*args)
    heavy_total, heavy = new_core(
        backbone, k=3, prompt_len=4, selection_weight=2.0, contrastive_weight=0.0, fusion_weight=0.5
    ).losses(*args)
    assert heavy == base
    expected = base["nll"] + 2.0 * base["sel"] + 0.5 * base["fusion"]
    assert float(heavy_total.detach()) == pytest.approx(expected, abs=1e-5)
    assert float(base_total.detach()) == pytest.approx(
        base["nll"] + 0.4 * base["sel"] + base["fusion"] + 0.4 * base["ctr"], abs=1e-5
    )


def test_k1_builds_no_retriever_and_computes_only_the_lm_loss(backbone) -> None:
    core = new_core(backbone, k=1, prompt_len=4)
    batch = mixed_batch()
    total, logs = core.losses(
        batch.input_ids, batch.attention_mask, batch.labels, batch.prompt_mask
    )
    assert core.retriever is None
    assert set(logs) == {"nll"}
    assert set(core.trained_state()) == {"prompt_pool.prompts"}
    assert core.options.active_terms() == ["nll"]


@pytest.mark.parametrize("query", ["embeddings", "hidden"])
def test_selection_is_batch_independent(backbone, query: str) -> None:
    core = new_core(backbone, k=4, prompt_len=4, retriever_query=query)
    batch = mixed_batch(n=6, seed=3)
    gen = batch.to_gen_batch(PAD)  # left-padded prompts, as the decoder sees them
    together, s_together = core.select(gen.input_ids, gen.attention_mask, gen.attention_mask)
    # Training view (right-padded, response included) scores the same text.
    _, s_train = core.select(batch.input_ids, batch.attention_mask, batch.prompt_mask)
    assert len(set(torch.round(s_together, decimals=4).flatten().tolist())) > 4  # scores vary
    for b in range(len(batch)):
        alone = collate([batch.examples[b]]).to_gen_batch(PAD)
        sel, s = core.select(alone.input_ids, alone.attention_mask, alone.attention_mask)
        assert int(sel[0]) == int(together[b])
        assert torch.allclose(s[0], s_together[b], atol=1e-6)
        assert torch.allclose(s_train[b], s_together[b], atol=1e-6)


def test_query_ignores_the_response_and_the_padding(backbone) -> None:
    core = new_core(backbone, k=4, prompt_len=4, retriever_query="hidden")
    batch = mixed_batch(n=4)
    s = core.scores(batch.input_ids, batch.attention_mask, batch.prompt_mask)
    changed = batch.input_ids.clone()
    changed[batch.labels != -100] = 7  # another response
    changed[batch.attention_mask == 0] = 9  # other padding ids
    s2 = core.scores(changed, batch.attention_mask, batch.prompt_mask)
    assert torch.equal(s, s2)


def test_training_changes_only_prompts_and_retriever(backbone) -> None:
    method = SelectivePromptTuning(backbone, SptOptions(k=3, prompt_len=4))
    before_lm = {n: p.detach().clone() for n, p in backbone.model.named_parameters()}
    before = {n: t.clone() for n, t in method.trained_state().items()}
    opt = torch.optim.AdamW(method.trainable_parameters(), lr=1e-2)
    for step in range(4):
        loss, logs = method.training_loss(mixed_batch(seed=step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name, p in backbone.model.named_parameters():
        assert not p.requires_grad and p.grad is None
        assert torch.equal(p, before_lm[name]), name
    after = method.trained_state()
    assert set(after) == {"prompt_pool.prompts", "retriever.proj.weight", "retriever.proj.bias"}
    for name in after:
        assert not torch.equal(after[name], before[name]), name


def test_trained_state_round_trips_through_safetensors(backbone, tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    trained = SelectivePromptTuning(backbone, SptOptions(k=3, prompt_len=4))
    save_file(trained.trained_state(), str(tmp_path / "w.safetensors"))
    torch.manual_seed(1)
    fresh = SelectivePromptTuning(backbone, SptOptions(k=3, prompt_len=4))
    gen = mixed_batch().to_gen_batch(PAD)
    assert not torch.equal(fresh.prefix_embeds(gen).embeds, trained.prefix_embeds(gen).embeds)
    fresh.load_trained_state(load_file(str(tmp_path / "w.safetensors")))
    a, b = fresh.prefix_embeds(gen), trained.prefix_embeds(gen)
    assert torch.equal(a.embeds, b.embeds) and a.row_info == b.row_info
    other = SelectivePromptTuning(backbone, SptOptions(k=2, prompt_len=4))
    with pytest.raises(ConfigError, match="shape"):
        other.load_trained_state(trained.trained_state())
    with pytest.raises(ConfigError, match="missing"):
        SelectivePromptTuning(backbone, SptOptions(k=1, prompt_len=4)).load_trained_state(
            trained.trained_state()
        )


def test_prefix_row_info_reports_the_selected_prompt_and_all_scores(backbone) -> None:
    method = SelectivePromptTuning(backbone, SptOptions(k=3, prompt_len=4))
    gen = mixed_batch().to_gen_batch(PAD)
    out = method.prefix_embeds(gen)
    assert out.embeds.shape == (len(gen), 4, 64)
    for b, info in enumerate(out.row_info):
        assert len(info["prompt_scores"]) == 3
        assert info["selected_prompt"] == max(range(3), key=lambda k: info["prompt_scores"][k])
        assert torch.equal(
            out.embeds[b], method.core.prompt_pool.prompts[info["selected_prompt"]].detach()
        )


def test_dev_metrics_add_prompt_usage_and_retriever_entropy(backbone) -> None:
    method = SelectivePromptTuning(backbone, SptOptions(k=3, prompt_len=4))
    batches = [mixed_batch(seed=0), mixed_batch(n=3, seed=1)]
    metrics = method.dev_metrics(batches)
    assert sum(metrics["prompt_usage"]) == 8 and len(metrics["prompt_usage"]) == 3
    assert 0 < metrics["retriever_entropy"] <= math.log(3)
    assert metrics["dev_loss"] > 0
    summary = method.summary()
    assert summary["active_losses"] == ["nll", "sel", "fusion", "ctr"]
    assert summary["trainable_params"] == 3 * 4 * 64 + 64 * 64 + 64


def test_prompt_usage_histogram_from_prediction_rows() -> None:
    rows = [
        {"selected_prompt": 2, "prompt_scores": [0.1, 0.2, 0.9, 0.3]},
        {"selected_prompt": 0, "prompt_scores": [0.9, 0.2, 0.1, 0.3]},
        {"selected_prompt": 2, "prompt_scores": [0.1, 0.2, 0.9, 0.3]},
        {"id": "no selection"},
    ]
    assert prompt_usage(rows) == [1, 0, 2, 0]
    assert prompt_usage(rows, k=5) == [1, 0, 2, 0, 0]
    assert prompt_usage([]) == []
    with pytest.raises(ValueError, match="outside"):
        prompt_usage(rows, k=2)


def test_prompt_pool_initialisations(backbone) -> None:
    emb = backbone.model.get_input_embeddings().weight
    torch.manual_seed(0)
    pool = PromptPool(4, 8, 64, init="vocab", embedding_weight=emb, exclude_ids=[0, 1, 2, 3])
    rows = pool.prompts.detach().view(-1, 64)
    matches = (rows[:, None, :] == emb[None]).all(-1)  # [32, V]
    assert bool(matches.any(1).all())  # every virtual token is a vocabulary embedding
    assert not bool(matches[:, :4].any())  # never a special token
    torch.manual_seed(0)
    normal = PromptPool(4, 8, 64, init="normal")
    assert 0.8 < float(normal.prompts.detach().std()) < 1.2
    assert pool.keys().shape == (4, 64)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"k": 0}, "--k"),
        ({"prompt_len": 0}, "--prompt-len"),
        ({"prompt_init": "zeros"}, "--prompt-init"),
        ({"retriever_query": "bm25"}, "--retriever-query"),
        ({"fusion_weights": "softmax"}, "--fusion-weights"),
        ({"fusion_reduction": "sum"}, "--fusion-reduction"),
        ({"softplus_threshold": 0.0}, "--softplus-threshold"),
        ({"tau_gold": 0.0}, "--tau-gold"),
        ({"selection_weight": -1.0}, "--selection-weight"),
        ({"contrastive_threshold": 150.0}, "--contrastive-threshold"),
    ],
)
def test_invalid_options_are_config_errors(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SptOptions(**options)


def test_run_config_options_are_validated_through_the_registry() -> None:
    from spt_bench.methods import get_method, make_options

    opts = make_options(get_method("spt"), {"k": 2, "fusion": False, "tau_sim": 0.5})
    assert (opts.k, opts.fusion, opts.tau_sim, opts.contrastive) == (2, False, 0.5, True)
    with pytest.raises(ConfigError, match="lora_r"):
        make_options(get_method("spt"), {"lora_r": 4})
    with pytest.raises(ConfigError, match="k"):
        make_options(get_method("prompt-tuning"), {"k": 4})


def test_test_split_prompt_usage_histogram_goes_to_diagnostics() -> None:
    from spt_bench.spt import SelectivePromptTuning, SptOptions

    method = SelectivePromptTuning(tiny_random(device="cpu"), SptOptions(k=3))
    rows = [{"selected_prompt": p} for p in (0, 2, 2, 1, 2)]
    diag = method.prediction_diagnostics(rows)
    assert diag["prompt_usage"] == [1, 1, 3]
    assert diag["prompt_share"] == [0.2, 0.2, 0.6]


def test_retriever_center_uses_the_training_query_mean_and_centred_keys() -> None:
    from spt_bench.data.example import Example
    from spt_bench.data.formatting import collate_train
    from spt_bench.methods import get_method, make_options

    backbone = tiny_random(seed=0)
    cls = get_method("spt")
    examples = [
        Example(f"d{i}", 0, (f"i like colour {i}.", "i have a cat."), (f"hello number {i}",), "hi.")
        for i in range(40)
    ]
    torch.manual_seed(0)
    method = cls(backbone, make_options(cls, {"k": 3, "retriever_center": True}))
    retriever = method.core.retriever
    assert torch.count_nonzero(retriever.proj.bias) == 0
    method.setup(examples, seed=0)
    formatter = method.build_formatter()
    batch = collate_train([formatter.encode_train(ex) for ex in examples], backbone.pad_token_id)
    q = method.core.query(batch.input_ids, batch.attention_mask, batch.prompt_mask)
    assert torch.allclose(retriever.query_center, q.mean(dim=0), atol=1e-5)
    keys = method.core.prompt_pool.keys()
    with torch.no_grad():
        s = method.core.scores(batch.input_ids, batch.attention_mask, batch.prompt_mask)
        qc = retriever.proj(q - q.mean(0))
        kc = retriever.proj(keys - keys.mean(0))
        cos = F.cosine_similarity(qc[:, None], kc[None], dim=-1)
        ref = F.softplus(cos, beta=10.0, threshold=1.0)  # the authors' activation
    assert torch.allclose(s, ref, atol=1e-5)
    # the centre travels with the trained state, so evaluation needs no training data
    state = method.trained_state()
    assert "retriever.query_center" in state
    torch.manual_seed(1)
    other = cls(backbone, make_options(cls, {"k": 3, "retriever_center": True}))
    other.load_trained_state(state)
    assert torch.equal(other.core.retriever.query_center, retriever.query_center)
    # off (the authors' retriever): no centre, the usual Linear init
    torch.manual_seed(0)
    plain = cls(backbone, make_options(cls, {"k": 3}))
    assert "retriever.query_center" not in plain.trained_state()
    assert torch.count_nonzero(plain.core.retriever.proj.bias) > 0
