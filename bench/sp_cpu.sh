#!/usr/bin/env bash
# Sequence parallelism (Ulysses) through the whole trainer on the bench transformer of
# bench/transformer_cpu (4 layers, 4 heads x 32): P = 1, 2, 4 ranks on one sample per step (global
# batch 1: each rank holds 1/P of the tokens), clips 9x256x256 (768 video + 226 text tokens),
# LoRA r16, fp32, gradient checkpointing, 1 torch thread per rank. Prints per P the median step
# time, the bytes each rank sent over its sequence group per step (all-to-alls and head gathers,
# forward, recompute and backward) and peak RSS; then the dry-run memory per rank of
# CogVideoX1.5-5B LoRA at 81x768x1360 and 161x768x1360 on 8 ranks for P = 1, 2, 4, 8.
# On a 2-core machine P = 4 oversubscribes the cores: its time is not a speed figure.
# usage: bench/sp_cpu.sh [STEPS=8]
set -euo pipefail
cd "$(dirname "$0")/.."
tools/build.sh >/dev/null
build=${CVX_BUILD_DIR:-build}
steps=${1:-8}
work=$(mktemp -d /tmp/cvx_sp_bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
flags=(--oversubscribe); [ "$(id -u)" -eq 0 ] && flags+=(--allow-run-as-root)
# shellcheck source=train_bench_setup.sh
source bench/train_bench_setup.sh
train_bench_setup
for p in 1 2 4; do
  OMP_NUM_THREADS=1 mpirun "${flags[@]}" -np $p "$build/cvx_train" --config "$work/bench.ini" --num_threads 1 \
    --parallel.sequence_parallel_size $p --train.train_steps "$steps" --train.output_dir "$work/run$p" >/dev/null
  python3 - "$work/run$p/metrics.jsonl" "$p" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()][2:]
med = lambda k: statistics.median(r.get(k, 0) for r in rows)
print(json.dumps({"sequence_parallel": int(sys.argv[2]), "steps_measured": len(rows),
                  "step_ms": round(1000 * med("step_seconds"), 1),
                  "sequence_kib_per_step": round(med("sequence_bytes") / 1024, 1),
                  "peak_rss_mib": round(max(r["peak_memory_bytes"] for r in rows) / 2**20, 1),
                  "loss_step_3": round(rows[0]["loss"], 6)}))
PY
done
for frames in 81 161; do
  for p in 1 2 4 8; do
    total=$("$build/cvx_train" --config configs/cogvideox1.5_5b_lora_t2v.ini --dry_run --simulate_world_size 8 \
      --data.train_resolution ${frames}x768x1360 --parallel.sequence_parallel_size $p 2>&1 |
      awk '/^  total/ {print $2, $3}')
    echo "{\"model\": \"CogVideoX1.5-5B LoRA r128\", \"clip\": \"${frames}x768x1360\", \"ranks\": 8, \"sequence_parallel\": $p, \"dry_run_per_rank\": \"$total\"}"
  done
done
