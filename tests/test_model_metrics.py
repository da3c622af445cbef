"""Model-based metrics (issue 7): reference perplexity and Hits@k under each method."""

from __future__ import annotations

import math
import zlib

import pytest
import torch
from tiny_model import tiny_random

from spt_bench.data import Example, load_examples
from spt_bench.errors import ConfigError
from spt_bench.methods import Method, PrefixOutput, get_method
from spt_bench.model_metrics import (
    add_model_metrics_to_predictions,
    compute_model_metrics,
    dataset_candidates,
    prepare_candidates,
    resolve_candidate_mode,
    score_candidate_tokens,
    synthetic_candidates,
)

# fp32 on CPU: the cached and the full forward differ only by summation order.
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def sample() -> list[Example]:
    return load_examples("sample")


@pytest.fixture(scope="module")
def backbone():
    """Shared by the tests that only score (none of them changes a weight)."""
    return tiny_random(device="cpu", seed=0)


class FixedSoftPrompts(Method):
    """Test method: one of 3 fixed random soft prompts per row, chosen from the prompt tokens
    alone (so batch-independent), like SPT's retriever-selected prompt."""

    name = "test-fixed-soft-prompts"
    description = "test only"
    trains = False

    def __init__(self, backbone, options=None) -> None:
        super().__init__(backbone, options)
        g = torch.Generator().manual_seed(1)
        self.prompts = torch.randn(3, 5, backbone.hidden_size, generator=g)

    def choice(self, prompt_ids: list[int]) -> int:
        return zlib.crc32(str(prompt_ids).encode()) % 3

    def prefix_embeds(self, batch) -> PrefixOutput:
        rows = [
            [int(t) for t, m in zip(ids, mask, strict=True) if m]
            for ids, mask in zip(
                batch.input_ids.tolist(), batch.attention_mask.tolist(), strict=True
            )
        ]
        picks = [self.choice(r) for r in rows]
        return PrefixOutput(
            embeds=self.prompts[picks].to(batch.input_ids.device),
            row_info=[{"selected_prompt": p} for p in picks],
        )

    def trainable_parameters(self):
        return []

    def training_loss(self, batch):
        raise RuntimeError("does not train")

    def trained_state(self):
        return {}

    def load_trained_state(self, state) -> None:
        pass


def plain_transformers_nll(model, prompt: list[int], response: list[int], prefix=None):
    """Summed NLL of `response` after `prompt` with model(..., labels=...) (mean loss x count)."""
    ids = torch.tensor([prompt + response])
    labels = torch.tensor([[-100] * len(prompt) + response])
    with torch.no_grad():
        if prefix is None:
            loss = model(input_ids=ids, labels=labels).loss
        else:
            embeds = torch.cat([prefix[None], model.get_input_embeddings()(ids)], dim=1)
            labels = torch.cat([torch.full((1, prefix.shape[0]), -100), labels], dim=1)
            loss = model(inputs_embeds=embeds, labels=labels).loss
    return float(loss) * len(response)


def test_perplexity_equals_exp_of_plain_transformers_loss(sample, backbone):
    from spt_bench.metrics import score_predictions

    method = get_method("full-ft")(backbone)
    formatter = method.build_formatter()
    examples = sample[:6]
    mm = compute_model_metrics(method, examples, formatter, batch_size=4, hits_k=())
    total_nll, total_n = 0.0, 0
    for ex in examples:
        prompt, response = formatter.prompt_ids(ex), formatter.response_ids(ex)
        expected = plain_transformers_nll(method.backbone.model, prompt, response)
        got = mm.per_example[ex.id]
        assert got["ref_n_tokens"] == len(response)
        assert got["ref_nll_sum"] == pytest.approx(expected, rel=TOLERANCE)
        assert set(got) == {"ref_nll_sum", "ref_n_tokens"}
        total_nll += expected
        total_n += len(response)
    # The scorer turns the per-example fields into the corpus perplexity.
    rows = [{"id": ex.id, "reference": ex.response, "prediction": "hi"} for ex in examples]
    report = score_predictions(mm.merge_into(rows), bertscore=None, n_resamples=0)
    assert report.overall["ppl"] == pytest.approx(math.exp(total_nll / total_n), rel=TOLERANCE)


