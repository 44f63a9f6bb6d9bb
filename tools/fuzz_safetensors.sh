#!/bin/sh
# Builds the safetensors fuzzer (clang + libFuzzer, ASan + UBSan) and runs it for a bounded time.
# usage: tools/fuzz_safetensors.sh [seconds]     (default 60)
# BUILD_DIR picks the build folder (default: build), JOBS the build parallelism (default 2).
# Inputs it discovers accumulate in $BUILD_DIR/tests/fuzz/corpus/safetensors; crashes are written
# to $BUILD_DIR/tests/fuzz/corpus/safetensors.artifacts/.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
build=${BUILD_DIR:-$root/build}
if [ ! -f "$build/build.ninja" ]; then
  cmake -S "$root" -B "$build" -G Ninja -DCVX_BUILD_FUZZERS=ON
fi
ninja -C "$build" -j"${JOBS:-2}" fuzz_safetensors
exec "$root/tests/fuzz/run_fuzzer.sh" "$build/tests/fuzz/fuzz_safetensors" \
  "$root/tests/fuzz/corpus/safetensors" "$build/tests/fuzz/corpus/safetensors" "$seconds" \
  -dict="$root/tests/fuzz/safetensors.dict"
