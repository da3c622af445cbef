"""The collapse-probe table of docs/results.md from probe run folders (finished or not).

    python scripts/probe_table.py docs/results/probe/authors-settings/*

One markdown row per run folder (config.json + train_log.jsonl, metrics.json once finished):
variant and seed, dev prompt usage at each evaluation, test prompt usage (64 decoded examples),
selection agreement (retriever argmax = LM-loss argmin; mean over the last 20 logged training
steps), dev loss at the last evaluation, test F1 / Dist-2. A run that has not finished shows the
steps it reached and "-" for what it has not measured yet.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from spt_bench.config import is_flat, upgrade_flat


def usage(counts: list[int]) -> str:
    return "/".join(str(c) for c in counts)


def row(folder: Path) -> str:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if is_flat(config):  # a run folder written before the nested schema
        config = upgrade_flat(config)
    log_path = folder / "train_log.jsonl"
    lines = log_path.read_text(encoding="utf-8").splitlines() if log_path.is_file() else []
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill
            continue
    train = [e for e in entries if e.get("type") == "train"]
    dev = [e for e in entries if e.get("type") == "dev"]
    opts = config["method"].get("options") or {}
    variant = "centred" if opts.get("retriever_center") else "authors'"
    steps = train[-1]["step"] if train else 0
    total = config["train"].get("max_steps")
    dev_usage = " · ".join(usage(e["prompt_usage"]) for e in dev if "prompt_usage" in e) or "-"
    last = [e["selection_agreement"] for e in train[-20:] if "selection_agreement" in e]
    agreement = f"{sum(last) / len(last):.2f}" if last else "-"
    dev_loss = f"{dev[-1]['dev_loss']:.3f}" if dev else "-"
    test_usage, quality = "-", "-"
    metrics_path = folder / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        diag = metrics.get("diagnostics") or {}
        if "prompt_usage" in diag:
            test_usage = usage(diag["prompt_usage"])
        overall = metrics.get("overall") or {}
        quality = f"{overall['f1']:.2f} / {overall['dist2']:.1f}"
        done = "done"
    else:
        done = f"step {steps} of {total}"
    return (
        f"| {variant}, {config.get('seed')} | {done} | {dev_usage} | {test_usage} | "
        f"{agreement} | {dev_loss} | {quality} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    evals = "dev usage at each evaluation"
    print(
        f"| variant, seed | state | {evals} | test usage (64) | sel. agreement | dev loss | "
        "test F1 / Dist-2 |"
    )
    print("|---|---|---|---|---|---|---|")
    for folder in sorted(args.runs):
        if (folder / "config.json").is_file():
            print(row(folder))


if __name__ == "__main__":
    main()
