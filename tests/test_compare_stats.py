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

from spt_bench.compare import (
    ComparisonRefused,
    build_comparison,
    compare_command,
    load_runs,
    render,
)
from spt_bench.errors import SptBenchError
from spt_bench.io import atomic_write_json, read_jsonl
from spt_bench.metrics import ScoreTable
from spt_bench.metrics.bootstrap import holm_adjust, seed_bootstrap
from spt_bench.metrics.files import write_example_stats


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
    from spt_bench.metrics.ttest import seed_t_test

    base = [_rows(p) for p in seeded["prompt-tuning"]]
    direct = seed_t_test([_rows(p) for p in seeded["spt"]], base)
    assert spt.p_value == pytest.approx({m: direct[m]["p_value"] for m in c.metrics})
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


def test_rows_of_several_seeds_get_a_seed_level_t_test_named_in_the_legend(seeded):
    """Issue 23 item 7: Welch's t on the per-seed values for rows of several seeds (the
    seed-grouped bootstrap over-rejects true nulls); one seed on both sides keeps the paired
    bootstrap; one seed on one side: a t-test with the other side's spread."""
    from spt_bench.metrics.ttest import welch_t_test

    runs = [p for paths in seeded.values() for p in paths]
    c = build_comparison(load_runs(runs), baseline="prompt-tuning")
    spt, lora = c.rows[1], c.rows[2]
    assert spt.p_test == lora.p_test == "Welch t"
    a = [ScoreTable.from_per_example(_rows(p)).point()["f1"] for p in seeded["lora"]]
    b = [ScoreTable.from_per_example(_rows(p)).point()["f1"] for p in seeded["prompt-tuning"]]
    assert lora.p_value["f1"] == pytest.approx(welch_t_test(a, b)["p_value"])
    assert lora.per_seed["f1"] == pytest.approx(a)
    md = render(c, "md")
    assert "p = p-value vs the baseline by Welch's t-test on the per-seed values," in md
    assert json.loads(render(c, "json"))["rows"][1]["p_test"] == "Welch t"
    # one seed each: the paired bootstrap, as before
    pair = build_comparison(
        load_runs([seeded["prompt-tuning"][0], seeded["spt"][0]]), baseline="prompt-tuning"
    )
    direct = seed_bootstrap([_rows(seeded["spt"][0])], [_rows(seeded["prompt-tuning"][0])])
    assert pair.rows[1].p_test == "paired bootstrap"
    assert pair.rows[1].p_value == {m: direct[m]["p_value"] for m in pair.metrics}
    assert "by the paired bootstrap over the test examples," in render(pair, "md")
    # a one-seed row against a 3-seed baseline: t with the baseline's seed spread; the legend
    # names the test of each row when they differ
    mixed = build_comparison(
        load_runs([*seeded["prompt-tuning"], seeded["spt"][0], *seeded["lora"]]),
        baseline="prompt-tuning",
    )
    one = next(r for r in mixed.rows if r.method == "spt")
    assert one.p_test == "t (one-seed side)" and one.p_value["f1"] < 0.01
    legend = render(mixed, "md")
    assert "the one-seed side taking the other side's seed spread (rows: spt (K=4, L=8))" in legend
    assert "by Welch's t-test on the per-seed values (rows: lora [3 seeds])" in legend


