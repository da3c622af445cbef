"""`spt-bench bench`: figures for training, decoding and scoring on tiny-random, and the checks
that make them trustworthy (the plain reference sees the same inputs, both decoders agree)."""

from __future__ import annotations

import json

import pytest
from tiny_model import tiny_random
from typer.testing import CliRunner

from cli import app
from spt_bench.bench import (
    BenchSettings,
    build_bench_method,
    largest_decode_batch,
    parse_batch_sizes,
    run_bench,
)
from spt_bench.data import Example, write_examples_jsonl
from spt_bench.errors import ConfigError


@pytest.fixture(scope="module")
def short_data(tmp_path_factory) -> str:
    """Short dialogues (the bundled sample's ~200-token prompts make full-vocabulary logits of a
    49k vocabulary slow for a unit test)."""
    path = tmp_path_factory.mktemp("bench") / "short.jsonl"
    examples = [
        Example(
            f"d{d}", t, (f"i am person {d}.", f"i like {['tea', 'dogs', 'rain'][d % 3]}."),
            tuple(f"line {j} of {d}" for j in range(2 * t + 1)), f"reply {d} {t}",
        )
        for d in range(4)
        for t in range(2)
    ]  # fmt: skip
    write_examples_jsonl(examples, path)
    return str(path)


PARTIALS: list[dict] = []
LOG: list[str] = []


# The tests of one whole bench run (tiny_result, ~20 s) are slow: the fast suite keeps the bench
# end to end through its CLI (test_bench_cli_writes_json...), and the identities these tests
# read off the figures are checked directly - our loss equals plain transformers' loss
# (test_model_metrics' perplexity tests), activation checkpointing and lean activations keep
# the losses (test_harness_train, test_lean_autograd), our greedy decoding equals generate's
# (test_harness_decode).
@pytest.fixture(scope="module")
def tiny_result(short_data) -> dict:
    settings = BenchSettings(
        model="tiny-random", data=short_data, batch_size=3, reps=2, warmup=1, n_decode=5,
        decode_batch_sizes="2", generate_batch_sizes="2,5", max_new_tokens=6, checkpointing=True,
    )  # fmt: skip
    return run_bench(settings, on_partial=PARTIALS.append, log=LOG.append)


@pytest.mark.slow
def test_training_figures_are_handed_over_before_decoding_starts(tiny_result):
    """A run cut off while decoding (a GPU session's time limit) keeps its training figures:
    the CLI writes this partial result to --json, and every figure is logged as measured."""
    (partial,) = PARTIALS
    assert partial["partial"] and "decode" not in partial
    assert partial["train"] == tiny_result["train"]
    assert any(line.startswith("train spt: ") for line in LOG)
    assert any(line.startswith("decode ours (hf engine), batch 2: ") for line in LOG)


@pytest.mark.slow
def test_training_figures_cover_both_methods_and_their_plain_references(tiny_result):
    train = tiny_result["train"]
    names = [e["name"] for e in train["entries"]]
    assert names[0] == "spt" and "prompt-tuning" in names
    assert sum(e["kind"] == "plain" for e in train["entries"]) == 2
    for e in train["entries"]:
        assert e["step_s"] > 0 and len(e["step_s_all"]) == 2
        assert e["examples_per_s"] == pytest.approx(3 / e["step_s"])
    assert {"spt_over_prompt_tuning_time", "spt_speedup_over_plain"} <= set(train["ratios"])
    assert train["batch_size"] == 3 and train["tokens"] > train["response_tokens"] > 0
    pad = train["epoch_padding"]  # the loop's length bucketing never pads more than random
    assert 1.0 <= pad["bucketed_padded_over_real_tokens"] <= pad["random_padded_over_real_tokens"]


@pytest.mark.slow
def test_plain_reference_loss_equals_our_response_only_loss(tiny_result):
    """Same prompts, same batch: full-vocabulary model(...).loss == our response-only NLL."""
    by_name = {e["name"]: e for e in tiny_result["train"]["entries"]}
    for ours in ("spt", "prompt-tuning"):
        k = by_name[ours]["k"]
        plain = by_name[f"plain transformers, same prompts as {ours} (K={k})"]
        assert plain["first_loss"] == pytest.approx(by_name[ours]["first_loss"], abs=1e-4)


@pytest.mark.slow
def test_activation_checkpointing_variant_computes_the_same_loss(tiny_result):
    by_name = {e["name"]: e for e in tiny_result["train"]["entries"]}
    ckpt = by_name["spt + activation checkpointing"]
    assert ckpt["first_loss"] == pytest.approx(by_name["spt"]["first_loss"], abs=1e-5)
    assert "spt_checkpointing_over_spt_time" in tiny_result["train"]["ratios"]


