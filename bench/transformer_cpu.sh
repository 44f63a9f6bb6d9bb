#!/usr/bin/env bash
# One LoRA training step of a small transformer on 2 CPU threads; prints a JSON line.
# usage: bench/transformer_cpu.sh [THREADS=2] [STEPS=5]
set -euo pipefail
cd "$(dirname "$0")/.."
tools/build.sh >/dev/null
"${CVX_BUILD_DIR:-build}/bench/bench_transformer_cpu" "${1:-2}" "${2:-5}"
