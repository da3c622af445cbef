#!/usr/bin/env bash
# The one prepared GPU check for the performance issue (issue 8): `spt-bench bench` with
# SmolLM2-135M on the ConvAI2 valid file, on a lent H100/H200 (docs/performance.md).
#
# Assets (ignored folder .device/, prepared once on the CPU machine; see ../shared/device.md):
#   .device/a/g_aa                  first half of SmolLM2-135M-Instruct.Q4_1.gguf
#   .device/b/g_ab                  second half
#   .device/b/*.whl                 gguf, nltk, rouge-score, defusedxml, bert-score wheels, and
#                                   typer, click, rich, markdown-it-py, mdurl, pygments, shellingham
#                                   (../shared/device.md lists typer and rich as missing there)
#   .device/b/valid_self_original_no_cands.txt
# The two halves exceed one call's 64 MiB, so it takes two device calls:
#   1) carry [".device/a"]: mkdir -p /root/stash && cp .device/a/g_aa /root/stash/
#   2) carry [".device/b"]: bash scripts/gpu_check.sh          (figures -> $OUT/bench.json)
#
# Knobs (environment), defaults for the GPU run:
#   SPT_GPU_CHECK_MODEL=smollm2-135m   tiny-random skips the GGUF join (CPU test of this script)
#   SPT_GPU_CHECK_DEVICE=cuda          SPT_GPU_CHECK_DATA=.device/b/valid_self_original_no_cands.txt
#   SPT_GPU_CHECK_BATCH=32             SPT_GPU_CHECK_N_DECODE= (empty: all 7801 prompts)
#   SPT_GPU_CHECK_DECODE_BATCHES=auto     SPT_GPU_CHECK_GENERATE_BATCHES=auto
#   SPT_GPU_CHECK_DECODE_ENGINES=hf  (our decoder's engines, each at every decode batch; the GPU
#   machine has no vLLM, so the hf engine is timed against plain generate)
#   (one timed pass over all 7801 prompts per configuration: each costs 5-150 s, so the defaults
#   - hf at the automatic batch, plain generate at the same batch - keep the run near
#   4 minutes; the first session's 5 configurations overran a 150 s cap)
#   SPT_GPU_CHECK_REPS=5  SPT_GPU_CHECK_WARMUP=2  SPT_GPU_CHECK_MAX_NEW=32
#   SPT_GPU_CHECK_CHECKPOINTING=0.25,0.5,1  (shares of LM layers checkpointed in extra spt timings)
#   SPT_GPU_CHECK_DECODE_METHOD=spt (full-ft: the bare LM, no soft prompt - the reference workload)
#   SPT_GPU_CHECK_SKIP_WHEELS=1 (no pip install)
#   PYTHON=python3
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
OUT="${OUT:-/tmp/spt-bench-gpu-check}"
mkdir -p "$OUT"
PYTHON="${PYTHON:-python3}"
MODEL="${SPT_GPU_CHECK_MODEL:-smollm2-135m}"
DEVICE="${SPT_GPU_CHECK_DEVICE:-cuda}"
DATA="${SPT_GPU_CHECK_DATA:-$REPO/.device/b/valid_self_original_no_cands.txt}"
BATCH="${SPT_GPU_CHECK_BATCH:-32}"
N_DECODE="${SPT_GPU_CHECK_N_DECODE:-}"
DECODE_BATCHES="${SPT_GPU_CHECK_DECODE_BATCHES:-auto}"
GENERATE_BATCHES="${SPT_GPU_CHECK_GENERATE_BATCHES:-auto}"
DECODE_ENGINES="${SPT_GPU_CHECK_DECODE_ENGINES:-hf}"
REPS="${SPT_GPU_CHECK_REPS:-5}"
WARMUP="${SPT_GPU_CHECK_WARMUP:-2}"
MAX_NEW="${SPT_GPU_CHECK_MAX_NEW:-32}"
DECODE_METHOD="${SPT_GPU_CHECK_DECODE_METHOD:-spt}"
CHECKPOINTING="${SPT_GPU_CHECK_CHECKPOINTING:-0.25,0.5,1}"
export PYTHONUNBUFFERED=1 COLUMNS="${COLUMNS:-160}"
export SPT_BENCH_CACHE="${SPT_BENCH_CACHE:-/tmp/spt-bench-cache}"
t_start=$(date +%s)

# 1. the model: join the GGUF halves (the first half comes from /root/stash, or .device/a when
#    both travelled in one call)
if [ "$MODEL" = "smollm2-135m" ] && [ -z "${SPT_BENCH_SMOLLM2_GGUF:-}" ]; then
    first=/root/stash/g_aa
    [ -f "$first" ] || first="$REPO/.device/a/g_aa"
    if [ ! -f "$first" ] || [ ! -f "$REPO/.device/b/g_ab" ]; then
        echo "gpu_check: GGUF halves missing (need /root/stash/g_aa and .device/b/g_ab)" >&2
        exit 2
    fi
    cat "$first" "$REPO/.device/b/g_ab" > /tmp/smol.gguf
    echo "gguf: $(stat -c %s /tmp/smol.gguf) bytes, md5 $(md5sum /tmp/smol.gguf | cut -d' ' -f1)" \
        "(expected 98362432, a1231443440b107ff29f02bdb38c9d0a)"
    export SPT_BENCH_SMOLLM2_GGUF=/tmp/smol.gguf
