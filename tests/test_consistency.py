"""NLI C-score, its label mapping and calibration controls (tiny marker classifier)."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_nli import build_marker_nli

from spt_bench.errors import ConfigError, MissingAssetError
from spt_bench.metrics import score_predictions
from spt_bench.metrics.bootstrap import bootstrap_ci
from spt_bench.metrics.calibration import auc, calibrate, shuffled_sources
from spt_bench.metrics.model_scores import ModelScoring
from spt_bench.metrics.nli import NliOptions, NliScorer, label_values
from spt_bench.metrics.table import ScoreTable

PERSONA = {"a": ["i like k1 .", "i have a k2 ."], "b": ["i love k3 .", "my k4 is red ."]}
# (prediction, C, entailed any, contradicted any) against persona "a"
CASES_A = [("k1 and k2", 2, 1, 0), ("not k1", -2, 0, 1), ("hello", 0, 0, 0), ("k2", 1, 1, 0)]


@pytest.fixture(scope="module")
def nli_dir(tmp_path_factory):
    return build_marker_nli(tmp_path_factory.mktemp("nli"))


def _rows(n_per_turn: int = 30) -> tuple[list[dict], list[tuple]]:
    """Two dialogue groups; turn 0 and turn 1 each n_per_turn rows; expected values alongside.
    Gold references carry their own dialogue's key (own persona: entailed; another: neutral)."""
    rows, expected = [], []
    for i in range(2 * n_per_turn):
        turn = i // n_per_turn
        dialog = f"d{i % 6}"
        persona = PERSONA["a"] if i % 6 < 3 else PERSONA["b"]
        pred, c, e, x = CASES_A[(i + turn) % len(CASES_A)]
        if persona is PERSONA["b"]:  # the same shapes against persona b's keys
            pred = pred.replace("k1", "k3").replace("k2", "k4")
        ref = "i like k1" if persona is PERSONA["a"] else "i love k3"
        row = {"id": str(i), "dialog_id": dialog, "turn": turn, "persona": persona,
               "reference": ref, "prediction": pred}  # fmt: skip
        rows.append(row)
        expected.append((c, e, x))
    return rows, expected


def test_labels_map_from_id2label_in_any_order_and_case():
    assert label_values({0: "Contradiction", 1: "ENTAILMENT", 2: "neutral"}) == [-1, 1, 0]
    assert label_values({"2": "entailment", "0": "neutral", "1": "contradiction"}) == [0, -1, 1]


def test_unmappable_labels_are_refused_naming_them(tmp_path):
    with pytest.raises(ConfigError, match="LABEL_0.*LABEL_2"):
        label_values({0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}, "m")
    folder = build_marker_nli(tmp_path / "bad", {0: "yes", 1: "maybe", 2: "no"})
    scorer = NliScorer.create(NliOptions(str(folder)))
    with pytest.raises(ConfigError, match="0=yes, 1=maybe, 2=no"):
        scorer.classify(["a"], ["b"])


def test_c_score_without_an_nli_model_says_how_to_get_one(tmp_path):
    with pytest.raises(MissingAssetError, match="hf download cross-encoder/nli-deberta-v3-xsmall"):
        NliScorer.create(NliOptions(None))
    with pytest.raises(MissingAssetError, match="not found.*--nli-model"):
        NliScorer.create(NliOptions(str(tmp_path / "no-such-model")))
    broken = tmp_path / "broken"  # a folder that is no model (a hub id offline fails alike)
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    scorer = NliScorer.create(NliOptions(str(broken)))
    with pytest.raises(MissingAssetError, match="cannot load NLI model.*--nli-model"):
        scorer.classify(["a"], ["b"])


