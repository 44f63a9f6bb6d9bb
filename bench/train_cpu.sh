#!/usr/bin/env bash
# One optimizer step of the bench transformer (bench/transformer_cpu's shape) through the whole
# trainer: store reader + prefetch, loss, sharded engine, AdamW, on 1 and 2 ranks. Clips 9x256x256
# (latents [16, 3, 32, 32], 768 video + 226 text tokens), LoRA r16 on to_q,to_k,to_v,to_out.0,
# fp32, gradient checkpointing, batch 1 per rank, 1 torch thread per rank (2 on 1 rank).
# Prints per step time, data wait and peak RSS (from metrics.jsonl: median of steps 3..N).
# usage: bench/train_cpu.sh [STEPS=8]
set -euo pipefail
cd "$(dirname "$0")/.."
tools/build.sh >/dev/null
build=${CVX_BUILD_DIR:-build}
steps=${1:-8}
work=$(mktemp -d /tmp/cvx_train_bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
flags=(--oversubscribe); [ "$(id -u)" -eq 0 ] && flags+=(--allow-run-as-root)
# shellcheck source=train_bench_setup.sh
source bench/train_bench_setup.sh
train_bench_setup
for np in 1 2; do
  threads=$((2 / np))
  OMP_NUM_THREADS=$threads mpirun "${flags[@]}" -np $np "$build/cvx_train" --config "$work/bench.ini" \
    --num_threads $threads --train.train_steps "$steps" --train.output_dir "$work/run$np" >/dev/null
  python3 - "$work/run$np/metrics.jsonl" "$np" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()][2:]
med = lambda k: statistics.median(r[k] for r in rows)
print(json.dumps({"ranks": int(sys.argv[2]), "steps_measured": len(rows),
                  "step_ms": round(1000 * med("step_seconds"), 1), "data_wait_ms": round(1000 * med("data_wait_seconds"), 2),
                  "peak_rss_mib": round(max(r["peak_memory_bytes"] for r in rows) / 2**20, 1),
                  "tflops": round(med("tflops"), 4)}))
PY
done