def test_perplexity_with_soft_prompt_prefix_matches_plain_transformers(sample, backbone):
    method = FixedSoftPrompts(backbone)
    formatter = method.build_formatter()
    examples = sample[:6]
    mm = compute_model_metrics(method, examples, formatter, batch_size=3, hits_k=())
    choices = set()
    for ex in examples:
        prompt, response = formatter.prompt_ids(ex), formatter.response_ids(ex)
        choice = method.choice(prompt)
        choices.add(choice)
        expected = plain_transformers_nll(
            method.backbone.model, prompt, response, prefix=method.prompts[choice]
        )
        assert mm.per_example[ex.id]["ref_nll_sum"] == pytest.approx(expected, rel=TOLERANCE)
    assert len(choices) > 1  # rows in one batch really had different prefixes


def test_prefix_sharing_gives_the_same_scores_as_full_forwards(sample, backbone):
    method = FixedSoftPrompts(backbone)
    formatter = method.build_formatter()
    examples = sample[:7]
    _, prompts, cands, _ = prepare_candidates(
        examples, formatter, hits_k=(1,), n_candidates=6, distractor_pool=sample
    )
    assert len({len(p) for p in prompts}) > 1  # left padding inside a prefix group
    # prefix groups of 3 (a group mixes prompt lengths and prefixes); the full-forward path
    # gets chunks of 7 sequences that span examples
    kwargs = {"batch_size": 3, "rows_per_forward": 7}
    shared, used = score_candidate_tokens(method, examples, prompts, cands, **kwargs)
    naive, _ = score_candidate_tokens(
        method, examples, prompts, cands, use_prefix_sharing=False, **kwargs
    )
    assert used
    for row_shared, row_naive in zip(shared, naive, strict=True):
        assert len(row_shared) == 6
        for (s1, n1), (s2, n2) in zip(row_shared, row_naive, strict=True):
            assert n1 == n2
            assert s1 / n1 == pytest.approx(s2 / n2, abs=TOLERANCE)
    common = {"hits_k": (1, 3), "n_candidates": 6, "distractor_pool": sample}
    a = compute_model_metrics(method, examples, formatter, **common)
    b = compute_model_metrics(method, examples, formatter, use_prefix_sharing=False, **common)
    assert a.summary["prefix_sharing"] is True and b.summary["prefix_sharing"] is False
    for ex in examples:
        assert a.per_example[ex.id]["gold_rank"] == b.per_example[ex.id]["gold_rank"]


@pytest.mark.parametrize("max_response_tokens", [1, 3])
def test_prefix_sharing_with_eager_attention_and_cut_candidates(sample, max_response_tokens):
    """Eager attention takes the packed mask as additive floats; candidates cut to 1 token feed
    nothing after the prefix, cut to 3 they carry no EOS."""
    from spt_bench.data.formatting import PromptFormatter

    backbone = tiny_random(device="cpu", seed=0)
    backbone.model.set_attn_implementation("eager")
    method = FixedSoftPrompts(backbone)
    formatter = PromptFormatter(backbone.tokenizer, max_response_tokens=max_response_tokens)
    examples = sample[:4]
    _, prompts, cands, _ = prepare_candidates(
        examples, formatter, hits_k=(1,), n_candidates=4, distractor_pool=sample
    )
    assert {len(c) for cs in cands for c in cs} == {max_response_tokens}
    shared, used = score_candidate_tokens(method, examples, prompts, cands, batch_size=4)
    naive, _ = score_candidate_tokens(
        method, examples, prompts, cands, batch_size=4, use_prefix_sharing=False
    )
    assert used
    for row_shared, row_naive in zip(shared, naive, strict=True):
        for (s1, n1), (s2, n2) in zip(row_shared, row_naive, strict=True):
            assert n1 == n2 and s1 / n1 == pytest.approx(s2 / n2, abs=TOLERANCE)


def _toy(dialog: str, persona: str, partner: str, response: str) -> Example:
    return Example(
        dialog_id=dialog, turn=0, persona=(persona,), history=(partner,), response=response
    )


