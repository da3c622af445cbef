"""Hand-computed values for the text-level metrics on tiny cases."""

from __future__ import annotations

import pytest

from spt_bench.metrics import score_predictions
from spt_bench.metrics.text import normalize_answer, persona_f1, stop_words, token_f1


def score(pred: str, ref: str, **extra) -> dict[str, float]:
    row = {"id": "x", "reference": ref, "prediction": pred, **extra}
    return score_predictions([row], bertscore=None, n_resamples=0).overall


def test_normalisation_lowercases_strips_punctuation_and_articles():
    assert normalize_answer("The Cat's hat!") == "cat s hat"
    assert normalize_answer("An apple, a pear; THE end.") == "apple pear end"
    # articles only as whole words
    assert normalize_answer("theatre and anatomy") == "theatre and anatomy"
    # every ASCII punctuation character becomes a space
    assert normalize_answer("a-b_c/d@e[f]g{h}i~j`k'l\"m") == "b c d e f g h i j k l m"


def test_f1_normalises_case_punctuation_and_articles():
    # pred -> [cat, sat], ref -> [cat, sat, on, mat]: P=1, R=1/2, F1=2/3
    assert score("The cat sat.", "a cat sat on the mat")["f1"] == pytest.approx(200 / 3)


def test_f1_raw_is_case_and_punctuation_sensitive():
    # [The, cat, sat.] vs [the, cat, sat, .]: only "cat" matches, P=1/3, R=1/4 -> F1=2/7
    s = score("The cat sat.", "the cat sat .")
    assert s["f1_raw"] == pytest.approx(200 / 7)
    assert s["f1"] == pytest.approx(100.0)


def test_f1_counts_repeated_tokens_as_a_multiset():
    # [b, b, b, c] vs [b, b]: 2 common, P=1/2, R=1 -> F1=2/3
    assert score("b b b c", "b b")["f1_raw"] == pytest.approx(200 / 3)


def test_empty_prediction_scores_zero():
    s = score("", "i like dogs")
    assert s["f1"] == s["f1_raw"] == s["rouge1"] == s["bleu"] == 0.0
    assert s["avg_len"] == 0.0
    assert s["dist1"] == 0.0


def test_empty_reference_scores_zero():
    s = score("i like dogs", "")
    assert s["f1"] == s["f1_raw"] == s["rougeL"] == 0.0


def test_prediction_of_only_articles_is_empty_after_normalisation():
    s = score("the a an", "the a an")
    assert s["f1"] == 0.0
    assert s["f1_raw"] == pytest.approx(100.0)


def test_unicode_is_lowercased_and_kept():
    s = score("Café DÉJÀ-vu !", "café déjà vu")
    assert s["f1"] == pytest.approx(100.0)
    assert s["f1_raw"] == 0.0
    # non-ASCII punctuation is not in ParlAI's list: "vu…" stays one token
    assert score("déjà vu…", "déjà vu")["f1"] == pytest.approx(50.0)


def test_distinct_and_length_on_a_tiny_corpus():
    rows = [
        {"id": "1", "reference": "x", "prediction": "a b a"},
        {"id": "2", "reference": "x", "prediction": "a b"},
    ]
    s = score_predictions(rows, bertscore=None, n_resamples=0).overall
    # unigrams a b a a b: 2 distinct of 5; bigrams (a b) (b a) (a b): 2 of 3
    assert s["dist1"] == pytest.approx(40.0)
    assert s["dist2"] == pytest.approx(200 / 3)
    assert s["avg_len"] == pytest.approx(2.5)


def test_token_f1_symmetric_cases():
    assert token_f1([], []) == 0.0
    assert token_f1(["a"], ["b"]) == 0.0
    assert token_f1(["a", "b"], ["b", "a"]) == 1.0


def test_stop_words_ship_with_the_package_in_normalised_form():
    sw = stop_words()
    assert {"i", "my", "t", "don", "and", "is"} <= sw
    assert "dogs" not in sw and "love" not in sw
    assert all(w == normalize_answer(w) for w in sw)


def test_persona_f1_is_the_best_content_overlap_with_one_persona_sentence():
    persona = ["i love my dogs .", "i work as a nurse ."]
    # content tokens: pred [dogs, great], sentence 1 [love, dogs] -> P=R=1/2 -> 0.5
    assert persona_f1("my dogs are great", persona) == pytest.approx(0.5)
    # stop words alone never match
    assert persona_f1("i am my own", persona) == 0.0
    assert persona_f1("nurse", persona) == pytest.approx(2 / 3)
    assert persona_f1("dogs", []) == 0.0
    s = score("my dogs are great", "ok", persona=persona)
    assert s["persona_f1"] == pytest.approx(50.0)