@pytest.mark.slow
def test_lean_activations_entry_has_the_same_loss_and_a_ratio(tiny_result):
    by_name = {e["name"]: e for e in tiny_result["train"]["entries"]}
    plain_autograd = by_name["spt without lean activations"]
    assert plain_autograd["first_loss"] == pytest.approx(by_name["spt"]["first_loss"], abs=1e-5)
    assert tiny_result["train"]["ratios"]["spt_lean_over_plain_autograd_time"] > 0


@pytest.mark.slow
def test_decoding_matches_plain_generate_on_the_same_prompts(tiny_result):
    dec = tiny_result["decode"]
    assert dec["n"] == 5 and dec["max_new_tokens"] == 6
    assert [(f["engine"], f["batch_size"]) for f in dec["ours"]] == [("hf", 2)]
    assert [f["batch_size"] for f in dec["plain_generate"]] == [2, 5]
    (hf,) = dec["comparisons"]
    assert hf["batch_size"] == 2 and hf["speedup_same_batch"] > 0
    assert hf["identical_responses"] == 1.0  # fp32 greedy: our decoder, generate's text
    assert dec["ours"][0]["engine_start_s"] is None  # only the vllm engine starts one
    assert dec["best_plain"]["batch_size"] in (2, 5)
    assert tiny_result["score"]["seconds"] > 0 and tiny_result["score"]["rows"] == 5


@pytest.mark.slow
def test_bench_records_device_dtype_and_versions(tiny_result):
    assert tiny_result["device"] == "cpu" and tiny_result["dtype"] == "float32"
    assert tiny_result["env"]["packages"]["torch"]
    assert tiny_result["settings"]["batch_size"] == 3
    json.dumps(tiny_result)  # everything is JSON-ready


def test_batch_size_lists_parse_and_reject_nonsense():
    assert parse_batch_sizes("auto, 256,256", "--x") == ("auto", 256)
    with pytest.raises(ConfigError, match="--x: 'big'"):
        parse_batch_sizes("big", "--x")
    with pytest.raises(ConfigError, match=">= 1"):
        parse_batch_sizes("0", "--x")


def test_auto_decode_batch_on_cpu_is_the_cpu_default():

    bb = tiny_random()
    assert largest_decode_batch(bb, 300, 1000) == 32
    assert largest_decode_batch(bb, 300, 7) == 7


def test_bench_cli_writes_json_to_out_and_to_stdout_with_a_bare_json_flag(tmp_path, short_data):
    out_dir = tmp_path / "new" / "figures"
    args = [
        "bench", "--model", "tiny-random", "--data", short_data, "--batch-size", "2",
        "--n-decode", "2", "--decode-batch-size", "2", "--max-new-tokens", "3",
        "--no-plain-generate", "--out", f"{out_dir}/", "--json", "--reps", "1", "--warmup", "0",
    ]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    data = json.loads((out_dir / "bench.json").read_text())  # a folder --out: bench.json in it
    assert data["decode"]["plain_generate"] == [] and data["decode"]["ours"][0]["seconds"] > 0
    assert data["settings"]["reps"] == 1  # --json took no value: --reps is still an option
    printed = json.loads(res.stdout[res.stdout.index("{") :])
    assert printed["model"] == "tiny-random" and printed["decode"]["n"] == data["decode"]["n"] == 2
    assert "training step" in res.stderr and "decoding 2 prompts" in res.stderr


def test_bench_rejects_an_unknown_decode_engine():
    from spt_bench.bench import parse_engines

    assert parse_engines("vllm, hf,vllm") == ("vllm", "hf")
    with pytest.raises(ConfigError, match="--decode-engine: turbo"):
        parse_engines("hf,turbo")
    with pytest.raises(ConfigError, match="--decode-engine: static"):  # retired
        parse_engines("hf,static")


def test_bench_cli_rejects_bad_batch_size_in_one_line():
    res = CliRunner().invoke(app, ["bench", "--model", "tiny-random", "--decode-batch-size", "x"])
    assert res.exit_code == 2
    assert "error: --decode-batch-size: 'x'" in res.output


