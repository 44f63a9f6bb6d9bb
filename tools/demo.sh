#!/usr/bin/env bash
# The main job end to end on the built-in tiny default (configs/tiny.ini): synthetic videos,
# tiny model, 2 MPI ranks. Installs packages (apt) and builds first.
#
# The stages: a tiny random model folder (cvx_make_tiny) and synthetic FFmpeg videos; the latent
# precompute into one HDF5 store on 2 ranks (cvx_precompute); LoRA training on 2 ranks with the
# sharded engine (cvx_train: checkpoints, validation videos split over the ranks, TensorBoard event
# files and loss.png, then a second run that resumes from the latest one and continues);
# cvx_generate rendering the prompts with the trained LoRA into mp4s.
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
# Trains 24 steps (checkpoints at 12 and 24), then continues to 32 from the latest checkpoint, as
# a job resumed after preemption does.
mpirun "${mpirun_flags[@]}" -np 2 "$build/cvx_train" --config configs/tiny.ini --train.train_steps 24
mpirun "${mpirun_flags[@]}" -np 2 "$build/cvx_train" --config configs/tiny.ini --train.train_steps 32 \
  --train.resume_from_checkpoint latest
"$build/cvx_inspect" demo/run/pytorch_lora_weights.safetensors | head -n 8
mpirun "${mpirun_flags[@]}" -np 2 "$build/cvx_generate" --model_path demo/tiny-model --prompt_file demo/data/prompts.txt \
  --lora_path demo/run/pytorch_lora_weights.safetensors \
  --height 64 --width 96 --num_frames 9 --num_inference_steps 4 --dtype fp32 --output demo/videos/sample.mp4
ls demo/run/validation/*/contact_sheet.png demo/run/tensorboard/events.out.tfevents.* demo/run/loss.png
echo "demo: tiny model demo/tiny-model; store demo/store.h5; run folder demo/run (config.ini, log.txt,"
echo "      metrics.jsonl, checkpoint-*/, validation/step-*/ (mp4s + contact_sheet.png), tensorboard/,"
echo "      loss.png, pytorch_lora_weights.safetensors); videos with the LoRA demo/videos/"
