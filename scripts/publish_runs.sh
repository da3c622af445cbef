#!/usr/bin/env bash
# Copy the committable, text-free files of finished run folders under DEST (docs/results/...), so
# that `spt-bench compare` re-derives their values, CIs and p-values from the repository:
#   bash scripts/publish_runs.sh docs/results runs/study/study-*
#   bash scripts/publish_runs.sh docs/results/probe runs/probe/*
# Copies config.json, metrics.json, example_stats.jsonl (per-example scores without text) and,
# when present, train_log.jsonl and resume_log.jsonl. Never copies predictions.jsonl or
# example_scores.jsonl (they hold dialogue text). A run without example_stats.jsonl (scored
# before it existed) is refused: `spt-bench evaluate RUN --rescore` writes it.
set -euo pipefail
if [ "$#" -lt 2 ]; then echo "usage: $0 DEST RUN..." >&2; exit 2; fi
DEST="$1"; shift
for run in "$@"; do
    run="${run%/}"
    if [ ! -f "$run/metrics.json" ]; then echo "error: $run: not a finished run (no metrics.json)" >&2; exit 2; fi
    if [ ! -f "$run/example_stats.jsonl" ]; then
        echo "error: $run: no example_stats.jsonl; run 'spt-bench evaluate $run --rescore' first" >&2
        exit 2
    fi
done
for run in "$@"; do
    run="${run%/}"
    name="$(basename "$run")"
    mkdir -p "$DEST/$name"
    for f in config.json metrics.json example_stats.jsonl train_log.jsonl resume_log.jsonl; do
        if [ -f "$run/$f" ]; then cp "$run/$f" "$DEST/$name/$f"; fi
    done
    echo "$run -> $DEST/$name"
done
