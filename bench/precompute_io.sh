#!/usr/bin/env bash
# The two I/O benchmarks of the precompute job:
#  1. decode + sample + resize of a 49-frame 1280x720 H.264 clip to 49x480x720 vs the ffmpeg CLI
#     decoding the same file to rawvideo at 720x480 in one run (ratio = our speed / ffmpeg's);
#  2. the parallel HDF5 store (2 ranks, MPI-IO) vs a plain sequential write of the same bytes.
# usage: bench/precompute_io.sh [SCRATCH_DIR=/tmp]
set -euo pipefail
cd "$(dirname "$0")/.."
tools/build.sh >/dev/null
build=${CVX_BUILD_DIR:-build}
scratch=${1:-/tmp}
clip="$scratch/bench_clip_720p.mp4"
ffmpeg -v error -y -f lavfi -i testsrc2=size=1280x720:rate=24 -frames:v 49 -c:v libx264 -pix_fmt yuv420p "$clip"
"$build/bench/bench_decode_cpu" "$clip" 49 480 720
flags=(--oversubscribe); [ "$(id -u)" -eq 0 ] && flags+=(--allow-run-as-root)
mpirun "${flags[@]}" -np 2 "$build/bench/bench_store_write" "$scratch" 32
