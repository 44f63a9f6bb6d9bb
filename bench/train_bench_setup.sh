# Sourced by bench/train_cpu.sh and bench/sp_cpu.sh: the bench transformer (bench_train_setup), 4
# synthetic 9x256x256 clips, $work/bench.ini (fp32, LoRA r16, no checkpoints or plots) and its
# store, precomputed on 2 ranks. Needs $build, $work and the mpirun flags array $flags.
train_bench_setup() {
  "$build/bench/bench_train_setup" "$work/model" >/dev/null
  tools/make_synthetic_dataset.sh "$work/data" 4 256x256 9 >/dev/null
  cat >"$work/bench.ini" <<INI
log_level = warning
[model]
path = $work/model
dtype = fp32
[data]
data_root = $work/data
train_resolution = 9x256x256
store = $work/store.h5
[precompute]
latent_dtype = bf16
[train]
mixed_precision = no
learning_rate = 1e-4
lr_scheduler = constant
lr_warmup_steps = 0
checkpointing_steps = 100000
plot_metrics = false
[lora]
rank = 16
alpha = 16
INI
  OMP_NUM_THREADS=1 mpirun "${flags[@]}" -np 2 "$build/cvx_precompute" --config "$work/bench.ini" >/dev/null
}
