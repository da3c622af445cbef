"""LLM judge: G-Eval estimator on a tiny model, and the per-example score cache."""

from __future__ import annotations

import pytest
import torch

from spt_bench.metrics.judge import (
    RUBRICS,
    SCORES,
    JudgeOptions,
    JudgeScorer,
    chat_prompt_ids,
    judge_prompt,
    score_token_ids,
)
from spt_bench.metrics.score_cache import ScoreCache

ITEMS = [
    (["i like dogs ."], ["hi", "hello , how are you ?"], "i am fine , i walk my dog ."),
    (["i am a nurse ."], ["what do you do ?"], "i work at a hospital ."),
    (["i love pizza ."], [], "hello !"),
    (["i have two cats ."], ["do you have pets ?"], "yes , two cats ."),
    (["i run ."], ["hey"], "i like to run every morning , what about you ?"),
]


@pytest.fixture(scope="module")
def scorer(single_thread):
    return JudgeScorer.create(JudgeOptions("tiny-random", batch_size=2))


def test_judge_score_is_the_probability_weighted_mean_of_the_score_tokens(scorer):
    got = scorer.score("consistency", ITEMS, ScoreCache(None))
    backbone = scorer._backbone
    ids = score_token_ids(backbone.tokenizer)
    for item, value in zip(ITEMS, got, strict=True):
        prompt = chat_prompt_ids(backbone.tokenizer, judge_prompt(RUBRICS["consistency"], *item))
        with torch.no_grad():  # one unpadded sequence: no batching, no mask
            logp = torch.log_softmax(backbone.model(torch.tensor([prompt])).logits[0, -1], -1)
        p = torch.softmax(logp[ids].double(), -1)  # renormalised over the five score tokens
        assert value == pytest.approx(float(sum(s * p[k] for k, s in enumerate(SCORES))), abs=1e-5)
        assert 1.0 <= value <= 5.0


def test_judge_is_deterministic_and_records_model_rubric_and_engine(scorer):
    a = scorer.score("coherence", ITEMS, ScoreCache(None))
    b = scorer.score("coherence", ITEMS, ScoreCache(None))
    assert a == b
    info = scorer.describe()
    assert info["engine"] == "hf" and info["model"] == "tiny-random"
    assert set(info["rubric_sha256"]) == {"consistency", "coherence"}


def test_cache_survives_a_kill_is_reused_and_a_changed_rubric_invalidates_it(
    scorer, tmp_path, monkeypatch
):
    path = tmp_path / "model_scores.jsonl"
    real = JudgeScorer.expected_scores
    calls: list[int] = []

    def killed_after_first_chunk(self, prompts):
        if calls:
            raise KeyboardInterrupt
        calls.append(len(prompts))
        return real(self, prompts)

    small = JudgeScorer.create(JudgeOptions("tiny-random", batch_size=1))  # chunks of 4
    small._backbone, small._score_ids = scorer._backbone, scorer._score_ids
    monkeypatch.setattr(JudgeScorer, "expected_scores", killed_after_first_chunk)
    with pytest.raises(KeyboardInterrupt):
        small.score("consistency", ITEMS, ScoreCache(path))
    assert len(ScoreCache(path)) == 4  # the finished chunk is on disk
    with path.open("a") as f:  # and a line cut by the kill is dropped
        f.write('{"key": "abc", "val')
    counted: list[int] = []

    def counting(self, prompts):
        counted.append(len(prompts))
        return real(self, prompts)

    monkeypatch.setattr(JudgeScorer, "expected_scores", counting)
    resumed = small.score("consistency", ITEMS, ScoreCache(path))
    assert counted == [1]  # only the example the kill left
    # equal up to float noise of the batch shapes (chunks of 1 vs 2 rows, left padding)
    assert resumed == pytest.approx(scorer.score("consistency", ITEMS, ScoreCache(None)), abs=1e-6)
    counted.clear()
    assert small.score("consistency", ITEMS, ScoreCache(path)) == resumed
    assert counted == []  # same model and rubric: all reused
    changed = JudgeScorer.create(
        JudgeOptions("tiny-random", batch_size=8, rubrics=(("consistency", "Rate it 1-5."),))
    )
    changed._backbone, changed._score_ids = scorer._backbone, scorer._score_ids
    changed.score("consistency", ITEMS, ScoreCache(path))
    assert counted == [len(ITEMS)]  # a changed rubric recomputes every example


def test_a_tokenizer_that_splits_score_digits_is_refused():
    class Splitter:
        def encode(self, text, add_special_tokens=False):
            return [1, 2]

    with pytest.raises(Exception, match="score 1 as 2 tokens"):
        score_token_ids(Splitter())


@pytest.mark.slow  # starts a vLLM engine on SmolLM2 (~20 s on a CPU)
def test_vllm_judge_gives_the_hf_judges_scores_and_stops_its_engine(tmp_path):
    from spt_bench.metrics import judge_vllm

    hf = JudgeScorer.create(JudgeOptions("smollm2", batch_size=2))
    vllm = JudgeScorer.create(JudgeOptions("smollm2", engine="vllm"))
    want = hf.score("consistency", ITEMS[:3], ScoreCache(None))
    got = vllm.score("consistency", ITEMS[:3], ScoreCache(tmp_path / "c.jsonl"))
    assert got == pytest.approx(want, abs=1e-4)
    assert vllm.describe()["engine"] == "vllm"
    vllm.close()
    assert judge_vllm._ENGINE == {}
    with pytest.raises(Exception, match="built in memory"):
        JudgeScorer.create(JudgeOptions("tiny-random", engine="vllm"))