@pytest.mark.parametrize("n", [3, 8])  # 3: rejection sampling (large pool); 8: explicit list
def test_synthetic_distractors_are_deterministic_and_never_the_true_response(n):
    examples = []
    for d in range(12):
        examples.append(_toy(f"d{d}", "p", "hello", f"reply number {d} ."))
        examples.append(Example(f"d{d}", 1, ("p",), ("hello", "x", "y"), f"second reply {d % 4} ."))
    # The same text (modulo case and spacing) in another dialogue must never be a distractor.
    examples.append(_toy("dup", "p", "hello", "  REPLY number 3 . "))
    a = synthetic_candidates(examples, n, seed=5)
    b = synthetic_candidates(list(reversed(examples)), n, seed=5)
    assert a == b  # order of the examples does not matter
    subset = synthetic_candidates(examples[:3], n, seed=5, pool=examples)
    assert all(subset[ex.id] == a[ex.id] for ex in examples[:3])  # nor the subset scored
    assert synthetic_candidates(examples, n, seed=6) != a

    def norm(t):
        return " ".join(t.split()).lower()

    dialogues_of = {}
    for ex in examples:
        dialogues_of.setdefault(norm(ex.response), set()).add(ex.dialog_id)
    for ex in examples:
        cs = a[ex.id]
        assert len(cs.texts) == n and cs.texts[cs.gold] == ex.response.strip()
        distractors = [t for i, t in enumerate(cs.texts) if i != cs.gold]
        assert len({norm(t) for t in distractors}) == n - 1
        assert all(norm(t) != norm(ex.response) for t in distractors)
        # every distractor is a response of some other dialogue
        assert all(dialogues_of[norm(t)] - {ex.dialog_id} for t in distractors)


def test_synthetic_pool_too_small_is_a_clear_error():
    examples = [_toy(f"d{d}", "p", "hi", f"r{d}") for d in range(5)]
    with pytest.raises(ConfigError, match="needs 19 distractors .* only 4"):
        synthetic_candidates(examples, 20)


def test_dataset_candidates_are_used_when_present(sample, backbone):
    method = get_method("full-ft")(backbone)
    formatter = method.build_formatter()
    distractors = ("i like cheese .", "the sky is blue today .", "my car is red .")
    examples = [
        Example(ex.dialog_id, ex.turn, ex.persona, ex.history, ex.response,
                candidates=distractors + (ex.response,))
        for ex in sample[:3]
    ]  # fmt: skip
    assert resolve_candidate_mode(examples) == "dataset"
    assert dataset_candidates(examples[0]).gold == 3
    mm = compute_model_metrics(method, examples, formatter, hits_k=(1, 3))
    assert mm.candidates == "dataset"
    assert mm.summary["n_candidates"] == {"min": 4, "max": 4}
    plain = compute_model_metrics(method, sample[:3], formatter, hits_k=())
    for ex in examples:
        row = mm.per_example[ex.id]
        assert row["n_candidates"] == 4 and 1 <= row["gold_rank"] <= 4
        assert row["hits@1"] == int(row["gold_rank"] == 1)
        assert row["hits@3"] == int(row["gold_rank"] <= 3)
        # the reference is scored the same way with or without candidates
        assert row["ref_nll_sum"] == pytest.approx(
            plain.per_example[ex.id]["ref_nll_sum"], rel=1e-5
        )
    with pytest.raises(ConfigError, match="hits@5 needs at least 5 candidates"):
        compute_model_metrics(method, examples, formatter, hits_k=(5,))
    broken = Example("d", 0, ("p",), ("hi",), "the truth", candidates=distractors)
    with pytest.raises(ConfigError, match="do not include the reference"):
        dataset_candidates(broken)
    with pytest.raises(ConfigError, match="choose one protocol"):
        resolve_candidate_mode(examples + list(sample[5:6]))


def test_unsupported_hits_k_is_rejected(sample, backbone):
    method = get_method("full-ft")(backbone)
    with pytest.raises(ConfigError, match="hits@2 is not reported"):
        compute_model_metrics(method, sample[:2], method.build_formatter(), hits_k=(2,))


FAMILIES = {
    "i love pizza .": "pizza is my favorite food .",
    "i have a dog named max .": "my dog max likes to run in the park .",
    "i play the guitar .": "i practice guitar every night .",
    "i am a nurse .": "i work long shifts at the hospital .",
}
PARTNERS = ("hi , how are you ?", "what do you like ?", "tell me about you .", "what is new ?")