def test_c_score_rates_turns_and_cis_equal_hand_computed_values(nli_dir):
    rows, expected = _rows()
    report = score_predictions(
        rows, bertscore=None, model_scoring=ModelScoring(nli=NliOptions(str(nli_dir))), seed=3
    )
    c = np.array([e[0] for e in expected], dtype=float)
    ent = 100.0 * np.array([e[1] for e in expected])
    con = 100.0 * np.array([e[2] for e in expected])
    assert [ex["c_score"] for ex in report.per_example] == c.tolist()
    assert report.overall["c_score"] == pytest.approx(c.mean())
    assert report.overall["c_entail_rate"] == pytest.approx(ent.mean())
    assert report.overall["c_contradict_rate"] == pytest.approx(con.mean())
    for label, sl in (("0", slice(0, 30)), ("1", slice(30, 60))):
        assert report.by_turn[label]["c_score"] == pytest.approx(c[sl].mean())
        assert report.by_turn[label]["c_contradict_rate"] == pytest.approx(con[sl].mean())
    # the CI is the scorer's bootstrap over exactly these per-example values
    table = ScoreTable.from_per_example(report.per_example)
    assert report.ci95["c_score"] == bootstrap_ci(table, 1000, 3)["c_score"]
    lo, hi = report.ci95["c_score"]
    assert lo < c.mean() < hi
    assert report.model_scores["instruments"]["nli"]["model"] == str(nli_dir)
    assert "premise = response" in report.to_json()["instruments"]["nli"]["convention"]


def test_calibration_auc_is_exact_with_the_marker_classifier(nli_dir):
    rows, _ = _rows()
    scoring = ModelScoring(nli=NliOptions(str(nli_dir)))
    cal = score_predictions(rows, bertscore=None, model_scoring=scoring).model_scores
    # gold: own key -> C = 1; shuffled (other persona group's key, or own group's) -> 1 or 0
    got = cal["calibration"]["c_score"]
    source = shuffled_sources([r["dialog_id"] for r in rows], 0)
    group = [r["persona"] is PERSONA["a"] for r in rows]
    shuffled_c = np.array([1.0 if group[j] == group[i] else 0.0 for i, j in enumerate(source)])
    gold_c = np.ones(len(rows))
    n = len(rows)
    wins = sum((g > s) + 0.5 * (g == s) for g in gold_c for s in shuffled_c)
    assert got["auc"] == pytest.approx(wins / (n * n))
    assert got["gap"] == pytest.approx(float((gold_c - shuffled_c).mean()))
    for r in rows:  # references with no marker: nothing to tell apart
        r["reference"] = "hello"
    flat = score_predictions(rows, bertscore=None, model_scoring=scoring).model_scores
    assert flat["calibration"]["c_score"]["auc"] == 0.5
    assert flat["calibration"]["c_score"]["auc_ci95"] == [0.5, 0.5]
    assert flat["calibration"]["c_score"]["status"] == "not discriminating"


def test_shuffled_references_come_from_another_dialogue_with_a_fixed_seed():
    ids = ["a", "a", "a", "b", "b", "c", None]
    source = shuffled_sources(ids, seed=5)
    assert source == shuffled_sources(ids, seed=5)
    for i, j in enumerate(source):
        assert j != i
        assert ids[i] is None or ids[j] != ids[i]
    with pytest.raises(ValueError, match=">= 2 dialogues"):
        shuffled_sources(["a", "a"], 0)


def test_auc_counts_ties_as_half_and_flags_by_the_ci():
    assert auc(np.array([3.0, 2.0]), np.array([1.0, 2.0]))[0] == pytest.approx(
        (1 + 1 + 0.5 + 1) / 4
    )
    assert auc(np.array([1.0]), np.array([2.0]))[0] == 0.0
    sure = calibrate([2.0] * 20, [0.0] * 20)
    assert sure["auc"] == 1.0 and sure["status"] == "discriminating"
    assert sure["gap_ci95"] == [2.0, 2.0]
    inverted = calibrate([0.0] * 20, [1.0] * 20)
    assert inverted["status"] == "inverted"


def test_an_empty_persona_scores_zero_without_running_the_model(nli_dir):
    from spt_bench.metrics.score_cache import ScoreCache

    scorer = NliScorer.create(NliOptions(str(nli_dir)))
    assert scorer.score(["k1"], [[]], ScoreCache(None)) == [{"c": 0, "e": 0, "x": 0}]
    assert scorer.pairs_classified == 0
