#!/usr/bin/env bash
# The VAE encoder an I2V training rank keeps for `image_latents = encode`: its weights and the
# transient memory and time of one per-step first-frame encode, at the 1.0 (480x720) and 1.5
# (768x1360) training sizes, fp32 and bf16, with and without tiling (the official trainer tiles).
# One process per configuration; prints a JSON line each. CPU figures: the im2col convolution
# workspaces of libtorch's CPU kernels are larger than cuDNN's, so GPU transients are smaller
# (issue #13 measures them on a device).
# usage: bench/i2v_encoder_cpu.sh [THREADS=2] [SIZES="480x720 768x1360"] [DTYPES="bf16 fp32"]
set -euo pipefail
cd "$(dirname "$0")/.."
tools/build.sh >/dev/null
build=${CVX_BUILD_DIR:-build}
threads=${1:-2}
for size in ${2:-480x720 768x1360}; do
  for dtype in ${3:-bf16 fp32}; do
    for tiling in 1 0; do
      OMP_NUM_THREADS=$threads "$build/bench/bench_i2v_encoder_cpu" "${size%x*}" "${size#*x}" "$dtype" "$tiling" "$threads"
    done
  done
done