def test_trained_model_ranks_the_true_response_above_chance():
    """Fit the tiny model to 16 dialogues whose reply is fixed by the persona (4 families), then
    rank each true reply against the other families' replies (synthetic protocol, 4 candidates:
    same-family replies equal the truth and are excluded): chance is 1/4."""
    from spt_bench.data.formatting import collate_train

    dialogues = [
        _toy(f"d{i}-{j}", persona, partner, response)
        for i, (persona, response) in enumerate(FAMILIES.items())
        for j, partner in enumerate(PARTNERS)
    ]
    method = get_method("full-ft")(tiny_random(device="cpu", seed=0))
    formatter = method.build_formatter()

    def hits(m):
        return compute_model_metrics(m, dialogues, formatter, hits_k=(1,), n_candidates=4)

    before = hits(method)
    torch.manual_seed(0)
    optim = torch.optim.AdamW(method.trainable_parameters(), lr=1e-2)
    batch = collate_train(
        [formatter.encode_train(ex) for ex in dialogues], method.backbone.pad_token_id
    )
    method.set_train_mode(True)
    for _ in range(30):
        loss, _ = method.training_loss(batch)
        optim.zero_grad()
        loss.backward()
        optim.step()
    after = hits(method)
    assert after.candidates == "synthetic"
    assert all(r["n_candidates"] == 4 for r in after.per_example.values())
    rate = sum(r["hits@1"] for r in after.per_example.values()) / len(dialogues)
    assert rate >= 0.75, rate

    def ppl(mm):
        rows = mm.per_example.values()
        return math.exp(sum(r["ref_nll_sum"] for r in rows) / sum(r["ref_n_tokens"] for r in rows))

    assert ppl(after) < ppl(before) / 10


def test_spt_is_scored_under_its_retriever_selected_prompt(sample, backbone):
    from spt_bench.data.formatting import collate_generate
    from spt_bench.methods import make_options

    cls = get_method("spt")
    torch.manual_seed(0)
    method = cls(backbone, make_options(cls, {"k": 3, "prompt_len": 4, "prompt_init": "normal"}))
    formatter = method.build_formatter()
    examples = sample[::5][:6]
    # A random retriever picks one prompt for everything; make prompt k the retriever's
    # best match for example k (key = its query, identity projection) so a batch mixes prompts.
    with torch.no_grad():
        for k, ex in enumerate(examples[:3]):
            ids = torch.tensor([formatter.prompt_ids(ex)])
            query = method.core.query(ids, torch.ones_like(ids), torch.ones_like(ids))
            method.core.prompt_pool.prompts[k] = query[0]
        method.core.retriever.proj.weight.copy_(torch.eye(backbone.hidden_size))
        method.core.retriever.proj.bias.zero_()
    common = {"hits_k": (1,), "n_candidates": 5, "distractor_pool": sample, "batch_size": 4}
    shared = compute_model_metrics(method, examples, formatter, **common)
    naive = compute_model_metrics(method, examples, formatter, use_prefix_sharing=False, **common)
    selected = set()
    for ex in examples:
        prompt, response = formatter.prompt_ids(ex), formatter.response_ids(ex)
        alone = collate_generate([prompt], backbone.pad_token_id, [ex])
        choice = method.prefix_embeds(alone).row_info[0]["selected_prompt"]
        selected.add(choice)
        prefix = method.core.prompt_pool.prompts.detach()[choice]
        expected = plain_transformers_nll(backbone.model, prompt, response, prefix=prefix)
        assert shared.per_example[ex.id]["ref_nll_sum"] == pytest.approx(expected, rel=TOLERANCE)
        assert naive.per_example[ex.id]["ref_nll_sum"] == pytest.approx(expected, rel=TOLERANCE)
        assert shared.per_example[ex.id]["gold_rank"] == naive.per_example[ex.id]["gold_rank"]
    assert selected == {0, 1, 2}


