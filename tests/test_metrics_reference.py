"""Every metric against its reference library called directly, on real ConvAI2 pairs."""

from __future__ import annotations

import random
import re
import string
from collections import Counter

import numpy as np
import pytest

from spt_bench.data import load_examples
from spt_bench.metrics import BertScoreOptions, score_predictions

N_PAIRS = 300


def build_rows(convai2_valid) -> list[dict]:
    """A few hundred (reference, prediction) pairs with every kind of overlap and edge case."""
    examples = load_examples(convai2_valid)
    rng = random.Random(7)
    picked = rng.sample(examples, N_PAIRS)
    others = [e.response for e in rng.sample(examples, N_PAIRS)]
    rows = []
    for i, (ex, other) in enumerate(zip(picked, others, strict=True)):
        ref = ex.response
        words = ref.split()
        pred = [
            other,  # unrelated response
            ref,  # exact copy
            " ".join(words[: len(words) // 2] + other.split()[len(other.split()) // 2 :]),
            "The " + ref.upper().replace(" .", "!"),  # case / punctuation / article changes
            ex.persona[0],  # persona sentence
        ][i % 5]
        rows.append(
            {
                "id": ex.id,
                "dialog_id": ex.dialog_id,
                "turn": ex.turn,
                "persona": list(ex.persona),
                "reference": ref,
                "prediction": pred,
            }
        )
    edge = [
        ("", "i like dogs ."),
        ("i like dogs .", ""),
        ("Café DÉJÀ-vu 😀 ! naïve", "café déjà vu naïve"),
        (". . . ?", "what ?"),
        ("ok ok ok ok ok ok", "ok"),
    ]
    for j, (pred, ref) in enumerate(edge):
        rows.append(
            {
                "id": f"edge:{j}",
                "turn": 0,
                "persona": ["i am odd ."],
                "reference": ref,
                "prediction": pred,
            }
        )
    return rows


@pytest.fixture(scope="module")
def rows(convai2_valid) -> list[dict]:
    return build_rows(convai2_valid)


@pytest.fixture(scope="module")
def report(rows):
    return score_predictions(rows, bertscore=None, n_resamples=0)


def preds_refs(rows):
    return [r["prediction"] for r in rows], [r["reference"] for r in rows]


def test_bleu_is_sacrebleu_corpus_bleu_with_default_settings(rows, report):
    import sacrebleu

    preds, refs = preds_refs(rows)
    expected = sacrebleu.corpus_bleu(preds, [refs]).score
    assert expected > 1.0  # the pairs have real overlap, so this checks something
    assert report.overall["bleu"] == pytest.approx(expected, abs=1e-9)


def test_bleu1_and_bleu2_are_nltk_corpus_bleu_with_method1(rows, report):
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

    preds, refs = preds_refs(rows)
    hyps = [p.split() for p in preds]
    lists = [[r.split()] for r in refs]
    smooth = SmoothingFunction().method1
    b1 = corpus_bleu(lists, hyps, weights=(1.0,), smoothing_function=smooth)
    b2 = corpus_bleu(lists, hyps, weights=(0.5, 0.5), smoothing_function=smooth)
    assert report.overall["bleu1"] == pytest.approx(100 * b1, abs=1e-9)
    assert report.overall["bleu2"] == pytest.approx(100 * b2, abs=1e-9)


def test_nltk_bleu_smoothing_applies_when_no_bigram_matches():
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

    rows = [
        {"id": "1", "reference": "a b c d", "prediction": "a c"},
        {"id": "2", "reference": "x y", "prediction": "y"},
    ]
    s = score_predictions(rows, bertscore=None, n_resamples=0).overall
    expected = corpus_bleu(
        [[["a", "b", "c", "d"]], [["x", "y"]]],
        [["a", "c"], ["y"]],
        weights=(0.5, 0.5),
        smoothing_function=SmoothingFunction().method1,
    )
    assert expected > 0
    assert s["bleu2"] == pytest.approx(100 * expected, abs=1e-9)


def test_rouge_is_rouge_score_fmeasure_without_stemming(rows, report):
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    preds, refs = preds_refs(rows)
    got = [scorer.score(r, p) for p, r in zip(preds, refs, strict=True)]
    for key in ("rouge1", "rouge2", "rougeL"):
        expected = 100 * np.mean([g[key].fmeasure for g in got])
        assert report.overall[key] == pytest.approx(expected, abs=1e-9)


# ParlAI's own code (parlai/core/metrics.py), restated as the oracle for `f1`.
_RE_ART = re.compile(r"\b(a|an|the)\b")
_RE_PUNC = re.compile(r"[!\"#$%&()*+,-./:;<=>?@\[\]\\^`{|}~_\']")


def _parlai_normalize(s):
    s = s.lower()
    s = _RE_PUNC.sub(" ", s)
    s = _RE_ART.sub(" ", s)
    return " ".join(s.split())


def _prec_recall_f1(pred_items, gold_items):
    common = Counter(gold_items) & Counter(pred_items)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_items)
    recall = 1.0 * num_same / len(gold_items)
    return (2 * precision * recall) / (precision + recall)


def test_f1_is_parlai_f1_and_f1_raw_is_plain_whitespace_f1(rows, report):
    preds, refs = preds_refs(rows)
    parlai = [
        _prec_recall_f1(_parlai_normalize(p).split(), _parlai_normalize(r).split())
        for p, r in zip(preds, refs, strict=True)
    ]
    raw = [_prec_recall_f1(p.split(), r.split()) for p, r in zip(preds, refs, strict=True)]
    assert report.overall["f1"] == pytest.approx(100 * np.mean(parlai), abs=1e-9)
    assert report.overall["f1_raw"] == pytest.approx(100 * np.mean(raw), abs=1e-9)
    assert report.overall["f1"] != pytest.approx(report.overall["f1_raw"])
    assert set(string.punctuation) == set("!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~'")


def test_distinct_n_and_avg_len_match_direct_counts(rows, report):
    preds, _ = preds_refs(rows)
    toks = [p.split() for p in preds]
    for n in (1, 2):
        grams = [tuple(t[i : i + n]) for t in toks for i in range(len(t) - n + 1)]
        assert report.overall[f"dist{n}"] == pytest.approx(100 * len(set(grams)) / len(grams))
    assert report.overall["avg_len"] == pytest.approx(np.mean([len(t) for t in toks]))


# ---------------------------------------------------------------------------- BERTScore


@pytest.fixture(scope="module")
def small_rows(rows):
    picked = [r for r in rows if r["prediction"].strip() and r["reference"].strip()]
    return picked[:12]


@pytest.fixture(scope="module")
def minilm():
    from spt_bench.metrics.bertscore import minilm_path

    return str(minilm_path())


def test_bertscore_equals_bert_score_library_with_minilm_layer5(small_rows, minilm):
    import bert_score

    preds, refs = preds_refs(small_rows)
    rep = score_predictions(small_rows, bertscore=BertScoreOptions(), n_resamples=0)
    p, r, f = bert_score.score(preds, refs, model_type=minilm, num_layers=5, device="cpu")
    assert rep.overall["bertscore_p"] == pytest.approx(100 * p.mean().item(), abs=1e-4)
    assert rep.overall["bertscore_r"] == pytest.approx(100 * r.mean().item(), abs=1e-4)
    assert rep.overall["bertscore_f1"] == pytest.approx(100 * f.mean().item(), abs=1e-4)
    assert rep.bertscore_layer == 5 and rep.bertscore_idf is False
    assert rep.bertscore_model == "sentence-transformers/all-MiniLM-L6-v2"
    per_example = [e["bertscore_f1"] for e in rep.per_example]
    assert per_example == pytest.approx((100 * f).tolist(), abs=1e-4)


def test_bertscore_idf_equals_bert_score_library(small_rows, minilm):
    import bert_score

    preds, refs = preds_refs(small_rows)
    rep = score_predictions(
        small_rows, bertscore=BertScoreOptions(idf=True, layer=3), n_resamples=0
    )
    _, _, f = bert_score.score(
        preds, refs, model_type=minilm, num_layers=3, idf=True, device="cpu", nthreads=0
    )
    assert rep.overall["bertscore_f1"] == pytest.approx(100 * f.mean().item(), abs=1e-4)
    assert rep.bertscore_idf is True and rep.bertscore_layer == 3


def test_bertscore_is_greedy_cosine_matching_of_layer_5_token_embeddings(small_rows, minilm):
    """An independent BERTScore: hidden states of layer 5, greedy max cosine, [CLS]/[SEP]
    weighted 0 (bert-score's definition), computed with transformers only."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm)
    model = AutoModel.from_pretrained(minilm).eval()
    rows3 = small_rows[:4]
    expected_f = []
    for row in rows3:
        embs, masks = [], []
        for text in (row["prediction"], row["reference"]):
            enc = tok(text, return_tensors="pt")
            with torch.no_grad():
                h = model(**enc, output_hidden_states=True).hidden_states[5][0]
            embs.append(torch.nn.functional.normalize(h, dim=-1))
            w = torch.ones(h.shape[0])
            w[0] = w[-1] = 0  # [CLS], [SEP]
            masks.append(w / w.sum())
        sim = embs[0] @ embs[1].T
        p = (sim.max(dim=1).values * masks[0]).sum().item()
        r = (sim.max(dim=0).values * masks[1]).sum().item()
        expected_f.append(2 * p * r / (p + r))
    rep = score_predictions(rows3, bertscore=BertScoreOptions(), n_resamples=0)
    got = [e["bertscore_f1"] / 100 for e in rep.per_example]
    assert got == pytest.approx(expected_f, abs=1e-4)


def test_bertscore_of_an_empty_sentence_is_zero_and_does_not_crash():
    rows = [
        {"id": "1", "reference": "i like dogs .", "prediction": ""},
        {"id": "2", "reference": "", "prediction": "i like cats ."},
        {"id": "3", "reference": "i like dogs .", "prediction": "i like dogs ."},
    ]
    rep = score_predictions(rows, bertscore=BertScoreOptions(), n_resamples=0)
    f = [e["bertscore_f1"] for e in rep.per_example]
    assert f[0] == 0.0 and f[1] == 0.0
    assert f[2] == pytest.approx(100.0, abs=1e-3)
