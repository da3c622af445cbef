"""The benchmark's figures as rich tables and lines: the one place that renders them (the JSON
is `run_bench`'s dict as it is)."""

from __future__ import annotations

from typing import Any

from spt_bench.bench.settings import AUTO

TRAIN_COLUMNS = (
    "", "K", "logits", "step ms", "examples/s", "tokens/s", "peak memory", "first loss"
)  # fmt: skip
DECODE_COLUMNS = ("path", "batch", "seconds", "responses/s", "new tokens", "peak memory")


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def _mem(d: dict) -> str:
    gb = d.get("peak_memory_gb")
    if gb is None:
        return "n/a"
    if d.get("memory_kind") == "cpu_peak_rss_growth":
        return f"+{gb * 1024:.0f} MB RSS"
    return f"{gb:.2f} GB"


def _table(title: str, columns: tuple[str, ...], left: tuple[str, ...]) -> Any:
    from rich.table import Table

    t = Table(title=title)
    for col in columns:
        t.add_column(col, justify="left" if col in left else "right")
    return t


def render_training(tr: dict[str, Any], console: Any) -> None:
    """The training-step table, the epoch's padding and the ratios."""
    t = _table(
        f"training step: batch {tr['batch_size']}, padded length {tr['padded_length']}, "
        f"median of {tr['reps']} (warm-up {tr['warmup']} excluded)",
        TRAIN_COLUMNS, ("", "logits"),
    )  # fmt: skip
    for e in tr["entries"]:
        t.add_row(
            e["name"], str(e["k"]), e["logits"], _fmt(e["step_s"] * 1000),
            _fmt(e["examples_per_s"]), _fmt(e["tokens_per_s"], ".0f"), _mem(e),
            _fmt(e["first_loss"], ".4f"),
        )  # fmt: skip
    console.print(t)
    pad = tr.get("epoch_padding") or {}
    if pad:
        console.print(
            "  padded/real tokens over an epoch: "
            f"[bold]{pad['bucketed_padded_over_real_tokens']:.2f}x[/] with length bucketing "
            f"(the loop), {pad['random_padded_over_real_tokens']:.2f}x with random batches"
        )
    for k, v in tr["ratios"].items():
        console.print(f"  {k.replace('_', ' ')}: [bold]{v:.2f}x[/]")


def _decode_table(dec: dict[str, Any]) -> Any:
    t = _table(
        f"decoding {dec['n']} prompts ({dec['method']}, greedy, <= "
        f"{dec['max_new_tokens']} new tokens, stop at EOS/newline)",
        DECODE_COLUMNS, ("path",),
    )  # fmt: skip
    raw = (dec.get("raw_vllm") or {}).get("jobs", [])
    for f in dec["ours"] + dec["plain_generate"] + raw:
        engine = f" ({f['engine']} engine)" if f.get("engine") and f["path"] == "ours" else ""
        label = f["path"] + engine
        label += f" ({f['requested']})" if f["requested"] == AUTO else ""
        if f.get("engine_start_s") is not None:
            label += f", engine start {f['engine_start_s']:.1f} s (not timed)"
        if f["error"]:
            t.add_row(label, str(f["batch_size"]), f["error"], "-", "-", "-")
            continue
        t.add_row(
            label, str(f["batch_size"]), _fmt(f["seconds"], ".2f"),
            _fmt(f["responses_per_s"]), str(f["new_tokens"]), _mem(f),
        )  # fmt: skip
    return t


def _comparison_lines(c: dict[str, Any]) -> list[str]:
    engine = c.get("engine", "hf")
    lines = []
    if "speedup_same_batch" in c:
        lines.append(
            f"  batch {c['batch_size']}: ours ({engine} engine) "
            f"[bold]{c['speedup_same_batch']:.2f}x[/] plain generate; identical "
            f"responses {100 * c['identical_responses']:.1f}%"
        )
    if "speedup_over_hf_engine" in c:
        lines.append(
            f"  batch {c['batch_size']}: {engine} engine "
            f"[bold]{c['speedup_over_hf_engine']:.2f}x[/] the hf engine; identical "
            f"responses {100 * c['identical_to_hf_engine']:.1f}%"
        )
    return lines


def render_decoding(dec: dict[str, Any], console: Any) -> None:
    """The decoding table, the comparisons, how our rows stopped, best against best."""
    console.print(_decode_table(dec))
    for c in dec["comparisons"]:
        for line in _comparison_lines(c):
            console.print(line)
    if dec.get("stop_reasons"):
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(dec["stop_reasons"].items()))
        console.print(
            f"  our rows stopped at: {reasons}; mean {dec['mean_new_tokens']:.1f} new tokens"
        )
    raw = dec.get("raw_vllm")
    if raw:
        ratios = ", ".join(
            f"{k.removeprefix('ours_over_').replace('_', ' ')} {v:.2f}x"
            for k, v in raw.items() if k.startswith("ours_over_")
        )  # fmt: skip
        console.print(f"  our vllm engine's time over raw vLLM's: {ratios}")
        line = (
            f"  compute bound: {raw['forward_gflop']} GFLOP forward ({raw['prompt_tokens']} "
            f"prompt tokens) at {raw['gemm_gflops_fp32']} GFLOP/s fp32 GEMM = "
            f"{raw['compute_bound_s']} s"
        )
        if "achieved_gflops_ours" in raw:
            line += (
                f"; ours achieves {raw['achieved_gflops_ours']} GFLOP/s, "
                f"{100 * raw['share_outside_compute_ours']:.0f}% of its time above the bound"
            )
        if "achieved_gflops_hf_engine" in raw:
            line += f"; the hf engine {raw['achieved_gflops_hf_engine']} GFLOP/s"

        console.print(line)
    if "speedup_best_vs_best" in dec:
        console.print(
            f"  best vs best: ours {dec['best_ours']['seconds']:.2f}s "
            f"({dec['best_ours'].get('engine', 'hf')}, batch "
            f"{dec['best_ours']['batch_size']}) vs plain {dec['best_plain']['seconds']:.2f}s "
            f"(batch {dec['best_plain']['batch_size']}): "
            f"[bold]{dec['speedup_best_vs_best']:.2f}x[/]"
        )


def render_scoring(sc: dict[str, Any], console: Any) -> None:
    """The scorer's time, or why it was not measured."""
    if sc.get("seconds") is None:
        console.print(f"scorer: {sc['note']}")
        return
    what = "with" if sc["bertscore"] else "without"
    console.print(
        f"scorer ({what} BERTScore): {sc['seconds']:.2f}s for {sc['rows']} predictions "
        f"({sc['rows_per_s']:.0f}/s)"
    )


def render_bench(result: dict[str, Any], console: Any) -> None:
    """Rich tables: training step, decoding, scorer."""
    console.print(
        f"[bold]spt-bench bench[/]: {result['model']} on {result['device']} ({result['dtype']}), "
        f"data {result['data']} ({result['n_examples']} examples)"
    )
    if result.get("train"):
        render_training(result["train"], console)
    if result.get("decode"):
        render_decoding(result["decode"], console)
    if result.get("score"):
        render_scoring(result["score"], console)
    if result.get("instruments"):
        from spt_bench.bench.instruments import render_instruments

        render_instruments(result["instruments"], console)
    console.print(f"[dim]total {result['total_s']:.1f}s[/dim]")
