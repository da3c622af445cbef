#!/usr/bin/env bash
# CPU-sized comparison of the PEFT methods with prompt tuning and SPT on SmolLM2-135M
# (docs/results.md, "PEFT methods on a CPU"). Each method runs its study preset
# (spt_bench/configs/study-<name>.yaml: data, split, lr, method options) cut down to CPU size by
# scripts/cpu_peft_comparison.yaml (16 steps of batch 2 on inputs cut to 96 tokens, dev loss on
# 16 dev examples at the end, 24 test examples decoded greedily, scored without BERTScore;
# ppl and Hits@1 over 10 candidates included).
# Resumable, one run at a time: a finished run (metrics.json present) is skipped, a killed one
# continues with --resume. Rerun the same command to finish an interrupted comparison.
#   PY=.venv/bin/python scripts/cpu_peft_comparison.sh
# EXTRA adds run flags to every run (they override the layer), e.g. a longer variant:
#   OUT=runs/cpu-peft-48 EXTRA="--max-steps 48" PY=.venv/bin/python scripts/cpu_peft_comparison.sh
# One torch thread per run (OMP_NUM_THREADS): on cores shared with other jobs, two threads
# mostly wait for each other.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OUT=${OUT:-runs/cpu-peft}
PY=${PY:-python}
LAYER=${LAYER:-scripts/cpu_peft_comparison.yaml}
read -r -a extra <<< "${EXTRA:-}"
METHODS=${METHODS:-"prompt-tuning spt prefix-tuning p-tuning-v2 ia3 dora lora prefix-tuning-no-mlp"}
for m in $METHODS; do
  dir="$OUT/$m"
  if [ -f "$dir/metrics.json" ]; then
    echo "== $m: done"
    continue
  fi
  resume=()
  [ -f "$dir/config.json" ] && resume=(--resume)
  echo "== $m: $(date +%T)"
  "$PY" -m cli run --preset "study-$m" --config "$LAYER" --out "$dir" "${extra[@]}" \
    "${resume[@]}"
done
echo "== all done: $(date +%T)"
