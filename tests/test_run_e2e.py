"""`spt-bench run` / `evaluate` / `methods` end to end on the bundled sample (tiny-random)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app

runner = CliRunner()
TINY = ["--model", "tiny-random", "--no-bertscore"]
SHORT = ["--max-new-tokens", "4"]  # where the length of the responses does not matter


def _run(*args: str):
    return runner.invoke(app, ["run", *args], catch_exceptions=False)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_default_run_path_works_end_to_end_on_the_sample(tmp_path: Path) -> None:
    # exactly the embedded default except the model (tiny) and BERTScore (off in tests)
    res = _run(*TINY, "--out", str(tmp_path), "--name", "default")
    assert res.exit_code == 0, res.output
    run = tmp_path / "default"
    for name in ("config.json", "env.json", "train_log.jsonl", "predictions.jsonl",
                 "example_scores.jsonl", "metrics.json", "report.md", "checkpoint/state.json"):  # fmt: skip
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["method"]["name"] == "spt" and config["model"]["name"] == "tiny-random"
    assert config["train"]["lr"] is not None and config["method"]["options"]  # fully resolved
    assert "output" not in config  # a folder does not depend on where it lives
    metrics = json.loads((run / "metrics.json").read_text())
    preds = _rows(run / "predictions.jsonl")
    assert metrics["n"] == len(preds) == 23  # the sample's test split
    assert len({r["id"] for r in preds}) == len(preds)
    assert {"f1", "bleu", "rougeL", "dist1"} <= set(metrics["overall"])
    assert "bertscore_f1" not in metrics["overall"]
    assert all("selected_prompt" in r for r in preds)
    env = json.loads((run / "env.json").read_text())
    assert env["packages"]["torch"] and "git" in env and env["device"]["device"] == "cpu"
    assert "| metric |" in (run / "report.md").read_text()
    assert "f1" in res.output  # the rich report was printed


def test_run_folder_is_never_overwritten_silently_and_names_stay_inside(tmp_path: Path) -> None:
    args = [*TINY, *SHORT, "--no-model-metrics", "--method", "text-prompt", "--eval-limit", "3",
            "--out", str(tmp_path)]  # fmt: skip
    assert _run(*args, "--name", "a").exit_code == 0
    again = _run(*args, "--name", "a")
    assert again.exit_code == 2 and "already exists; use --overwrite" in again.output
    assert _run(*args, "--name", "a", "--overwrite").exit_code == 0
    escape = _run(*args, "--name", "../evil")
    assert escape.exit_code == 2 and "invalid run name" in escape.output
    assert not (tmp_path.parent / "evil").exists()
    # --overwrite never deletes a folder that is not a run folder
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    res = _run(*args, "--name", "mine", "--overwrite")
    assert res.exit_code == 2 and "not an spt-bench run folder" in res.output
    assert (tmp_path / "mine" / "notes.txt").is_file()


def test_evaluate_redecodes_a_saved_run_from_its_checkpoint(tmp_path: Path) -> None:
    args = [*TINY, *SHORT, "--no-model-metrics", "--method", "lora", "--max-steps", "3",
            "--eval-limit", "5"]  # fmt: skip
    assert _run(*args, "--out", str(tmp_path / "r")).exit_code == 0
    before = _rows(tmp_path / "r/predictions.jsonl")
    res = runner.invoke(app, ["evaluate", str(tmp_path / "r"), "--no-bertscore"])
    assert res.exit_code == 0, res.output
    after = _rows(tmp_path / "r/predictions.jsonl")
    assert [r["prediction"] for r in after] == [r["prediction"] for r in before]
    assert json.loads((tmp_path / "r/metrics.json").read_text())["evaluated_from"].startswith(
        "step-"
    )
    missing = runner.invoke(app, ["evaluate", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "not a run folder" in missing.output


def test_an_old_run_naming_the_retired_static_engine_evaluates_with_hf(
    finished_spt, tmp_path
) -> None:
    run = tmp_path / "r"
    shutil.copytree(finished_spt, run)
    before = _rows(run / "predictions.jsonl")
    config = json.loads((run / "config.json").read_text())
    config["decode_engine"] = "static"  # as written by spt-bench before the engine's retirement
    (run / "config.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="'static' was retired; decoding with 'hf'"):
        res = runner.invoke(app, ["evaluate", str(run), "--no-bertscore", "--no-model-metrics"])
    assert res.exit_code == 0, res.output
    after = _rows(run / "predictions.jsonl")
    assert [r["raw_prediction"] for r in after] == [r["raw_prediction"] for r in before]
    assert json.loads((run / "metrics.json").read_text())["decode"]["engine"] == "hf"


def test_resume_continues_a_run_and_refuses_changed_settings(finished_full_ft, tmp_path) -> None:
    out = str(tmp_path / "r")
    shutil.copytree(finished_full_ft, out)  # full-ft, 2 steps, 3 test rows
    (tmp_path / "r/metrics.json").unlink()
    lines = (tmp_path / "r/predictions.jsonl").read_text().splitlines()
    (tmp_path / "r/predictions.jsonl").write_text(lines[0] + "\n")
    res = _run("--resume", "--out", out)
    assert res.exit_code == 0, res.output
    assert len(_rows(tmp_path / "r/predictions.jsonl")) == 3
    metrics = json.loads((tmp_path / "r/metrics.json").read_text())
    assert metrics["decode"]["n_resumed"] == 1 and metrics["decode"]["n_decoded_this_process"] == 2
    assert metrics["decode"]["n_decoded"] == 3  # every row, whichever process decoded it
    changed = _run("--resume", "--out", out, "--lr", "0.5")
    assert changed.exit_code == 2 and "changed settings: --lr (train.lr)" in changed.output


def test_resume_may_change_memory_settings_and_records_them(finished_spt, tmp_path) -> None:
    # a run killed for memory resumes with checkpointing on and a smaller decoding batch
    out = str(tmp_path / "r")
    shutil.copytree(finished_spt, out)
    (tmp_path / "r/metrics.json").unlink()
    res = _run(
        "--resume", "--out", out, "--activation-checkpointing", "1", "--eval-batch-size", "2"
    )
    assert res.exit_code == 0, res.output
    config = json.loads((tmp_path / "r/config.json").read_text())
    assert config["train"]["activation_checkpointing"] == 1.0
    assert config["decode"]["batch_size"] == 2
    (record,) = _rows(tmp_path / "r/resume_log.jsonl")
    assert record["changed"]["train.activation_checkpointing"] == {"from": 0.0, "to": 1.0}
    assert record["changed"]["decode.batch_size"] == {"from": 16, "to": 2}


def test_methods_command_lists_every_method() -> None:
    res = runner.invoke(app, ["methods"])
    assert res.exit_code == 0
    for name in ("text-prompt", "full-ft", "lora", "ia3", "dora", "peft"):
        assert name in res.output
    assert "trainable" in res.output and "SmolLM2-135M" in res.output


def test_bad_flags_are_one_line_errors(tmp_path: Path) -> None:
    res = _run(*TINY, "--method", "lora", "--k", "4", "--out", str(tmp_path / "x"))
    assert res.exit_code == 2
    assert "method 'lora' has no option 'k'" in res.output
    res = _run(*TINY, "--decoding", "nucleus", "--out", str(tmp_path / "y"))
    assert res.exit_code == 2 and "decoding" in res.output


@pytest.mark.slow
def test_default_run_with_the_real_model(tmp_path: Path) -> None:
    res = _run("--out", str(tmp_path / "real"))
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "real/metrics.json").read_text())
    assert metrics["n"] == 23 and "bertscore_f1" in metrics["overall"]


def test_setup_runs_for_training_with_the_runs_formatter_and_not_for_a_checkpoint(
    tmp_path: Path, monkeypatch
) -> None:
    """--retriever-center's query centre comes from the run's formatting (here 64 input
    tokens); evaluate and resume load it from the checkpoint instead of recomputing it."""
    from spt_bench.spt import SelectivePromptTuning

    calls: list[int | None] = []
    original = SelectivePromptTuning.setup

    def spy(self, train_examples, *, seed=0, formatter=None):
        calls.append(getattr(formatter, "max_input_tokens", None))
        return original(self, train_examples, seed=seed, formatter=formatter)

    monkeypatch.setattr(SelectivePromptTuning, "setup", spy)
    args = [*TINY, *SHORT, "--retriever-center", "--max-steps", "2", "--eval-limit", "3",
            "--dev-limit", "2",
            "--no-model-metrics", "--out", str(tmp_path), "--name", "c"]  # fmt: skip
    config = tmp_path / "cfg.yaml"
    config.write_text("data:\n  max_input_tokens: 64\n")
    assert _run(*args, "--config", str(config)).exit_code == 0
    assert calls == [64]
    res = runner.invoke(app, ["evaluate", str(tmp_path / "c"), "--no-bertscore"])
    assert res.exit_code == 0, res.output
    (tmp_path / "c/metrics.json").unlink()
    res = _run("--resume", "--out", str(tmp_path / "c"))
    assert res.exit_code == 0, res.output
    assert calls == [64]  # neither evaluate nor resume recomputed the centre


def test_vllm_engine_without_vllm_fails_before_training_naming_the_install(tmp_path, monkeypatch):
    import spt_bench.vllm_engine as ve

    monkeypatch.setattr(ve, "vllm_available", lambda: False)
    res = _run(*TINY, "--decode-engine", "vllm", "--out", str(tmp_path), "--name", "x")
    assert res.exit_code == 2
    line = res.output.strip().splitlines()[-1]
    assert "pip install 'spt-bench[vllm]'" in line and "make setup" in line
    assert not (tmp_path / "x" / "train_log.jsonl").exists()  # no training was wasted


def test_clean_rule_is_recorded_and_rescore_recleans_the_raw_predictions(tmp_path: Path) -> None:
    from spt_bench.decode import clean_response

    args = [*TINY, *SHORT, "--method", "text-prompt", "--eval-limit", "3", "--no-model-metrics"]
    assert _run(*args, "--out", str(tmp_path), "--name", "a", "--clean", "authors").exit_code == 0
    run = tmp_path / "a"
    assert json.loads((run / "metrics.json").read_text())["clean_rule"] == "authors"
    assert json.loads((run / "config.json").read_text())["decode"]["clean"] == "authors"
    rows = _rows(run / "predictions.jsonl")
    assert all(r["prediction"] == clean_response(r["raw_prediction"], "authors") for r in rows)
    # known raw texts: re-cleaned by each rule without the model
    raws = [" we meet at 6:30 pm", " R: hello", " i like dogs.\nQ: and you?"]
    for r, raw in zip(rows, raws, strict=True):
        r["raw_prediction"] = raw
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for rule, expected in (
        ("default", ["we meet at 6:30 pm", "hello", "i like dogs."]),
        ("authors", ["we meet at 6", "", "i like dogs."]),
    ):
        res = runner.invoke(
            app, ["evaluate", str(run), "--rescore", "--no-bertscore", "--clean", rule]
        )
        assert res.exit_code == 0, res.output
        assert [r["prediction"] for r in _rows(run / "predictions.jsonl")] == expected
        assert json.loads((run / "metrics.json").read_text())["clean_rule"] == rule
        assert json.loads((run / "config.json").read_text())["decode"]["clean"] == rule
    bad = _run(*args, "--out", str(tmp_path), "--name", "b", "--clean", "parlai")
    assert bad.exit_code == 2 and "clean" in bad.output


def test_authors_settings_flags_reach_the_saved_config(tmp_path: Path) -> None:
    args = [*TINY, *SHORT, "--max-steps", "1", "--eval-limit", "2", "--dev-limit", "2",
            "--no-model-metrics"]  # fmt: skip
    flags = ["--random-batches", "--max-grad-norm", "0", "--fusion-reduction", "token",
             "--softplus-threshold", "20"]  # fmt: skip
    assert _run(*args, *flags, "--out", str(tmp_path), "--name", "a").exit_code == 0
    config = json.loads((tmp_path / "a/config.json").read_text())
    assert config["train"]["bucket_by_length"] is False and config["train"]["max_grad_norm"] == 0
    assert config["method"]["options"]["fusion_reduction"] == "token"
    assert config["method"]["options"]["softplus_threshold"] == 20.0
    assert _run(*args, "--out", str(tmp_path), "--name", "b").exit_code == 0
    config = json.loads((tmp_path / "b/config.json").read_text())
    assert config["train"]["bucket_by_length"] is True and config["train"]["max_grad_norm"] == 1
    assert config["method"]["options"]["fusion_reduction"] == "example"
    assert config["method"]["options"]["softplus_threshold"] == 1.0