def test_p_adjust_scope_table_holm_adjusts_every_p_value_of_the_table(seeded):
    runs = [p for paths in seeded.values() for p in paths]
    row = build_comparison(load_runs(runs), baseline="prompt-tuning")
    table = build_comparison(load_runs(runs), baseline="prompt-tuning", p_adjust_scope="table")
    assert [r.p_value for r in table.rows] == [r.p_value for r in row.rows]
    family = {(i, m): p for i, r in enumerate(table.rows) for m, p in r.p_value.items()}
    adjusted = holm_adjust(family)
    for i, r in enumerate(table.rows):
        assert r.p_adjusted == {m: adjusted[i, m] for m in r.p_value}
    assert table.rows[2].p_adjusted["f1"] >= row.rows[2].p_adjusted["f1"]
    assert f"Holm-adjusted across all {len(family)} p-values of the table" in render(table, "md")
    assert "Holm-adjusted per table" in render(table, "latex")
    with pytest.raises(SptBenchError, match="--p-adjust-scope"):
        build_comparison(load_runs(runs), baseline="prompt-tuning", p_adjust_scope="column")
    from typer.testing import CliRunner

    from cli import app

    res = CliRunner().invoke(
        app,
        ["compare", *map(str, runs), "-b", "prompt-tuning", "-f", "json", "--p-adjust-scope",
         "table"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["p_adjust_scope"] == "table"
    assert "--p-adjust-scope" in CliRunner().invoke(app, ["compare", "--help"]).output


def _with_changed_references(src: Path, dst: Path, n_changed: int) -> Path:
    """A copy of a run whose first `n_changed` references were edited (as if run on a modified
    copy of the data file), rescored by the real scorer."""
    from spt_bench.metrics import score_predictions

    shutil.copytree(src, dst)
    rows = [{k: v for k, v in r.items() if k != "prompt_scores"} for r in
            read_jsonl(dst / "predictions.jsonl")]  # fmt: skip
    for r in rows[:n_changed]:
        r["reference"] = r["reference"] + " indeed ."
    report = score_predictions(rows, bertscore=None, n_resamples=0)
    (dst / "example_scores.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in report.per_example)
    )
    atomic_write_json(dst / "metrics.json", report.to_json())
    return dst


def test_runs_on_the_same_ids_but_other_references_are_refused_unless_forced(seeded, tmp_path):
    """Issue 23 item 2: compare checked ids, not references."""
    pt, spt = seeded["prompt-tuning"][0], seeded["spt"][0]
    assert all(len(r["reference_sha"]) == 16 for r in _rows(pt))  # kept per example, no text
    free = tmp_path / "free.jsonl"
    write_example_stats(_rows(pt), free)
    assert all("reference_sha" in r for r in read_jsonl(free))
    changed = _with_changed_references(spt, tmp_path / "spt-modified", 8)
    with pytest.raises(ComparisonRefused, match="share example ids but not their references") as e:
        build_comparison(load_runs([pt, changed]), baseline="prompt-tuning")
    assert "8 of the 200 shared examples" in str(e.value) and "pass --force" in str(e.value)
    c = build_comparison(load_runs([pt, changed]), baseline="prompt-tuning", force=True)
    assert any("p-values use the 192 examples whose references match" in n for n in c.notes)
    assert any("references differ between runs on 8 examples" in n for n in c.notes)
    keep = {r["id"] for r in _rows(pt)[8:]}
    direct = seed_bootstrap(
        [[r for r in _rows(changed) if r["id"] in keep]],
        [[r for r in _rows(pt) if r["id"] in keep]],
    )
    assert c.rows[1].p_value == {m: direct[m]["p_value"] for m in c.metrics}
    # the CLI refuses with the message, and --force warns
    from typer.testing import CliRunner

    from cli import app

    res = CliRunner().invoke(app, ["compare", str(pt), str(changed), "-f", "md"])
    assert res.exit_code != 0 and "not their references" in res.output
    forced = CliRunner().invoke(app, ["compare", str(pt), str(changed), "-f", "md", "--force"])
    assert forced.exit_code == 0 and "warning: forced: runs share example ids" in forced.output


def test_per_example_files_without_reference_hashes_still_compare(seeded, tmp_path):
    old = []
    for p in (seeded["prompt-tuning"][0], seeded["spt"][0]):
        dst = tmp_path / p.name
        shutil.copytree(p, dst)
        rows = [{k: v for k, v in r.items() if k != "reference_sha"} for r in _rows(dst)]
        (dst / "example_scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        old.append(dst)
    c = build_comparison(load_runs(old), baseline="prompt-tuning")
    assert c.rows[1].p_value and not any("reference" in n for n in c.notes)
    # one run with hashes, one without: compared, with a short note
    mixed = build_comparison(load_runs([old[0], seeded["spt"][0]]), baseline="prompt-tuning")
    assert mixed.rows[1].p_value
    assert any(n.startswith("references not checked for: prompt-tuning-s0") for n in mixed.notes)


def test_model_label_and_ties_of_displayed_values(seeded, tmp_path):
    """Issue 23 item 14: `model=`, not `name=`; equal displayed values are all bold."""
    from spt_bench.compare import RunRecord, assign_labels

    def run(model: str) -> RunRecord:
        config = {"method": {"name": "lora"}, "model": {"name": model}, "seed": 0}
        return RunRecord(tmp_path / model, config, {"overall": {}})

    runs = [run("tiny-random"), run("smollm2-135m")]
    assign_labels(runs)
    assert [r.label for r in runs] == ["lora (model=tiny-random)", "lora (model=smollm2-135m)"]
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(seeded["spt"][0], a)
    shutil.copytree(seeded["spt"][1], b)
    for path, f1 in ((a, 12.341), (b, 12.344)):  # both shown as 12.34
        m = json.loads((path / "metrics.json").read_text())
        m["overall"]["f1"] = f1
        atomic_write_json(path / "metrics.json", m)
    c = build_comparison(load_runs([a, b]), group_seeds=False)
    assert all("f1" in r.best for r in c.rows)
    header, body = md_table_cells(render(c, "md"))
    assert [body[i][header.index("F1 ↑")][:9] for i in (0, 1)] == ["**12.34**"] * 2


def test_rich_output_off_a_terminal_never_truncates_labels_or_numbers(seeded, tmp_path):
    """Issue 23 item 10: compare's default (rich) output read in a log (stdout not a TTY)."""
    from typer.testing import CliRunner

    from cli import app

    long = make_run(
        tmp_path, "long", method="spt", quality=0.5, n_resamples=50,
        method_options={"k": 4, "prompt_len": 8, "a_rather_long_option_name": "a-long-value-xyz"},
    )  # fmt: skip
    other = make_run(
        tmp_path, "other", method="spt", quality=0.4, n_resamples=50,
        method_options={"k": 4, "prompt_len": 8, "a_rather_long_option_name": "another-value"},
    )  # fmt: skip
    res = CliRunner().invoke(app, ["compare", str(long), str(other), "-b", str(other)])
    assert res.exit_code == 0, res.output
    assert "…" not in res.output
    c = build_comparison(load_runs([long, other]), baseline=str(other))
    label = c.rows[0].label
    assert "a_rather_long_option_name=a-long-value-xyz" in label
    lines = res.output.splitlines()
    assert any(label in ln for ln in lines)  # on one line, not folded
    for m in c.metrics:
        lo, hi = c.rows[0].ci95[m]
        assert f"[{lo:.2f}, {hi:.2f}]" in res.output
        assert any(f"{c.rows[0].gain[m]:+.2f}" in ln for ln in lines)
    text = render(c, "rich")  # --out t.txt
    assert "…" not in text and any(label in ln for ln in text.splitlines())
