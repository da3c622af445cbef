"""spt-bench command line: thin wrappers that build validated configs and call library code.

Heavy libraries (torch, transformers, datasets, metrics backends) are imported inside the
commands, never at module level, so `spt-bench --help` answers instantly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer

from spt_bench.errors import SptBenchError

app = typer.Typer(
    name="spt-bench",
    help="Selective Prompt Tuning and its baselines for persona dialogue: train, decode, score, compare.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(
    help="Inspect, split and convert persona-dialogue data.", no_args_is_help=True
)
plot_app = typer.Typer(
    help="Plots from run folders (PNG by default; SVG/PDF by extension).", no_args_is_help=True
)
app.add_typer(data_app, name="data")
app.add_typer(plot_app, name="plot")


def command(parent: typer.Typer, *args: Any, **kwargs: Any) -> Callable:
    """Register a command whose user errors print as one line (`error: ...`) and exit 2."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*a: Any, **k: Any) -> Any:
            try:
                return fn(*a, **k)
            except SptBenchError as e:
                typer.echo(f"error: {e}", err=True)
                raise typer.Exit(e.exit_code) from None

        return parent.command(*args, **kwargs)(wrapper)

    return deco


# ---------------------------------------------------------------- data commands (issue 2)

_DATA_HELP = "A data file (.txt ParlAI/ConvAI2, .jsonl canonical), a ConvAI2 folder, 'sample', a saved datasets folder or a datasets hub id."
_SPLIT_HELP = "Which split to read from a folder or dataset (train, valid, dev, test)."
_VARIANT_HELP = "ConvAI2 variant in a folder, e.g. self_original_no_cands (default if present)."


@command(data_app, "stats")
def data_stats(
    path: str = typer.Argument(..., help=_DATA_HELP),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object, no tables."),
    split: str | None = typer.Option(None, "--split", help=_SPLIT_HELP),
    variant: str | None = typer.Option(None, "--variant", help=_VARIANT_HELP),
) -> None:
    """Dialogues, examples, persona lines and turns per dialogue, token-length percentiles."""
    import json

    from spt_bench.data import dataset_stats, resolve_source
    from spt_bench.data.resolve import load_source, narrow_source
    from spt_bench.data.stats import render_stats

    source = narrow_source(resolve_source(path), split=split, variant=variant)
    stats = dataset_stats(load_source(source, split=split, variant=variant))
    if json_output:
        typer.echo(json.dumps({"source": str(source), **stats}))
    else:
        render_stats(stats, str(source))


@command(data_app, "show")
def data_show(
    path: str = typer.Argument(..., help=_DATA_HELP),
    n: int = typer.Option(3, "--n", min=1, help="How many examples to show."),
    start: int = typer.Option(0, "--start", min=0, help="Index of the first example shown."),
    split: str | None = typer.Option(None, "--split", help=_SPLIT_HELP),
    variant: str | None = typer.Option(None, "--variant", help=_VARIANT_HELP),
) -> None:
    """Pretty-print examples: persona, history and response."""
    from spt_bench.data import load_examples
    from spt_bench.data.stats import render_examples

    examples = load_examples(path, split=split, variant=variant)
    if start >= len(examples):
        raise SptBenchError(f"--start {start} is past the last example ({len(examples)} examples)")
    render_examples(examples[start : start + n])


