#!/usr/bin/env bash
# SPT retriever-collapse probe (docs/results.md): the probe-spt-collapse preset once per variant.
#   bash scripts/collapse_probe.sh [OUT_DIR]      (CPU: ~10-17 min per variant on 2 cores)
#   PROBE_VARIANTS="authors retriever-center" PROBE_SEED=1 bash scripts/collapse_probe.sh
# Variants run in order; a finished one is skipped, a killed one resumes. PROBE_SEED (default 0)
# is the training seed (prompts, retriever, data order); seed s > 0 names the run VARIANT-sS.
set -euo pipefail
OUT="${1:-runs/probe}"
VARIANTS="${PROBE_VARIANTS:-authors no-fusion prompt-init-normal query-hidden}"
SEED="${PROBE_SEED:-0}"
for v in $VARIANTS; do
    case "$v" in
        authors) args=() ;;
        retriever-center) args=(--retriever-center) ;;
        no-fusion) args=(--no-fusion) ;;
        no-contrastive) args=(--no-contrastive) ;;
        no-selection) args=(--no-selection-loss) ;;
        prompt-init-normal) args=(--prompt-init normal) ;;
        query-hidden) args=(--retriever-query hidden) ;;
        fusion-normalized) args=(--fusion-weights normalized) ;;
        *) echo "unknown variant $v" >&2; exit 2 ;;
    esac
    name="$v"; [ "$SEED" != 0 ] && name="$v-s$SEED"
    if [ -f "$OUT/$name/metrics.json" ]; then echo "== $name: done"; continue; fi
    resume=(); [ -d "$OUT/$name" ] && resume=(--resume)
    echo "== $name ($(date +%T))"
    t0=$(date +%s)
    spt-bench run --preset probe-spt-collapse --device cpu --out "$OUT" --name "$name" \
        --seed "$SEED" "${args[@]}" "${resume[@]}"
    echo "$name: wall $(( $(date +%s) - t0 )) s" | tee -a "$OUT/walltimes.txt"
done
