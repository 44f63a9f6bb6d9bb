#!/usr/bin/env bash
# The main job end to end on the built-in tiny default (configs/tiny.ini): synthetic videos,
# tiny model, 2 MPI ranks. Installs packages (apt) and builds first.
#
# Today this runs what exists: a tiny random model folder (cvx_make_tiny), the latent precompute
# into one HDF5 store on 2 ranks (cvx_precompute) and its inspection, the training set-up
# (cvx_train --dry_run: resolved config, run folder, logs, the per-rank memory plan; the training
# loop is not in yet) and cvx_generate rendering the prompts on 2 ranks.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
tools/build.sh
build=${CVX_BUILD_DIR:-build}
mpirun_flags=(--oversubscribe)
[ "$(id -u)" -eq 0 ] && mpirun_flags+=(--allow-run-as-root)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

rm -rf demo && mkdir -p demo
"$build/cvx_make_tiny" demo/tiny-model --variant 5b
tools/make_synthetic_dataset.sh demo/data 4 128x96 17
mpirun "${mpirun_flags[@]}" -np 2 "$build/cvx_precompute" --config configs/tiny.ini
"$build/cvx_inspect" demo/store.h5
mpirun "${mpirun_flags[@]}" -np 2 "$build/cvx_train" --config configs/tiny.ini --dry_run
"$build/cvx_inspect" demo/tiny-model > demo/inspect.txt && head -n 12 demo/inspect.txt
mpirun "${mpirun_flags[@]}" -np 2 "$build/cvx_generate" --model_path demo/tiny-model --prompt_file demo/data/prompts.txt \
  --height 64 --width 96 --num_frames 9 --num_inference_steps 4 --dtype fp32 --output demo/videos/sample.mp4
echo "demo: tiny model demo/tiny-model, run folder demo/run (config.ini, log.txt), videos demo/videos/"
