#!/usr/bin/env bash
# The whole test suite from a fresh clone: installs packages (apt), builds, runs ctest.
# Labels: unit, mpi (1, 2 and 4 ranks), gpu (skip without a CUDA device), fuzz (30 s of libFuzzer),
# golden, e2e (with the fault tests: signals, kill -9, crash while checkpointing, full disk, corrupt
# shard; and the GPU kit built in build/gpu-kit and run on the CPU), slurm (a one-node Slurm started for the tests: the sbatch scripts, requeue and resume).
# Pass ctest arguments to narrow it, e.g. tools/run_tests.sh -L unit. Fails first on C++ files
# clang-format-14 would change (tools/check_format.sh; --fix formats them).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
tools/check_format.sh
tools/build.sh
build_dir=${CVX_BUILD_DIR:-build}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" "$@"
