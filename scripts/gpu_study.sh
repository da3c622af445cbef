#!/usr/bin/env bash
# The benchmark study of docs/results.md (issue 9) on a lent GPU, one command after the model's
# first half is stashed (see scripts/gpu_check.sh for the two-call protocol):
#   carry [".device/b"]: STUDY_DEADLINE_S=420 bash scripts/gpu_study.sh
# Each method runs its spt_bench/configs/study-*.yaml preset on the ConvAI2 valid file (convai2-valid-split)
# without BERTScore (its encoder does not travel); the run folders (no checkpoints) come back in
# $OUT/study.tar.gz and are re-scored on the CPU machine with `spt-bench evaluate RUN --rescore`.
# Runs start in priority order and none starts after STUDY_DEADLINE_S seconds.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
OUT="${OUT:-/tmp/spt-bench-study-out}"
mkdir -p "$OUT"
PYTHON="${PYTHON:-python3}"
DATA="${STUDY_DATA:-$REPO/.device/b/valid_self_original_no_cands.txt}"
DEVICE="${STUDY_DEVICE:-cuda}"
DEADLINE="${STUDY_DEADLINE_S:-420}"
RUNS="${STUDY_RUNS:-text-prompt:0 prompt-tuning:0 spt:0 full-ft:0 lora:0 spt-no-fusion:0 spt-no-contrastive:0 spt-center:0 spt-fusion-normalized:0 prompt-tuning:1 spt:1}"
EXTRA="${STUDY_EXTRA_ARGS:-}"
STUDY_DIR="${STUDY_DIR:-/tmp/study}"
export PYTHONUNBUFFERED=1 COLUMNS="${COLUMNS:-160}"
export SPT_BENCH_CACHE="${SPT_BENCH_CACHE:-/tmp/spt-bench-cache}"
if [ -z "${SPT_BENCH_SMOLLM2_GGUF:-}" ] && [ -f /tmp/smol.gguf ]; then
    export SPT_BENCH_SMOLLM2_GGUF=/tmp/smol.gguf
fi
case ":${PYTHONPATH:-}:" in *":$REPO:"*) ;; *) export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" ;; esac
# the wheels scripts/gpu_check.sh installed on this machine (typer, rich, gguf, ...), if it ran
if [ -d /tmp/site ]; then export PYTHONPATH="$PYTHONPATH:/tmp/site"; fi
mkdir -p "$STUDY_DIR"
t0=$(date +%s)
for spec in $RUNS; do
    preset="${spec%%:*}"; seed="${spec##*:}"
    elapsed=$(( $(date +%s) - t0 ))
    if [ "$elapsed" -ge "$DEADLINE" ]; then
        echo "study: deadline reached after ${elapsed} s; skipping $preset seed $seed"
        continue
    fi
    name="study-$preset-s$seed"
    echo "== $name (t=${elapsed}s)"
    # shellcheck disable=SC2086
    t_run=$(date +%s)
    "$PYTHON" -m cli run --preset "study-$preset" \
        --data "$DATA" --seed "$seed" --device "$DEVICE" --no-bertscore \
        --out "$STUDY_DIR" --name "$name" --overwrite $EXTRA 2>&1 | tail -n 40
    echo "$name: wall $(( $(date +%s) - t_run )) s" | tee -a "$OUT/study_walltimes.txt"
    rm -rf "$STUDY_DIR/$name/checkpoint"
    tar -czf "$OUT/study.tar.gz" -C "$STUDY_DIR" .
done
echo "study: done after $(( $(date +%s) - t0 )) s"