@command(data_app, "split")
def data_split(
    path: str = typer.Argument(..., help=_DATA_HELP),
    out: str = typer.Option(..., "--out", help="Folder for train/dev/test files and split.json."),
    protocol: str = typer.Option("convai2-valid-split", "--protocol", help="Split protocol."),
    seed: int = typer.Option(0, "--seed", help="Seed of the dialogue shuffle."),
    file_format: str = typer.Option("jsonl", "--format", help="jsonl (canonical) or parlai."),
    split: str | None = typer.Option(None, "--split", help=_SPLIT_HELP),
    variant: str | None = typer.Option(None, "--variant", help=_VARIANT_HELP),
) -> None:
    """Split one source by dialogue into train/dev/test files (each written atomically)."""
    from rich.console import Console
    from rich.table import Table

    from spt_bench.data import resolve_source, splits_by_protocol, write_splits
    from spt_bench.data.resolve import load_source, narrow_source
    from spt_bench.data.splits import get_protocol

    get_protocol(protocol)
    if file_format not in ("jsonl", "parlai"):
        raise SptBenchError(f"--format must be jsonl or parlai, got {file_format!r}")
    source = narrow_source(resolve_source(path), split=split, variant=variant)
    examples = load_source(source, split=split, variant=variant)
    splits = splits_by_protocol(examples, str(source), protocol, seed)
    written = write_splits(splits, out, fmt=file_format)
    console = Console()
    console.print(f"{protocol} (seed {seed}) of {source} -> {out}")
    table = Table()
    for col in ("split", "dialogues", "examples", "dialogue ids sha256", "file"):
        table.add_column(col)
    for (name, counts), file in zip(splits.description["counts"].items(), written, strict=False):
        digest = counts["dialogue_ids_sha256"]
        table.add_row(name, str(counts["dialogues"]), str(counts["examples"]), digest, file.name)
    console.print(table)


@command(data_app, "convert")
def data_convert(
    path: str = typer.Argument(..., help=_DATA_HELP),
    out: str = typer.Argument(..., help="Output file: .jsonl (canonical) or .txt (ParlAI text)."),
    split: str | None = typer.Option(None, "--split", help=_SPLIT_HELP),
    variant: str | None = typer.Option(None, "--variant", help=_VARIANT_HELP),
) -> None:
    """Convert any source to canonical JSONL or ParlAI/ConvAI2 text (written atomically)."""
    from spt_bench.data import load_examples, write_examples_jsonl, write_parlai

    examples = load_examples(path, split=split, variant=variant)
    if out.endswith(".jsonl"):
        write_examples_jsonl(examples, out)
    elif out.endswith(".txt"):
        write_parlai(examples, out)
    else:
        raise SptBenchError(f"output {out!r} must end in .jsonl or .txt")
    typer.echo(f"wrote {len(examples)} examples to {out}")


# ---------------------------------------------------------------- score command (issue 3)


