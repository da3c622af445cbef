"""Time the scorer on ConvAI2 valid: references vs. shuffled references as predictions.

    python -m metrics.benchmark [CONVAI2_TXT] [--bertscore] [--resamples N]

Prints seconds for the text metrics, the 1000-resample bootstrap (overall + per turn) and,
with --bertscore, BERTScore with the default MiniLM encoder (on CUDA when available). The
figures in docs/metrics.md come from this script.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path


def convai2_rows(path: Path, seed: int = 0) -> list[dict]:
    """Rows from a ParlAI ConvAI2 self-persona file, predictions = shuffled references."""
    rows: list[dict] = []
    persona: list[str] = []
    dialog = -1
    turn = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        num, text = line.split(" ", 1)
        if num == "1":
            dialog += 1
            persona, turn = [], 0
        if text.startswith("your persona:"):
            persona.append(text[len("your persona:") :].strip())
            continue
        if text.startswith("partner's persona:"):
            continue
        reference = text.split("\t")[1]
        rows.append(
            {
                "id": f"{dialog}:{turn}",
                "dialog_id": str(dialog),
                "turn": turn,
                "persona": list(persona),
                "reference": reference,
            }
        )
        turn += 1
    shuffled = [r["reference"] for r in rows]
    random.Random(seed).shuffle(shuffled)
    for r, p in zip(rows, shuffled, strict=True):
        r["prediction"] = p
    return rows


def time_bertscore(rows: list[dict], batch_size: int) -> dict:
    import torch

    from spt_bench.metrics.bertscore import BertScoreOptions, compute_bertscore

    preds = [r["prediction"] for r in rows]
    refs = [r["reference"] for r in rows]
    figures: dict = {"n": len(rows), "device": "cuda" if torch.cuda.is_available() else "cpu"}
    if torch.cuda.is_available():
        figures["gpu"] = torch.cuda.get_device_name()
    for label, options in (
        ("first_call_s", BertScoreOptions(batch_size=batch_size)),
        ("second_call_s", BertScoreOptions(batch_size=batch_size)),
        ("batch_256_s", BertScoreOptions(batch_size=256)),
    ):
        t = time.perf_counter()
        p, r, f, encoder = compute_bertscore(preds, refs, options)
        figures[label] = round(time.perf_counter() - t, 2)
    figures["bertscore_f1"] = round(100 * float(f.mean()), 4)
    figures["encoder"] = f"{encoder.label} layer {encoder.layer}"
    return figures


def main() -> None:
    default = Path(
        os.environ.get(
            "SPT_BENCH_CONVAI2_DIR", Path(__file__).resolve().parents[2] / "shared/data/convai2"
        )
    )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "file", nargs="?", type=Path, default=default / "valid_self_original_no_cands.txt"
    )
    parser.add_argument("--bertscore", action="store_true")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--bertscore-only", action="store_true", help="time BERTScore alone (needs no sacrebleu)"
    )
    args = parser.parse_args()

    from spt_bench.metrics import BertScoreOptions, ScoreTable, bootstrap_ci, score_predictions
    from spt_bench.metrics.turns import turn_buckets

    rows = convai2_rows(args.file)
    if args.bertscore_only:
        print(json.dumps(time_bertscore(rows, args.batch_size), indent=2))
        return

    figures: dict = {"n": len(rows), "resamples": args.resamples}

    def timed(label: str, fn):
        t, c = time.perf_counter(), time.process_time()
        result = fn()
        figures[f"{label}_s"] = round(time.perf_counter() - t, 2)
        figures[f"{label}_cpu_s"] = round(time.process_time() - c, 2)
        return result

    report = timed(
        "metrics_without_bertscore",
        lambda: score_predictions(rows, bertscore=None, n_resamples=0, by_turn=False),
    )
    table = ScoreTable.from_per_example(report.per_example)
    timed("bootstrap_overall", lambda: bootstrap_ci(table, args.resamples, 0))
    timed(
        "bootstrap_by_turn",
        lambda: [
            (table.take(ix).point(), bootstrap_ci(table.take(ix), args.resamples, [0, k + 1]))
            for k, (_, ix) in enumerate(turn_buckets(table.turns))
        ],
    )
    if args.bertscore:
        import torch

        t = time.perf_counter()
        bs = score_predictions(
            rows, bertscore=BertScoreOptions(batch_size=args.batch_size), n_resamples=0
        )
        figures["bertscore_s"] = round(bs.timings["bertscore"], 2)
        figures["bertscore_total_s"] = round(time.perf_counter() - t, 2)
        figures["bertscore_device"] = "cuda" if torch.cuda.is_available() else "cpu"
        figures["bertscore_f1"] = round(bs.overall["bertscore_f1"], 2)
    figures["overall"] = {k: round(v, 2) for k, v in report.overall.items()}
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
