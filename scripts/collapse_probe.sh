#!/usr/bin/env bash
# SPT retriever-collapse probe (docs/results.md): the probe-spt-collapse preset once per variant.
#   bash scripts/collapse_probe.sh [OUT_DIR]      (CPU: ~5-10 min per variant on 2 cores)
# Variants run in order; a finished one is skipped, a killed one resumes.
set -euo pipefail
OUT="${1:-runs/probe}"
VARIANTS="${PROBE_VARIANTS:-authors no-fusion prompt-init-normal query-hidden}"
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
    if [ -f "$OUT/$v/metrics.json" ]; then echo "== $v: done"; continue; fi
    resume=(); [ -d "$OUT/$v" ] && resume=(--resume)
    echo "== $v ($(date +%T))"
    t0=$(date +%s)
    spt-bench run --preset probe-spt-collapse --device cpu --out "$OUT" --name "$v" "${args[@]}" "${resume[@]}"
    echo "$v: wall $(( $(date +%s) - t0 )) s" | tee -a "$OUT/walltimes.txt"
done