fi

# 2. the missing pure-Python packages, and our package importable from the checkout
if [ -z "${SPT_GPU_CHECK_SKIP_WHEELS:-}" ] && compgen -G "$REPO/.device/b/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$REPO"/.device/b/*.whl
    export PYTHONPATH="$REPO:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
fi

if command -v nvidia-smi > /dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
"$PYTHON" - <<'EOF'
import importlib.util, sys
import torch, transformers
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, "
      f"transformers {transformers.__version__}, cuda {torch.cuda.is_available()}")
for m in ("typer", "rich", "gguf", "sacrebleu", "rouge_score", "nltk", "bert_score", "datasets"):
    print(f"  {m}: {'yes' if importlib.util.find_spec(m) else 'no'}")
EOF

# 3. the benchmark: training step (spt K=4, prompt-tuning, plain references) at batch $BATCH;
#    decoding every prompt, our path vs plain generate; the scorer when its libraries are here
args=(bench --model "$MODEL" --device "$DEVICE" --data "$DATA" --batch-size "$BATCH"
      --reps "$REPS" --warmup "$WARMUP" --checkpointing "$CHECKPOINTING" --decode-batch-size "$DECODE_BATCHES"
      --generate-batch-size "$GENERATE_BATCHES" --decode-engine "$DECODE_ENGINES"
      --max-new-tokens "$MAX_NEW"
      --decode-method "$DECODE_METHOD"
      --predictions "$OUT/predictions.jsonl" --out "$OUT/bench.json" --profile "$OUT")
if [ -n "$N_DECODE" ]; then
    args+=(--n-decode "$N_DECODE")
fi
echo "+ $PYTHON -m cli ${args[*]}"
set +e
"$PYTHON" -m cli "${args[@]}" 2>&1 | tee "$OUT/bench.log"
status=${PIPESTATUS[0]}
set -e

# 4. the headline figures against the targets, in a few lines
if [ -f "$OUT/bench.json" ]; then
    "$PYTHON" - "$OUT/bench.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"== {r['model']} on {r['env']['device'].get('gpu_name', r['device'])} ({r['dtype']})")
if r.get("partial"):
    print(f"PARTIAL bench.json ({r['partial']}); the decoding figures so far are in bench.log")
for e in r["train"]["entries"]:
    mem = e["peak_memory_gb"]
    print(f"train  {e['name']:<55} {e['step_s'] * 1000:8.1f} ms {e['examples_per_s']:8.1f} ex/s"
          f"  peak {mem if mem is not None else 'n/a'} GB")
dec = r.get("decode") or {}
for f in dec.get("ours", []) + dec.get("plain_generate", []):
    what = f["error"] or f"{f['seconds']:.2f} s, {f['responses_per_s']:.0f} responses/s"
    path = f["path"] + (f" {f['engine']}" if f.get("engine") else "")
    if f.get("engine_start_s") is not None:
        what += f" (engine start {f['engine_start_s']:.1f} s, not timed)"
    print(f"decode {path:<22} batch {f['batch_size']:>5}: {what}")
if dec.get("stop_reasons"):
    print(f"decode stops (ours): {dec['stop_reasons']}, mean {dec['mean_new_tokens']:.1f} tokens")
if "speedup_best_vs_best" in dec:
    print(f"decode best vs best: {dec['speedup_best_vs_best']:.2f}x "
          f"(ours {dec['best_ours']['seconds']:.2f} s for {dec['n']}; target <= 6 s)")
for c in dec.get("comparisons", []):
    if "speedup_same_batch" in c:
        print(f"decode {c.get('engine', 'hf')} batch {c['batch_size']}: "
              f"{c['speedup_same_batch']:.2f}x plain generate, "
              f"identical responses {100 * c['identical_responses']:.1f}%")
    if "speedup_over_hf_engine" in c:
        print(f"decode {c['engine']} batch {c['batch_size']}: {c['speedup_over_hf_engine']:.2f}x "
              f"the hf engine, identical responses {100 * c['identical_to_hf_engine']:.1f}%")
spt = next((e for e in r["train"]["entries"] if e["name"] == "spt"), None)
if spt:
    print(f"target spt K=4 batch 32: {spt['examples_per_s']:.0f} ex/s (>= 200), "
          f"peak {spt['peak_memory_gb']} GB (<= 16)")
sc = r.get("score") or {}
print("scorer:", f"{sc['seconds']:.2f} s" if sc.get("seconds") else sc.get("note", "n/a"))
EOF
fi
echo "gpu_check: exit $status after $(( $(date +%s) - t_start )) s; files in $OUT"
exit "$status"