def test_decoding_halves_the_batch_on_out_of_memory_instead_of_crashing(tmp_path, monkeypatch):
    """A batch that does not fit is retried at half the size; every row still comes out once."""
    import torch

    import spt_bench.decode as dec

    bb = tiny_random()
    method = build_bench_method(bb, "prompt-tuning", BenchSettings(model="tiny-random"), [])
    examples = [
        Example(f"d{i}", 0, ("i like tea.",), (f"hello {i}",), "hi") for i in range(7)
    ]  # fmt: skip
    real = dec.generate_batch
    sizes: list[int] = []

    def small_gpu(method, batch, settings, gen=None):
        sizes.append(len(batch))
        if len(batch) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(method, batch, settings, gen)

    monkeypatch.setattr(dec, "generate_batch", small_gpu)
    settings = dec.DecodeSettings(batch_size=8, max_new_tokens=3)
    rows, stats = dec.decode(method, method.build_formatter(), examples, settings, tmp_path / "p")
    assert [r["id"] for r in rows] == [ex.id for ex in examples]
    assert sizes[:3] == [7, 4, 2] and stats.oom_halvings == 2 and stats.batch_size == 2
    assert stats.to_json()["oom_halvings"] == 2


HIDE_PACKAGES = '''
"""Make datasets/nltk/rouge_score/bert_score look uninstalled, as on the lent GPU machine."""
import sys
from importlib.machinery import PathFinder

HIDDEN = {"datasets", "nltk", "rouge_score", "bert_score"}


class HidingPathFinder(PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            return None
        return super().find_spec(name, path, target)


sys.meta_path[:] = [HidingPathFinder if f is PathFinder else f for f in sys.meta_path]
'''


# slow (the script in a subprocess, ~35 s): the bench it drives is covered in-process by the
# tiny_result tests and the bench CLI test above
@pytest.mark.slow
def test_gpu_check_script_runs_without_the_packages_the_gpu_box_lacks(tmp_path, short_data):
    """scripts/gpu_check.sh end to end on CPU (tiny-random, no GGUF join, no wheels) with
    datasets, nltk, rouge-score and bert-score hidden: the bench path must not need them."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(HIDE_PACKAGES)
    out = tmp_path / "out"
    env = {
        **os.environ, "PYTHONPATH": str(hide), "PYTHON": sys.executable, "OUT": str(out),
        "SPT_GPU_CHECK_MODEL": "tiny-random", "SPT_GPU_CHECK_DEVICE": "cpu",
        "SPT_GPU_CHECK_SKIP_WHEELS": "1", "SPT_GPU_CHECK_DATA": short_data,
        "SPT_GPU_CHECK_BATCH": "2", "SPT_GPU_CHECK_N_DECODE": "2", "SPT_GPU_CHECK_REPS": "1",
        "SPT_GPU_CHECK_WARMUP": "0", "SPT_GPU_CHECK_DECODE_BATCHES": "2",
        "SPT_GPU_CHECK_GENERATE_BATCHES": "2", "SPT_GPU_CHECK_MAX_NEW": "2",
    }  # fmt: skip
    res = subprocess.run(
        ["bash", str(repo / "scripts" / "gpu_check.sh")], env=env, capture_output=True,
        text=True, timeout=300, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "rouge_score: no" in res.stdout and "datasets: no" in res.stdout
    assert "scorer: n/a" in res.stdout
    data = json.loads((out / "bench.json").read_text())
    assert [c["identical_responses"] for c in data["decode"]["comparisons"]] == [1.0]
    assert "decode hf batch 2: " in res.stdout
    assert {p.name for p in out.iterdir()} >= {
        "bench.json",
        "bench.log",
        "predictions.jsonl",
        "train_profile.txt",
        "decode_profile.txt",
    }


@pytest.mark.parametrize("rule", ["default", "authors"])
def test_a_row_stopped_at_a_turn_marker_cleans_to_the_same_response(rule: str):
    """Stopping a row once `turn_ended` holds never changes the cleaned response, under either
    post-processing rule: for random generations, the first prefix (at any character) where it
    holds cleans like the whole."""
    import random

    from spt_bench.decode import clean_response, turn_ended

    pieces = [" Q:", " R:", "R:", "Q", " R", ":", " assistant", "assistant\n", "User:", " User",
              " i like", " tea", " .", "A:", " ", "\n", "given persona:", " Partner :", "x"]  # fmt: skip
    rng = random.Random(0)
    stopped = 0
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 9)))
        cut = next((n for n in range(1, len(text) + 1) if turn_ended(text[:n])), None)
        if cut is not None:
            stopped += 1
            assert clean_response(text[:cut], rule) == clean_response(text, rule), text
    assert stopped > 500  # the property was exercised, not vacuous
    assert turn_ended(" i like tea . Q: what") and not turn_ended(" R: i like tea")
