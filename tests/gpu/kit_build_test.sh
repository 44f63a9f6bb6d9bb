#!/usr/bin/env bash
# The GPU kit (CMake -DCVX_GPU_KIT=ON, what tools/gpu/run.sh builds on a GPU machine) keeps
# building from this tree with this machine's libraries, its gpu tests run their logic on the CPU
# (CVX_GPU_TESTS_ON_CPU=1) and bench_gpu_step completes a cut-down step: so the kit's file split
# (no FFmpeg, HDF5, protobuf or sentencepiece) cannot rot between GPU sessions.
# usage: kit_build_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
source_dir="$1"
build_dir="$2/gpu-kit"
cmake -S "$source_dir" -B "$build_dir" -G Ninja -DCVX_GPU_KIT=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCVX_BUILD_FUZZERS=OFF >"$build_dir.configure.log" 2>&1 || { tail -30 "$build_dir.configure.log"; exit 1; }
ninja -C "$build_dir" -j "$(nproc)" >"$build_dir.build.log" 2>&1 || { grep -B2 -A12 -m3 "error" "$build_dir.build.log"; exit 1; }
# The kit holds no program that needs the excluded libraries.
for program in cvx_train cvx_precompute cvx_generate; do
  [[ ! -e "$build_dir/$program" ]] || { echo "the kit built $program"; exit 1; }
done
CVX_GPU_TESTS_ON_CPU=1 CVX_GOLDEN_DIR="${CVX_GOLDEN_DIR:-$source_dir/../shared/golden}" \
  "$build_dir/tests/gpu/cvx_gpu_tests" --gtest_brief=1
"$build_dir/bench/bench_gpu_step" --device cpu --variant 1.5-t2v --layers 1 --frames 9 --height 32 --width 48 \
  --world 8 --sequence 2 --steps 1 --warmup 0 | grep '^RESULT {.*"step_seconds_median"'
echo "GPU kit: built, gpu tests and bench_gpu_step ran on the CPU"
