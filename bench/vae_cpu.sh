#!/usr/bin/env bash
# VAE encode and decode (released architecture, random weights, fp32) on 2 CPU threads; prints a JSON line.
# usage: bench/vae_cpu.sh [THREADS=2] [RUNS=3] [FRAMES=9] [SIZE=64]
set -euo pipefail
cd "$(dirname "$0")/.."
tools/build.sh >/dev/null
"${CVX_BUILD_DIR:-build}/bench/bench_vae_cpu" "${1:-2}" "${2:-3}" "${3:-9}" "${4:-64}"