@command(app, "score")
def score(
    predictions: str = typer.Argument(
        ...,
        help="Predictions JSONL: id, reference, prediction (+ optional dialog_id, turn, persona, "
        "history, selected_prompt).",
        metavar="PREDICTIONS.jsonl",
        show_default=False,
    ),
    out: str = typer.Option(
        None, "--out", help="Where to write metrics.json (default: beside the input)."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the metrics as one JSON object instead of tables."
    ),
    no_bertscore: bool = typer.Option(False, "--no-bertscore", help="Skip BERTScore."),
    bertscore_model: str = typer.Option(
        None,
        "--bertscore-model",
        help="BERTScore encoder: HF id or local folder (default: offline all-MiniLM-L6-v2).",
    ),
    bertscore_layer: int = typer.Option(
        None,
        "--bertscore-layer",
        help="Encoder layer (default: 5 for MiniLM, else bert-score's tuned layer).",
    ),
    bertscore_idf: bool = typer.Option(False, "--bertscore-idf", help="idf-weighted BERTScore."),
    bertscore_batch_size: int = typer.Option(64, "--bertscore-batch-size"),
    device: str = typer.Option(
        None, "--device", help="BERTScore device (default: cuda when available)."
    ),
    resamples: int = typer.Option(1000, "--resamples", help="Bootstrap resamples (0: no CIs)."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
) -> None:
    """Score a predictions file exactly like an spt-bench run (metrics, 95% CIs, per turn)."""
    import json

    from rich.console import Console

    from metrics import BertScoreOptions, render_score_report, score_file
    from spt_bench.errors import ConfigError

    if resamples < 0:
        raise ConfigError(f"--resamples must be >= 0, got {resamples}")
    options = None
    if not no_bertscore:
        options = BertScoreOptions(
            model=bertscore_model,
            layer=bertscore_layer,
            idf=bertscore_idf,
            batch_size=bertscore_batch_size,
            device=device,
        )
    status = Console(stderr=True)
    with status.status("scoring...", spinner="dots"):
        scored = score_file(
            predictions, out=out, bertscore=options, n_resamples=resamples, seed=seed
        )
    if as_json:
        typer.echo(json.dumps(scored.report.to_json(), ensure_ascii=False))
        return
    console = Console()
    render_score_report(scored.report, console, title=f"{predictions}: {scored.report.n} examples")
    console.print(f"[dim]wrote {scored.metrics_path} and {scored.examples_path}[/dim]")


# ---------------------------------------------------------------- methods/run/evaluate (issue 4)


@command(app, "methods")
def methods_cmd() -> None:
    """List the registered methods: what trains, which prompt template, their options."""
    from rich.console import Console

    from spt_bench.runner import methods_table

    methods_table(Console())


_RUN_HELP = (
    "Train (if the method trains), decode the test split, score and report into a run folder."
)


@command(app, "run", help=_RUN_HELP)
def run_cmd(
    method: str = typer.Option(
        None, "--method", help="Method name (spt-bench methods) (default: spt)."
    ),
    model: str = typer.Option(
        None, "--model", help="smollm2-135m, tiny-random, HF id or folder (default: smollm2-135m)."
    ),
    data: str = typer.Option(
        None,
        "--data",
        help="Data file/folder/'sample'/dataset; one file is split by --split-protocol (default: bundled sample).",
    ),
    train_data: str = typer.Option(
        None, "--train-data", help="Separate training data (with --test-data)."
    ),
    test_data: str = typer.Option(
        None, "--test-data", help="Separate test data (with --train-data)."
    ),
    out: str = typer.Option(
        None, "--out", help="Run folder, or its parent when --name is given (default: runs/)."
    ),
    name: str = typer.Option(
        None, "--name", help="Run folder name under --out (default: <method>-<timestamp>)."
    ),
    seed: int = typer.Option(
        None, "--seed", help="Seed for init, data order, sampling (default: 0)."
    ),
    max_steps: int = typer.Option(
        None, "--max-steps", help="Optimiser steps (overrides --epochs)."
    ),
    epochs: float = typer.Option(
        None, "--epochs", help="Epochs over the train split (clears max_steps)."
    ),
    batch_size: int = typer.Option(None, "--batch-size", help="Training micro-batch size."),
    grad_accum: int = typer.Option(None, "--grad-accum", help="Micro-batches per optimiser step."),
    lr: float = typer.Option(None, "--lr", help="Peak learning rate (default: the method's)."),
    max_grad_norm: float = typer.Option(
        None, "--max-grad-norm", help="Gradient-norm clipping; 0 = none (default: 1.0)."
    ),
    bucket_by_length: bool = typer.Option(
        None,
        "--bucket-by-length/--random-batches",
        help="Training batches of similar-length rows (default) or random batches (the authors').",
    ),
    train_limit: int = typer.Option(
        None, "--train-limit", help="Use N train examples (seeded subset)."
    ),
    dev_limit: int = typer.Option(None, "--dev-limit", help="Use N dev examples."),
    eval_limit: int = typer.Option(None, "--eval-limit", help="Decode and score N test examples."),
    eval_every: int = typer.Option(
        None, "--eval-every", help="Dev loss every N steps (best checkpoint kept)."
    ),
    eval_batch_size: int = typer.Option(
        None, "--eval-batch-size", help="Decoding / dev batch size."
    ),
    max_new_tokens: int = typer.Option(
        None, "--max-new-tokens", help="Generated tokens cap (default: 32)."
    ),
    decoding: str = typer.Option(
        None, "--decoding", help="greedy | sample | beam (default: greedy)."
    ),
    decode_engine: str = typer.Option(
        None,
        "--decode-engine",
        help="hf (default) | static: preallocated KV cache + CUDA graphs (Llama-family models).",
    ),
    clean: str = typer.Option(
        None,
        "--clean",
        help="Post-processing: default | authors (the SPT code's cut at any colon; exact reproduction only).",
    ),
    device: str = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: auto)."),
    dtype: str = typer.Option(
        None, "--dtype", help="float32 | bfloat16 | float16 (default: bf16 on CUDA, fp32 on CPU)."
    ),
    no_bertscore: bool = typer.Option(False, "--no-bertscore", help="Skip BERTScore."),
    no_model_metrics: bool = typer.Option(
        False, "--no-model-metrics", help="Skip perplexity and hits@k (docs/model-metrics.md)."
    ),
    hits_k: str = typer.Option(None, "--hits-k", help="k for hits@k, e.g. 1,5 (default: 1)."),
    hits_candidates: int = typer.Option(
        None, "--hits-candidates", help="Synthetic candidates per example (default: 20)."
    ),
    config: str = typer.Option(None, "--config", help="YAML config file (below explicit flags)."),
    preset: str = typer.Option(
        None, "--preset", help="configs/<NAME>.yaml: smoke, paper, offline."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed run (same folder)."),
    trust_remote_code: bool = typer.Option(
        False, "--trust-remote-code", help="Allow model code from the hub."
    ),
    k: int = typer.Option(None, "--k", help="(spt) number of soft prompts K."),
    prompt_len: int = typer.Option(
        None, "--prompt-len", help="(spt, prompt-tuning) virtual tokens per prompt L."
    ),
    prompt_init: str = typer.Option(
        None, "--prompt-init", help="(spt, prompt-tuning) vocab | normal."
    ),
    fusion_weights: str = typer.Option(
        None,
        "--fusion-weights",
        help="(spt) raw (authors') | normalized: fuse logits with s_k or s_k / sum_j s_j.",
    ),
    fusion_reduction: str = typer.Option(
        None,
        "--fusion-reduction",
        help="(spt) example (authors'): L_fusion averaged per example, then over the batch | token.",
    ),
    softplus_threshold: float = typer.Option(
        None,
        "--softplus-threshold",
        help="(spt) threshold of the retriever's Softplus(beta=10): 1 (authors') | 20 (torch default).",
    ),
    retriever_center: bool = typer.Option(
        False,
        "--retriever-center",
        help="(spt) centre retriever queries and keys (fixes one-prompt collapse; not the authors').",
    ),
    retriever_query: str = typer.Option(
        None, "--retriever-query", help="(spt) embeddings | hidden."
    ),
    no_selection_loss: bool = typer.Option(False, "--no-selection-loss", help="(spt) drop L_sel."),
    no_fusion: bool = typer.Option(False, "--no-fusion", help="(spt) drop L_fusion."),
    no_contrastive: bool = typer.Option(False, "--no-contrastive", help="(spt) drop L_ctr."),
    selection_weight: float = typer.Option(None, "--selection-weight", help="(spt) lambda_sel."),
    contrastive_weight: float = typer.Option(
        None, "--contrastive-weight", help="(spt) lambda_ctr."
    ),
    fusion_weight: float = typer.Option(None, "--fusion-weight", help="(spt) weight of L_fusion."),
    tau_gold: float = typer.Option(
        None, "--tau-gold", help="(spt) temperature of the LM-loss ranking."
    ),
    tau_sim: float = typer.Option(
        None, "--tau-sim", help="(spt) temperature of the retriever scores."
    ),
    contrastive_threshold: float = typer.Option(
        None, "--contrastive-threshold", help="(spt) persona BLEU threshold."
    ),
    activation_checkpointing: float = typer.Option(
        None,
        "--activation-checkpointing",
        help="Share of LM layers recomputed in backward (0-1): less memory, more time.",
    ),
    lean_activations: bool = typer.Option(
        None,
        "--lean-activations/--no-lean-activations",
        help="Lean RMSNorm/MLP backward (default on): same gradients, ~1/3 less activation memory.",
    ),
    lora_r: int = typer.Option(None, "--lora-r", help="(lora) rank."),
    lora_alpha: float = typer.Option(None, "--lora-alpha", help="(lora) alpha."),
    lora_dropout: float = typer.Option(None, "--lora-dropout", help="(lora) dropout."),
    shots: int = typer.Option(
        None, "--shots", help="(text-prompt) k-shot demonstrations from train."
    ),
) -> None:
    from rich.console import Console

    from spt_bench.model_metrics import parse_hits_k
    from spt_bench.runner import config_for_cli, print_result, run

    method_options = {
        "k": k, "prompt_len": prompt_len, "prompt_init": prompt_init,
        "retriever_query": retriever_query, "fusion_weights": fusion_weights,
        "fusion_reduction": fusion_reduction, "softplus_threshold": softplus_threshold,
        "retriever_center": True if retriever_center else None,
        "selection_loss": False if no_selection_loss else None,
        "fusion": False if no_fusion else None,
        "contrastive": False if no_contrastive else None,
        "selection_weight": selection_weight, "contrastive_weight": contrastive_weight,
        "fusion_weight": fusion_weight, "tau_gold": tau_gold, "tau_sim": tau_sim,
        "contrastive_threshold": contrastive_threshold,
        "lora_r": lora_r, "lora_alpha": lora_alpha, "lora_dropout": lora_dropout, "shots": shots,
    }  # fmt: skip
    overrides = {
        "method": method, "model": model, "data": data, "train_data": train_data,
        "test_data": test_data, "out": out, "name": name, "seed": seed, "max_steps": max_steps,
        "epochs": epochs, "batch_size": batch_size, "grad_accum": grad_accum, "lr": lr,
        "max_grad_norm": max_grad_norm, "bucket_by_length": bucket_by_length,
        "train_limit": train_limit, "dev_limit": dev_limit, "eval_limit": eval_limit,
        "eval_every": eval_every, "eval_batch_size": eval_batch_size,
        "max_new_tokens": max_new_tokens, "decoding": decoding, "device": device,
        "decode_engine": decode_engine, "clean": clean,
        "dtype": dtype, "bertscore": False if no_bertscore else None,
        "model_metrics": False if no_model_metrics else None,
        "hits_k": parse_hits_k(hits_k) if hits_k is not None else None,
        "hits_candidates": hits_candidates,
        "trust_remote_code": True if trust_remote_code else None,
        "activation_checkpointing": activation_checkpointing,
        "lean_activations": lean_activations,
        "method_options": {k_: v for k_, v in method_options.items() if v is not None},
    }  # fmt: skip
    cfg = config_for_cli(overrides, preset=preset, config_file=config, resume=resume)
    console = Console()
    result = run(cfg, overwrite=overwrite, resume=resume, console=console)
    print_result(result, console)


@command(app, "evaluate")
def evaluate_cmd(
    run_dir: str = typer.Argument(..., help="A run folder made by spt-bench run."),
    no_bertscore: bool = typer.Option(False, "--no-bertscore", help="Skip BERTScore."),
    device: str = typer.Option(None, "--device", help="cpu, cuda ... (default: the run's)."),
    dtype: str = typer.Option(None, "--dtype", help="float32 | bfloat16 | float16."),
    eval_batch_size: int = typer.Option(None, "--eval-batch-size", help="Decoding batch size."),
    decode_engine: str = typer.Option(
        None, "--decode-engine", help="hf | static (default: the run's)."
    ),
    no_model_metrics: bool = typer.Option(
        False, "--no-model-metrics", help="Skip perplexity and hits@k."
    ),
    hits_k: str = typer.Option(None, "--hits-k", help="k for hits@k, e.g. 1,5 (default: run's)."),
    rescore: bool = typer.Option(
        False,
        "--rescore",
        help="Only re-score the saved predictions (no model; e.g. to add BERTScore).",
    ),
    clean: str = typer.Option(
        None,
        "--clean",
        help="Post-processing: default | authors (with --rescore: re-clean raw_prediction).",
    ),
) -> None:
    """Re-decode and re-score a saved run from its checkpoint (replaces its predictions)."""
    from rich.console import Console

    from spt_bench.model_metrics import parse_hits_k
    from spt_bench.runner import evaluate_run, print_result, rescore_run

    console = Console()
    if rescore:
        result = rescore_run(run_dir, bertscore=not no_bertscore, clean=clean, console=console)
        print_result(result, console)
        return
    result = evaluate_run(
        run_dir,
        bertscore=False if no_bertscore else None,
        device=device,
        dtype=dtype,
        eval_batch_size=eval_batch_size,
        decode_engine=decode_engine,
        model_metrics=False if no_model_metrics else None,
        hits_k=parse_hits_k(hits_k) if hits_k is not None else None,
        clean=clean,
        console=console,
    )
    print_result(result, console)


# ---------------------------------------------------------------- compare/plot/chat (issue 6)


@command(app, "compare")
def compare_cmd(
    runs: list[str] = typer.Argument(..., help="Run folders, folders of runs, or globs."),
    baseline: str | None = typer.Option(
        None, "--baseline", "-b", help="Baseline: a run folder, or the method/label of one run."
    ),
    fmt: str | None = typer.Option(
        None,
        "--format",
        "-f",
        help="rich|md|csv|json|latex (default: from --out's extension, else rich).",
    ),
    out: str | None = typer.Option(None, "--out", "-o", help="Write the table to this file."),
    paper: bool = typer.Option(False, "--paper", help="Add the SPT paper's published rows."),
    force: bool = typer.Option(
        False, "--force", help="Compare runs with different example sets or BERTScore encoders."
    ),
    metric: list[str] | None = typer.Option(
        None, "--metric", "-m", help="Columns to show (repeatable; default: F1s, BLEU, ROUGE, ...)."
    ),
) -> None:
    """Compare finished runs: metrics with 95% CIs, gains and paired-bootstrap p-values."""
    from spt_bench.compare import compare_command

    compare_command(
        runs, baseline=baseline, fmt=fmt, out=out, paper=paper, force=force, metrics=metric
    )


@command(plot_app, "turns")
def plot_turns_cmd(
    runs: list[str] = typer.Argument(..., help="Run folders, folders of runs, or globs."),
    metric: list[str] | None = typer.Option(
        None, "--metric", "-m", help="Metric per panel (repeatable; default f1)."
    ),
    out: str = typer.Option("turns.png", "--out", "-o", help="Image file (.png, .svg, .pdf)."),
) -> None:
    """Metric vs dialogue turn, one line per run with a 95% CI band (the paper's turn analysis)."""
    from spt_bench.plots import plot_turns_command

    typer.echo(f"wrote {plot_turns_command(runs, metric or ['f1'], out)}")


@command(plot_app, "prompts")
def plot_prompts_cmd(
    run: str = typer.Argument(..., help="An SPT run folder."),
    out: str = typer.Option("prompts.png", "--out", "-o", help="Image file (.png, .svg, .pdf)."),
    metric: str = typer.Option("f1", "--metric", "-m", help="Per-prompt mean of this metric."),
) -> None:
    """SPT prompt selection: frequency overall and per turn, per-prompt mean F1."""
    from spt_bench.plots import plot_prompts_command

    typer.echo(f"wrote {plot_prompts_command(run, out, metric=metric)}")


@command(plot_app, "training")
def plot_training_cmd(
    run: str = typer.Argument(..., help="A run folder with train_log.jsonl."),
    out: str = typer.Option("loss.png", "--out", "-o", help="Image file (.png, .svg, .pdf)."),
) -> None:
    """Each loss term over optimizer steps, with the dev loss."""
    from spt_bench.plots import plot_training_command

    typer.echo(f"wrote {plot_training_command(run, out)}")


@command(app, "chat")
def chat_cmd(
    run_dir: str | None = typer.Argument(None, help="A trained run folder (optional)."),
    persona: list[str] | None = typer.Option(
        None, "--persona", "-p", help="A persona sentence (repeatable)."
    ),
    model: str | None = typer.Option(None, "--model", help="Backbone when no run is given."),
    method: str | None = typer.Option(
        None, "--method", help="Method when no run is given (one that needs no training)."
    ),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, ... (default: auto)."),
    max_new_tokens: int | None = typer.Option(
        None, "--max-new-tokens", help="Reply length cap (default: the run's setting)."
    ),
) -> None:
    """Talk to a trained run (or a model + untrained method) in the terminal; /quit to leave."""
    from spt_bench.chat import chat_command

    chat_command(
        run_dir,
        persona=persona or [],
        model=model,
        method=method,
        device=device,
        max_new_tokens=max_new_tokens,
    )


# ---------------------------------------------------------------- bench (issue 8)


@command(app, "bench")
def bench_cmd(
    model: str = typer.Option("smollm2-135m", "--model", help="Backbone (as for run)."),
    data: str | None = typer.Option(
        None, "--data", help="Examples to use (as for run); default: the bundled sample."
    ),
    device: str | None = typer.Option(
        None, "--device", help="cpu, cuda ...; default: cuda when available."
    ),
    dtype: str | None = typer.Option(
        None, "--dtype", help="float32 | bfloat16 | float16; default: bf16 on CUDA, else fp32."
    ),
    batch_size: int = typer.Option(32, "--batch-size", help="Training batch size."),
    reps: int = typer.Option(5, "--reps", help="Timed training steps (median reported)."),
    warmup: int = typer.Option(2, "--warmup", help="Untimed warm-up steps."),
    k: int = typer.Option(4, "--k", help="SPT prompts K (and the plain reference's)."),
    decode_batch_size: str = typer.Option(
        "auto",
        "--decode-batch-size",
        help="Our decoding batch size(s), comma-separated; 'auto' = largest that fits (CUDA).",
    ),
    generate_batch_size: str | None = typer.Option(
        None,
        "--generate-batch-size",
        help="Plain generate batch size(s); default: the same as --decode-batch-size.",
    ),
    n_decode: int | None = typer.Option(
        None, "--n-decode", help="Prompts to decode; default: all on CUDA, 128 on CPU."
    ),
    decode_reps: int = typer.Option(1, "--decode-reps", help="Timed decoding passes (median)."),
    decode_engine: str = typer.Option(
        "hf,static",
        "--decode-engine",
        help="Our decoder's engine(s) to time, comma-separated: hf, static.",
    ),
    decode_method: str = typer.Option(
        "spt", "--decode-method", help="Method whose decoding is timed (untrained)."
    ),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", help="Generated tokens cap."),
    no_plain_generate: bool = typer.Option(
        False, "--no-plain-generate", help="Skip the plain model.generate reference."
    ),
    bertscore: bool = typer.Option(False, "--bertscore", help="Include BERTScore in the scorer."),
    predictions: str | None = typer.Option(
        None, "--predictions", help="Keep our decoder's predictions in this .jsonl file."
    ),
    profile: str | None = typer.Option(
        None, "--profile", help="Write torch.profiler tables (one spt step, one decode batch) here."
    ),
    checkpointing: str = typer.Option(
        None,
        "--checkpointing",
        help="Also time spt with activation checkpointing of these layer fractions, e.g. 0.25,1.",
    ),
    json_out: str | None = typer.Option(
        None,
        "--json",
        flag_value="-",
        help="Write all figures as JSON to FILE (or stdout when no FILE is given).",
    ),
) -> None:
    """Speed and memory: our training step, decoding and scorer vs plain PyTorch/transformers."""
    import json
    import sys
    from pathlib import Path

    from rich.console import Console

    from spt_bench.bench import BenchSettings, render_bench, run_bench
    from spt_bench.io import atomic_write_json

    settings = BenchSettings(
        model=model, data=data, device=device, dtype=dtype, batch_size=batch_size, reps=reps,
        warmup=warmup, k=k, decode_batch_sizes=decode_batch_size,
        generate_batch_sizes=generate_batch_size, n_decode=n_decode, decode_reps=decode_reps,
        decode_method=decode_method, decode_engines=decode_engine,
        max_new_tokens=max_new_tokens, plain_generate=not no_plain_generate, bertscore=bertscore,
        profile_dir=profile, checkpointing=checkpointing,
    )  # fmt: skip
    to_stdout = json_out == "-"
    console = Console(stderr=to_stdout)
    partial = None
    if json_out and not to_stdout:  # a run cut off while decoding keeps its training figures

        def partial(figures: dict) -> None:
            atomic_write_json(Path(json_out), figures)

    result = run_bench(
        settings,
        predictions_out=Path(predictions) if predictions else None,
        log=lambda msg: console.print(f"[dim]{msg}[/dim]"),
        on_partial=partial,
    )
    render_bench(result, console)
    if to_stdout:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    elif json_out:
        atomic_write_json(Path(json_out), result)
        console.print(f"wrote {json_out}")


if __name__ == "__main__":
    app()
