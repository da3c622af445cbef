"""What compare, plots, report, chat, the scorer and bench show about a method comes from the method's
class-level hooks: the generic modules name no method, the hooks load without torch, and a new
method's labels, notes, row fields and report sections reach the outputs through them."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from run_helpers import make_run

from spt_bench import methods
from spt_bench.compare import build_comparison, load_runs
from spt_bench.methods import BenchEntry, LogField, Method, ReportSection, RowField

REPO = Path(__file__).resolve().parents[1]
GENERIC = [
    *sorted((REPO / "spt_bench" / "compare").glob("*.py")),
    *sorted((REPO / "spt_bench" / "plots").glob("*.py")),
    *sorted((REPO / "spt_bench" / "bench").glob("*.py")),
    REPO / "spt_bench" / "report.py",
    REPO / "spt_bench" / "chat.py",
    REPO / "metrics" / "scorer.py",
]
METHOD_NAMES = re.compile(r"^spt$|text-prompt|prompt-tuning|lora|prefix-tuning|selected_prompt")


def _code_strings(path: Path) -> list[str]:
    """String constants of a module that are not docstrings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docs.add(id(body[0].value))
    return [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
    ]


@pytest.mark.parametrize("path", GENERIC, ids=lambda p: str(p.relative_to(REPO)))
def test_generic_modules_name_no_method(path):
    named = [s for s in _code_strings(path) if METHOD_NAMES.search(s)]
    assert not named, f"{path.name} names a method: {named}"


def test_the_registry_and_every_class_hook_load_without_torch():
    code = (
        "import sys\n"
        "from spt_bench.methods import list_methods, carried_row_fields\n"
        "for cls in list_methods():\n"
        "    cls.option_labels, cls.row_fields, cls.compare_note, cls.describe_row({})\n"
        "    cls.report_sections({}, [], []), cls.prompt_usage([])\n"
        "    cls.bench, cls.bench_options({'k': 4, 'prompt_len': 8})\n"
        "assert carried_row_fields() == ('selected_prompt',), carried_row_fields()\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@dataclass
class _WidthOptions:
    width: int = 3
    depth: int = 2


class _Toy(Method):
    """A method known only through its hooks (never built)."""

    name = "toy"
    description = "toy"
    Options = _WidthOptions
    option_labels = {"width": "w"}
    row_fields = (RowField("choice", "the toy's choice", carry=True, sample=True),)
    compare_note = "toy rows are toys."
    log_fields = (
        LogField("toy_term", "loss"),
        LogField("toy_gauge", "diagnostic", "Toy gauge", "units", order=5),
    )

    @classmethod
    def report_sections(cls, metrics, rows, example_scores):
        return [ReportSection("Toy", "intro", ["a", "b"], [[1, 0.123456]], ["a note"])]

    @classmethod
    def describe_row(cls, info):
        return f"[toy chose {info['choice']}]" if "choice" in info else ""


@pytest.fixture
def toy(monkeypatch):
    methods._load_builtin_methods()
    monkeypatch.setitem(methods._REGISTRY, "toy", _Toy)
    return _Toy


def test_labels_and_notes_come_from_the_method_hooks(toy, tmp_path):
    a = make_run(tmp_path, "a", method="toy", quality=0.3, n_dialogues=4, n_resamples=0,
                 method_options={"width": 3, "depth": 2})  # fmt: skip
    b = make_run(tmp_path, "b", method="toy", quality=0.4, n_dialogues=4, n_resamples=0,
                 method_options={"width": 3, "depth": 5})  # fmt: skip
    c = build_comparison(load_runs([a, b]))
    assert [r.label for r in c.rows] == ["toy (w=3, depth=2)", "toy (w=3, depth=5)"]
    assert "toy rows are toys." in c.notes


def test_report_chat_and_scorer_use_the_row_fields_and_sections(toy):
    from spt_bench.chat import describe_reply_info
    from spt_bench.metrics.scorer import carried_fields
    from spt_bench.report import render_report

    assert "choice" in carried_fields()
    assert describe_reply_info({"choice": 2}, toy) == "[toy chose 2]"
    assert describe_reply_info({"choice": 2}) == "[toy chose 2]"  # found through the registry
    rows = [{"id": "d0_t0", "turn": 0, "persona": [], "reference": "r", "prediction": "p",
             "choice": 1}]  # fmt: skip
    text = render_report({"method": {"name": "toy"}}, {"overall": {}}, rows, [], toy)
    assert "## Toy\n\nintro\n\n| a | b |\n|---|---|\n| 1 | 0.12 |\n\na note" in text
    assert "- choice: 1" in text


def test_training_plots_place_a_method_s_log_fields(toy, tmp_path):
    from spt_bench.plots.training import training_curves, training_panels

    (tmp_path / "train_log.jsonl").write_text(
        '{"step": 1, "lr": 0.1, "loss": 2.0, "toy_term": 1.0, "grad_norm": 3.0, "toy_gauge": 4}\n'
    )
    curves = training_curves(tmp_path)
    assert set(curves.losses) == {"loss", "toy_term"}
    assert training_panels(curves)[0] == ["loss", "terms", "lr", "toy_gauge", "grad_norm"]


def test_bench_defaults_and_variants_come_from_the_bench_hooks(toy, monkeypatch):
    """The default training benchmark, its order and the decoded method are the methods' bench
    entries (today spt then prompt-tuning, decoding spt); a method's entry adds it and says
    which extra variants it is timed in; its options come from `bench_options`."""
    from spt_bench.bench.settings import BenchSettings
    from spt_bench.bench.training import _variants

    assert BenchSettings().methods == ("spt", "prompt-tuning")
    assert BenchSettings().decode_method == "spt"
    monkeypatch.setattr(toy, "bench", BenchEntry(train_default=True, order=15))
    assert BenchSettings().methods == ("spt", "toy", "prompt-tuning")
    assert toy.bench_options({"k": 4, "prompt_len": 8, "width": 7}) == {"width": 7}
    settings = BenchSettings(checkpointing="0.5,1")
    assert list(_variants(toy, settings)) == [{}]
    monkeypatch.setattr(toy, "bench", BenchEntry(lean_compare=True, checkpointing=True))
    assert list(_variants(toy, settings)) == [
        {}, {"lean": False}, {"checkpointing": 0.5}, {"checkpointing": 1.0}
    ]  # fmt: skip
    assert list(_variants(toy, BenchSettings(lean_compare=False))) == [{}]
