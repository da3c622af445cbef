"""`spt-bench data ...`: inspect, split and convert persona-dialogue data."""

from __future__ import annotations

from pathlib import Path

import typer

from spt_bench.commands.base import command, data_app
from spt_bench.errors import SptBenchError

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
    from rich.table import Table

    from spt_bench.data import resolve_source, splits_by_protocol, write_splits
    from spt_bench.data.resolve import load_source, narrow_source
    from spt_bench.data.splits import get_protocol
    from spt_bench.io import check_output_place
    from spt_bench.run_folder import refuse_inside_run_folder
    from spt_bench.tables import output_console

    get_protocol(protocol)
    if file_format not in ("jsonl", "parlai"):
        raise SptBenchError(f"--format must be jsonl or parlai, got {file_format!r}")
    refuse_inside_run_folder(Path(out) / "split.json")
    check_output_place(out, folder=True)
    source = narrow_source(resolve_source(path), split=split, variant=variant)
    examples = load_source(source, split=split, variant=variant)
    splits = splits_by_protocol(examples, str(source), protocol, seed)
    written = write_splits(splits, out, fmt=file_format)
    console = output_console()
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
    from spt_bench.io import check_output_place
    from spt_bench.run_folder import refuse_inside_run_folder

    if not out.endswith((".jsonl", ".txt")):
        raise SptBenchError(f"output {out!r} must end in .jsonl or .txt")
    refuse_inside_run_folder(out)
    check_output_place(out)
    examples = load_examples(path, split=split, variant=variant)
    if out.endswith(".jsonl"):
        write_examples_jsonl(examples, out)
    elif out.endswith(".txt"):
        write_parlai(examples, out)
    else:
        raise SptBenchError(f"output {out!r} must end in .jsonl or .txt")
    typer.echo(f"wrote {len(examples)} examples to {out}")


@command(data_app, "list")
def data_list(
    fmt: str = typer.Option("table", "--format", help="table, or json (one object per dataset)."),
) -> None:
    """The datasets `--data NAME` knows: source, licence, format, default split protocol, and
    where their files are on this machine (or where to put them)."""
    import json

    from spt_bench.data.named import named_rows
    from spt_bench.tables import fold_table, output_console

    if fmt not in ("table", "json"):
        raise SptBenchError(f"--format must be table or json, got {fmt!r}")
    rows = named_rows()
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=1))
        return
    table = fold_table(["name", "format", "licence", "default split", "source", "here"])
    for r in rows:
        here = "yes" if r["present"] else f"no (${r['env']})"
        table.add_row(r["name"], r["format"], r["licence"], r["protocol"], r["source"], here)
    console = output_console()
    console.print(table)
    aliases = ", ".join(f"{a} = {n}" for a, n in rows[0]["aliases"].items())
    console.print(
        f"aliases: {aliases}. Files go in the dataset's $SPT_BENCH_*_DIR, "
        "$SPT_BENCH_DATA_DIR/<folder> or ~/.cache/spt-bench/data/<folder> (docs/data.md); "
        "`--format json` lists each one's file names and where it was found."
    )
