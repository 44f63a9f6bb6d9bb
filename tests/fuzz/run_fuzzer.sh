#!/bin/sh
# Runs a libFuzzer binary for a bounded time over a working copy of its seed corpus: the inputs it
# discovers go to the copy (kept between runs), never into the seeds in the source tree.
# usage: run_fuzzer.sh BINARY SEED_DIR WORK_DIR SECONDS [libFuzzer options...]
set -eu
binary=$1
seeds=$2
work=$3
seconds=$4
shift 4
artifacts="$work.artifacts"
mkdir -p "$work" "$artifacts"
cp "$seeds"/* "$work"/
exec "$binary" -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 \
  -artifact_prefix="$artifacts/" "$@" "$work"
