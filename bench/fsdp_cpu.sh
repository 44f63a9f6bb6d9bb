#!/usr/bin/env bash
# Sharded training on the CPU over MPI: step time, bytes sent per step and peak RSS per rank for
# 1, 2 and 4 ranks, LoRA and full fine-tuning of a small transformer; one JSON line per run.
# usage: bench/fsdp_cpu.sh [STEPS=5] [LAYERS=8] [WIDTH=512]
set -euo pipefail
cd "$(dirname "$0")/.."
tools/build.sh >/dev/null
build_dir=${CVX_BUILD_DIR:-build}
mpirun_flags=(--oversubscribe)
[ "$(id -u)" = 0 ] && mpirun_flags+=(--allow-run-as-root)
for mode in lora full; do
  for np in 1 2 4; do
    OMP_NUM_THREADS=1 mpirun "${mpirun_flags[@]}" -np "$np" "$build_dir/bench/bench_fsdp_cpu" "$mode" "${1:-5}" "${2:-8}" "${3:-512}"
  done
done
