"""Run folders for compare/plot/chat tests: synthetic predictions scored by the real scorer
(`make_run`); the tiny real runs through the harness are conftest's session fixtures
(`finished_spt`, `finished_full_ft`)."""

from __future__ import annotations

import random
from pathlib import Path

from spt_bench.io import append_jsonl, atomic_write_json

WORDS = (
    "cats dogs music guitar running pizza summer school nurse teacher garden books movies "
    "coffee beach travel paint farm city winter football swim cook read write dance"
).split()
FILLER = "i you we like love have am really also my a the to and do what is".split()


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(FILLER + WORDS) for _ in range(n)) + "."


def make_predictions(
    *, quality: float, seed: int = 0, n_dialogues: int = 40, n_turns: int = 5, k: int = 0
) -> list[dict]:
    """Synthetic dialogue predictions: each prediction token copies the reference token with
    probability `quality` (lower in later turns), else a random word. k > 0 adds SPT fields."""
    data_rng = random.Random(1234)  # the same examples for every system
    rng = random.Random(seed)
    rows = []
    for d in range(n_dialogues):
        persona = [f"i like {data_rng.choice(WORDS)}.", f"i am a {data_rng.choice(WORDS)}."]
        history: list[str] = []
        for t in range(n_turns):
            history.append(_sentence(data_rng, 6))
            reference = _sentence(data_rng, 8)
            q = max(0.0, quality - 0.08 * t)
            pred_tokens = [
                tok if rng.random() < q else rng.choice(WORDS) for tok in reference.split()
            ]
            row = {
                "id": f"d{d}:{t}",
                "dialog_id": f"d{d}",
                "turn": t,
                "persona": persona,
                "history": list(history),
                "reference": reference,
                "prediction": " ".join(pred_tokens),
            }
            if k:
                scores = [rng.random() for _ in range(k)]
                # prompt choice drifts with the turn so the heatmap has structure
                chosen = (t + (d % 2)) % k if rng.random() < 0.7 else scores.index(max(scores))
                row["selected_prompt"] = chosen
                row["prompt_scores"] = scores
            rows.append(row)
            history.append(reference)
    return rows


def make_run(
    root: Path,
    name: str,
    *,
    method: str = "spt",
    quality: float = 0.5,
    seed: int = 0,
    keep: int | None = None,
    method_options: dict | None = None,
    n_dialogues: int = 40,
    train_steps: int = 30,
    n_resamples: int = 200,
) -> Path:
    """A finished run folder as the harness writes it (files scored by the real scorer)."""
    from spt_bench.metrics import score_predictions

    if method == "spt" and method_options is None:
        method_options = {"k": 4, "prompt_len": 8}
    k = (method_options or {}).get("k", 4) if method == "spt" else 0
    rows = make_predictions(quality=quality, seed=seed, n_dialogues=n_dialogues, k=k)
    if keep is not None:
        rows = rows[:keep]
    run = root / name
    run.mkdir(parents=True)
    config = {
        "method": method,
        "model": "tiny-random",
        "seed": seed,
        "max_steps": train_steps,
        "method_options": dict(method_options or {}),
        "data": "synthetic",
    }
    atomic_write_json(run / "config.json", config)
    append_jsonl(run / "predictions.jsonl", rows)
    scoring_rows = [{k2: v for k2, v in r.items() if k2 not in ("prompt_scores",)} for r in rows]
    report = score_predictions(scoring_rows, bertscore=None, n_resamples=n_resamples, seed=0)
    append_jsonl(run / "example_scores.jsonl", report.per_example)
    rng = random.Random(seed)
    log = []
    for step in range(1, train_steps + 1):
        nll = 3.0 * 0.97**step + rng.random() * 0.1
        entry = {"step": step, "loss": nll + 0.3, "nll": nll, "lr": 1e-4 * min(1, step / 5)}
        if method == "spt":
            entry |= {"sel": 0.2 / step, "fusion": nll * 1.1, "ctr": 0.5, "retriever_entropy": 1.2}
        log.append(entry)
        if step % 10 == 0:
            log.append({"step": step, "dev_loss": nll + 0.2})
    append_jsonl(run / "train_log.jsonl", log)
    metrics = report.to_json()
    if k:
        usage = [0] * k
        for r in rows:
            usage[r["selected_prompt"]] += 1
        metrics["prompt_usage"] = usage
    atomic_write_json(run / "metrics.json", metrics)
    return run


def md_table_cells(text: str, first_header: str = "Run") -> tuple[list[str], list[list[str]]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"| {first_header} |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    body = []
    for ln in lines[start + 2 :]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        if len(cells) != len(header):
            break
        body.append(cells)
    return header, body