def test_run_step_adds_fields_to_predictions_file_the_scorer_reads(sample, backbone, tmp_path):
    from spt_bench.io import append_jsonl
    from spt_bench.metrics import score_predictions
    from spt_bench.metrics.predictions import read_prediction_rows

    method = get_method("text-prompt")(backbone)  # chat template, no prefix
    formatter = method.build_formatter()
    assert formatter.template_used == "chat"
    examples = sample[:4]
    rows = [
        {"id": ex.id, "turn": ex.turn, "reference": ex.response, "prediction": "i like dogs ."}
        for ex in examples
    ]
    path = tmp_path / "predictions.jsonl"
    append_jsonl(path, rows)
    summary = add_model_metrics_to_predictions(
        method, formatter, examples, rows, path, hits_k=(1, 5), n_candidates=6,
        distractor_pool=sample,
    )  # fmt: skip
    assert summary["hits_candidates"] == "synthetic"
    assert summary["hits_k"] == [1, 5] and summary["prefix_sharing"] is True
    stored = read_prediction_rows(path)
    assert [r["id"] for r in stored] == [ex.id for ex in examples]
    assert all({"ref_nll_sum", "ref_n_tokens", "hits@1", "hits@5"} <= set(r) for r in stored)
    report = score_predictions(stored, bertscore=None, n_resamples=0)
    assert report.overall["ppl"] > 1
    assert report.overall["hits@5"] >= report.overall["hits@1"]


def test_spt_bench_run_and_evaluate_write_model_metrics(tmp_path):
    import json

    from typer.testing import CliRunner

    from cli import app

    cli = CliRunner()
    common = ["--model", "tiny-random", "--no-bertscore", "--method", "text-prompt",
              "--eval-limit", "4", "--max-new-tokens", "2"]  # fmt: skip
    res = cli.invoke(app, ["run", *common, "--hits-k", "1,5", "--out", str(tmp_path / "on")])
    assert res.exit_code == 0, res.output
    run = tmp_path / "on"
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    assert all({"ref_nll_sum", "ref_n_tokens", "hits@1", "hits@5"} <= set(r) for r in rows)
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"ppl", "hits@1", "hits@5"} <= set(metrics["overall"])
    assert metrics["model_metrics"]["hits_candidates"] == "synthetic"
    # the distractor pool is the whole data (all splits), not the 4 scored examples
    assert metrics["model_metrics"]["synthetic_pool_examples"] > 100
    assert "SYNTHETIC" in (run / "report.md").read_text()

    res = cli.invoke(app, ["evaluate", str(run), "--no-bertscore", "--no-model-metrics"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert "ppl" not in metrics["overall"] and metrics["model_metrics"] is None

    res = cli.invoke(app, ["run", *common, "--hits-k", "2", "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "hits@2 is not reported" in res.output


def test_killed_model_metrics_scoring_resumes_from_its_part_files(
    sample, backbone, tmp_path, monkeypatch
):
    """A scoring killed after its first batch keeps that batch in its part file; the next
    scoring skips it, scores only the rest, and ends with the uninterrupted values. Another
    checkpoint (weights key) does not reuse the part file."""
    import spt_bench.sharded_scoring as sharded

    method = FixedSoftPrompts(backbone)
    formatter = method.build_formatter()
    examples = sample[:7]
    common = {"hits_k": (1,), "n_candidates": 4, "distractor_pool": sample, "batch_size": 3}
    whole = compute_model_metrics(method, examples, formatter, **common)

    def killed_after_first(_n: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compute_model_metrics(method, examples, formatter, parts_folder=tmp_path,
                              on_progress=killed_after_first, **common)  # fmt: skip
    part = sharded.part_file(tmp_path, 0)
    assert len(part.read_text().splitlines()) == 3  # the first batch of 3

    scored: list[int] = []
    real = sharded.score_candidate_tokens

    def counting(*args, groups, **kwargs):
        scored.extend(i for g in groups for i in g)
        return real(*args, groups=groups, **kwargs)

    monkeypatch.setattr(sharded, "score_candidate_tokens", counting)
    resumed = compute_model_metrics(method, examples, formatter, parts_folder=tmp_path, **common)
    assert len(scored) == 4  # the two batches left: 3 + 1
    assert resumed.per_example == whole.per_example
    scored.clear()
    compute_model_metrics(method, examples, formatter, parts_folder=tmp_path,
                          weights_key="another checkpoint", **common)  # fmt: skip
    assert len(scored) == 7
