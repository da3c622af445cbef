"""compare: seeds grouped into rows, seed-aware and Holm-adjusted p-values, refusals (example
sets, clean rule), output suffixes, ties, compact tables and the footnotes. Synthetic run
folders (tests/test_compare.py's make_run) whose answers are known."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from run_helpers import make_run, md_table_cells

from metrics import ScoreTable
from metrics.bootstrap import holm_adjust, seed_bootstrap
from metrics.files import write_example_stats
from spt_bench.compare import (
    ComparisonRefused,
    build_comparison,
    compare_command,
    load_runs,
    render,
)
from spt_bench.errors import SptBenchError
from spt_bench.io import atomic_write_json, read_jsonl


def _rows(run: Path) -> list[dict]:
    return list(read_jsonl(run / "example_scores.jsonl"))


def _set_metrics(run: Path, **fields) -> None:
    m = json.loads((run / "metrics.json").read_text())
    m.update(fields)
    atomic_write_json(run / "metrics.json", m)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> dict[str, list[Path]]:
    """prompt-tuning x3 seeds (quality .3), spt x3 seeds consistently better (quality .6),
    lora x3 seeds straddling prompt-tuning (.55/.05/.3: its first seed alone looks better)."""
    root = tmp_path_factory.mktemp("seeded")
    out: dict[str, list[Path]] = {}
    for method, qualities in (
        ("prompt-tuning", (0.3, 0.3, 0.3)),
        ("spt", (0.6, 0.6, 0.6)),
        ("lora", (0.55, 0.05, 0.3)),
    ):
        out[method] = [
            make_run(root, f"{method}-s{s}", method=method, quality=q, seed=s, n_resamples=0)
            for s, q in enumerate(qualities)
        ]
    return out


def test_runs_differing_only_in_seed_are_one_row_with_mean_std_and_per_seed_values(seeded):
    runs = [p for paths in seeded.values() for p in paths]
    c = build_comparison(load_runs(runs), baseline="prompt-tuning")
    assert [r.label for r in c.rows] == [
        "prompt-tuning [3 seeds]",
        "spt (K=4, L=8) [3 seeds]",
        "lora [3 seeds]",
    ]
    spt = c.rows[1]
    files = [json.loads((p / "metrics.json").read_text())["overall"] for p in seeded["spt"]]
    for m in c.metrics:
        per_seed = [f[m] for f in files]
        assert spt.per_seed[m] == per_seed
        assert spt.values[m] == pytest.approx(sum(per_seed) / 3)
        mean = sum(per_seed) / 3
        assert spt.std[m] == pytest.approx((sum((v - mean) ** 2 for v in per_seed) / 2) ** 0.5)
    assert spt.seeds == [0, 1, 2] and not spt.ci95
    parsed = json.loads(render(c, "json"))
    assert parsed["rows"][1]["per_seed"]["f1"] == spt.per_seed["f1"]
    table = list(csv.DictReader(io.StringIO(render(c, "csv"))))
    assert table[1]["seeds"] == "0;1;2" and table[1]["n_seeds"] == "3"
    assert [float(v) for v in table[1]["f1_per_seed"].split(";")] == spt.per_seed["f1"]
    # md shows mean ± std; --per-seed gives one row per run again
    header, body = md_table_cells(render(c, "md"))
    assert body[1][header.index("F1 ↑")].endswith(f"±{spt.std['f1']:.2f}")
    assert len(build_comparison(load_runs(runs), group_seeds=False).rows) == 9


def test_row_p_values_account_for_seeds_and_are_holm_adjusted(seeded):
    runs = [p for paths in seeded.values() for p in paths]
    c = build_comparison(load_runs(runs), baseline="prompt-tuning")
    spt, lora = c.rows[1], c.rows[2]
    base = [_rows(p) for p in seeded["prompt-tuning"]]
    direct = seed_bootstrap([_rows(p) for p in seeded["spt"]], base)
    assert spt.p_value == {m: direct[m]["p_value"] for m in c.metrics}
    assert spt.p_adjusted == holm_adjust(spt.p_value)
    assert spt.p_adjusted["f1"] < 0.01  # consistently better on every seed
    # lora's first seed alone beats the baseline clearly; over its seeds it does not
    alone = build_comparison(
        load_runs([seeded["prompt-tuning"][0], seeded["lora"][0]]), baseline="prompt-tuning"
    )
    assert alone.rows[1].p_value["f1"] < 0.01
    assert lora.p_value["f1"] > 0.05
    md = render(c, "md")
    assert f"Holm-adjusted across the {len(c.metrics)} metrics of each row" in md
    none = build_comparison(load_runs(runs), baseline="prompt-tuning", p_adjust="none")
    assert none.rows[1].p_adjusted == none.rows[1].p_value
    assert "not adjusted for multiple comparisons" in render(none, "md")
    with pytest.raises(SptBenchError, match="--p-adjust"):
        build_comparison(load_runs(runs), baseline="prompt-tuning", p_adjust="bonferroni")


def test_text_free_score_file_alone_gives_the_same_comparison(seeded, tmp_path):
    copies = []
    for p in (seeded["prompt-tuning"][0], seeded["spt"][0]):
        dst = tmp_path / p.name
        shutil.copytree(p, dst)
        write_example_stats(_rows(dst), dst / "example_stats.jsonl")
        for name in ("example_scores.jsonl", "predictions.jsonl"):
            (dst / name).unlink()
        copies.append(dst)
    full = build_comparison(
        load_runs([seeded["prompt-tuning"][0], seeded["spt"][0]]), baseline="prompt-tuning"
    )
    free = build_comparison(load_runs(copies), baseline="prompt-tuning")
    assert free.rows[1].p_value == full.rows[1].p_value
    assert free.rows[1].values == full.rows[1].values


def test_runs_without_per_example_scores_compare_without_p_values(seeded, tmp_path):
    copies = []
    for p in (seeded["prompt-tuning"][0], seeded["spt"][0]):
        dst = tmp_path / p.name
        dst.mkdir()
        for name in ("config.json", "metrics.json"):
            shutil.copy(p / name, dst / name)
        copies.append(dst)
    c = build_comparison(load_runs(copies), baseline="prompt-tuning")
    assert not c.rows[1].p_value and c.rows[1].gain
    assert any(n.startswith("no p-values for: spt") for n in c.notes)
    assert any("checked by count and data settings only" in n for n in c.notes)
    _set_metrics(copies[1], n=150)
    with pytest.raises(ComparisonRefused, match="different example sets"):
        build_comparison(load_runs(copies), baseline="prompt-tuning")


def test_forced_different_example_sets_are_scored_on_the_shared_examples(seeded, tmp_path):
    short = make_run(tmp_path, "short", method="spt", quality=0.6, seed=7, keep=150)
    pt = seeded["prompt-tuning"][0]
    with pytest.raises(ComparisonRefused, match="different example sets"):
        build_comparison(load_runs([pt, short]), baseline="prompt-tuning")
    c = build_comparison(load_runs([pt, short]), baseline="prompt-tuning", force=True)
    shared = {r["id"] for r in _rows(short)}
    pt_on_shared = ScoreTable.from_per_example([r for r in _rows(pt) if r["id"] in shared])
    assert c.rows[0].n == 150
    assert c.rows[0].values == pytest.approx({m: pt_on_shared.point()[m] for m in c.metrics})
    assert c.rows[0].values["f1"] != json.loads((pt / "metrics.json").read_text())["overall"]["f1"]
    assert any("computed on the 150 examples all runs share" in n for n in c.notes)


def test_refuses_to_mix_post_processing_rules_unless_forced(seeded, tmp_path):
    a, b = (tmp_path / "a", tmp_path / "b")
    shutil.copytree(seeded["prompt-tuning"][0], a)
    shutil.copytree(seeded["spt"][0], b)
    _set_metrics(a, clean_rule="default")  # same as no key: comparable
    assert build_comparison(load_runs([a, b]))
    _set_metrics(b, clean_rule="authors")
    with pytest.raises(ComparisonRefused, match="different post-processing rules"):
        build_comparison(load_runs([a, b]))
    forced = build_comparison(load_runs([a, b]), force=True)
    assert any("forced: runs used different post-processing rules" in n for n in forced.notes)
    # two seeds with different rules are not one row
    c = tmp_path / "c"
    shutil.copytree(seeded["spt"][1], c)
    assert len(build_comparison(load_runs([b, c]), force=True).rows) == 2


def test_out_suffix_sets_the_format_and_unknown_suffixes_are_refused(seeded, tmp_path):
    runs = [seeded["prompt-tuning"][0], seeded["spt"][0]]
    quiet = dict(err=lambda m: None)
    compare_command(runs, out=tmp_path / "t.tex", **quiet)
    assert (tmp_path / "t.tex").read_text().startswith("% spt-bench compare")
    with pytest.raises(SptBenchError, match=r"unknown file type \.docx"):
        compare_command(runs, out=tmp_path / "t.docx", **quiet)
    with pytest.raises(SptBenchError, match="is a csv file but --format is md"):
        compare_command(runs, out=tmp_path / "t.csv", fmt="md", **quiet)
    assert not (tmp_path / "t.docx").exists() and not (tmp_path / "t.csv").exists()
    compare_command(runs, out=tmp_path / "t.docx", fmt="md", **quiet)  # explicit: allowed
    assert (tmp_path / "t.docx").read_text().startswith("| Run |")


def test_identical_runs_are_both_bold(seeded, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(seeded["spt"][0], twin)
    c = build_comparison(load_runs([seeded["spt"][0], twin]), group_seeds=False)
    hib = [m for m in c.metrics if c.higher_is_better[m] is not None]
    assert all(set(hib) <= set(r.best) for r in c.rows)
    header, body = md_table_cells(render(c, "md"))
    assert all(body[i][header.index("F1 ↑")].startswith("**") for i in (0, 1))


@pytest.fixture(scope="module")
def with_ci(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("ci")
    return [
        make_run(root, "pt", method="prompt-tuning", quality=0.3, n_resamples=100),
        make_run(root, "spt", method="spt", quality=0.5, n_resamples=100),
    ]


def test_rich_legend_and_cells_both_use_brackets_at_two_decimals(with_ci):
    c = build_comparison(load_runs(with_ci[1:]))
    text = render(c, "rich")
    lo, hi = c.rows[0].ci95["f1"]
    assert f"[{lo:.2f}, {hi:.2f}]" in text and "brackets: 95% bootstrap CI" in text
    assert "–" not in text.split("Values")[0].replace("─", "")  # no dash-style interval


def test_compact_latex_with_chosen_columns_fits_a_narrow_table(with_ci):
    runs = load_runs(with_ci)
    c = build_comparison(runs, baseline="prompt-tuning", metrics=["f1", "bleu"], compact=True)
    tex = render(c, "latex")
    assert r"\begin{tabular}{lrr}" in tex and "$_{" not in tex
    full = render(build_comparison(runs, baseline="prompt-tuning", metrics=["f1"]), "latex")
    assert "$_{[" in full


def test_paper_dist_n_is_flagged_when_corpus_sizes_differ_more_than_2x(seeded):
    c = build_comparison(load_runs([seeded["spt"][0]]), paper=True)  # 200 vs 7801 responses
    paper_rows = [r for r in c.rows if r.source == "paper"]
    assert all(r.flags == {"dist1": "†", "dist2": "†"} for r in paper_rows)
    assert any(n.startswith("† Dist-n depends on corpus size") and "7,801" in n for n in c.notes)
    header, body = md_table_cells(render(c, "md"))
    assert body[1][header.index("Dist-1 ↑")].endswith("†")


def test_text_prompt_rows_get_the_f1_raw_footnote(seeded, tmp_path):
    tp = make_run(tmp_path, "tp", method="text-prompt", quality=0.3, n_resamples=0)
    c = build_comparison(load_runs([seeded["spt"][0], tp]))
    assert any(n.startswith("text-prompt answers in the chat model's cased") for n in c.notes)
    assert not any(
        "text-prompt answers" in n for n in build_comparison(load_runs([seeded["spt"][0]])).notes
    )


def test_cli_flags_reach_compare_and_errors_are_one_line(with_ci, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    args = ["compare", *map(str, with_ci), "--baseline", "prompt-tuning"]
    res = CliRunner().invoke(
        app, [*args, "-f", "latex", "--compact", "-m", "f1", "-m", "dist2", "--p-adjust", "none"]
    )
    assert res.exit_code == 0, res.output
    assert r"\begin{tabular}{lrr}" in res.stdout and "$_{" not in res.stdout
    assert "not adjusted for multiple comparisons" in res.stdout
    bad = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "t.docx")])
    assert bad.exit_code == 2 and bad.output.startswith("error: --out")
    assert len(bad.output.strip().splitlines()) == 1
    per_seed = CliRunner().invoke(app, [*args, "-f", "json", "--per-seed"])
    assert per_seed.exit_code == 0 and json.loads(per_seed.stdout)["p_adjust"] == "holm"


def test_nested_config_schema_gives_method_seed_and_options(tmp_path):
    from spt_bench.compare import RunRecord

    config = {
        "method": {"name": "spt", "options": {"k": 2, "prompt_len": 4}},
        "model": {"name": "tiny-random"},
        "seed": 3,
        "train": {"lr": 0.1},
        "data": {"split_seed": 0},
    }
    run = RunRecord(tmp_path, config, {"overall": {}})
    assert (run.method, run.model, run.seed) == ("spt", "tiny-random", 3)
    assert run.method_options == {"k": 2, "prompt_len": 4}
    other = RunRecord(tmp_path, {**config, "seed": 4}, {"overall": {}})
    assert other.settings_key() == run.settings_key()  # only the seed differs
    lr = {**config, "seed": 4, "train": {"lr": 0.2}}
    assert RunRecord(tmp_path, lr, {}).settings_key() != run.settings_key()
    model = {**config, "model": {"name": "smollm2-135m"}}  # a last key "name" still counts
    assert RunRecord(tmp_path, model, {}).settings_key() != run.settings_key()
