#!/usr/bin/env bash
# SPT retriever-collapse probe (docs/results.md): a probe preset once per variant and seed.
#   bash scripts/collapse_probe.sh [OUT_DIR]      (CPU: ~10-17 min per variant on 2 cores)
#   PROBE_VARIANTS="authors retriever-center" PROBE_SEED=1 bash scripts/collapse_probe.sh
#   # the probe at the authors' settings (issue 17, item 6): 3 seeds x 2 variants, resumable
#   PROBE_PRESET=probe-spt-authors PROBE_SEEDS="0 1 2" PROBE_VARIANTS="authors retriever-center" \
#     PROBE_PUBLISH=docs/results/probe/authors-settings bash scripts/collapse_probe.sh runs/probe-authors
# Runs go one at a time, seed-major (both variants of a seed before the next seed); a finished
# run is skipped, a killed one resumes from its last checkpoint (rerun the same command).
# PROBE_PRESET (default probe-spt-collapse); PROBE_SEEDS (default: PROBE_SEED, default 0) are
# training seeds (prompts, retriever, data order); seed s > 0 names the run VARIANT-sS, and with
# PROBE_SEEDS every run is named VARIANT-sS. PROBE_PUBLISH: after each finished run, copy its
# text-free files (config.json, metrics.json, example_stats.jsonl, train_log.jsonl) to PUBLISH/NAME/.
# SPT_BENCH: the command to run (default spt-bench). PROBE_THREADS: torch threads (default 1: on
# a shared, oversubscribed 2-core CPU (load ~10) one thread took 11-39 s per probe-spt-authors
# step and two threads 56-110 s - OpenMP threads wait for each other when descheduled).
set -euo pipefail
OUT="${1:-runs/probe}"
PRESET="${PROBE_PRESET:-probe-spt-collapse}"
VARIANTS="${PROBE_VARIANTS:-authors no-fusion prompt-init-normal query-hidden}"
SEEDS="${PROBE_SEEDS:-${PROBE_SEED:-0}}"
PUBLISH="${PROBE_PUBLISH:-}"
read -r -a CMD <<< "${SPT_BENCH:-spt-bench}"
export OMP_NUM_THREADS="${PROBE_THREADS:-1}"
for seed in $SEEDS; do
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
        name="$v"
        if [ -n "${PROBE_SEEDS:-}" ] || [ "$seed" != 0 ]; then name="$v-s$seed"; fi
        if [ -f "$OUT/$name/metrics.json" ]; then
            echo "== $name: done"
        else
            echo "== $name ($(date +%T))"
            t0=$(date +%s)
            if [ -f "$OUT/$name/config.json" ]; then  # killed earlier: its saved config rules
                "${CMD[@]}" run --out "$OUT" --name "$name" --resume
            else
                "${CMD[@]}" run --preset "$PRESET" --device cpu --out "$OUT" --name "$name" \
                    --seed "$seed" "${args[@]}"
            fi
            echo "$name: wall $(( $(date +%s) - t0 )) s" | tee -a "$OUT/walltimes.txt"
        fi
        if [ -n "$PUBLISH" ]; then
            mkdir -p "$PUBLISH/$name"
            cp "$OUT/$name/config.json" "$OUT/$name/metrics.json" "$OUT/$name/example_stats.jsonl" \
                "$OUT/$name/train_log.jsonl" "$PUBLISH/$name/"
        fi
    done
done
