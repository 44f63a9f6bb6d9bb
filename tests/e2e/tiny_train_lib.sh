# Sourced by the shell e2e and slurm tests: a tiny model, synthetic videos and their latent store
# (made once per scratch folder, under a lock, as tools/demo.sh makes them), the cvx_train runs on
# them, and the checks those tests share. Needs SRC (source tree) and BUILD (build tree).
# shellcheck shell=bash

fail() {
  echo "FAIL: $*"
  exit 1
}
skip() {  # ctest reports status 77 as skipped (SKIP_RETURN_CODE)
  echo "SKIP: $*"
  exit 77
}

mpirun_flags=(--oversubscribe)
[ "$(id -u)" -eq 0 ] && mpirun_flags+=(--allow-run-as-root)

# tiny_setup DIR: DIR/model, DIR/data, DIR/store.h5 and DIR/base.ini (a LoRA run of 4 samples at
# 9x48x64 on 2 ranks, a checkpoint every 2 steps). Several tests share DIR; the first makes it.
tiny_setup() {
  TINY=$1
  mkdir -p "$TINY"
  (
    flock 9
    [ -f "$TINY/.ready" ] && exit 0
    rm -rf "$TINY/model" "$TINY/data" "$TINY/store.h5"
    "$BUILD/cvx_make_tiny" "$TINY/model" --variant 5b >/dev/null
    "$SRC/tools/make_synthetic_dataset.sh" "$TINY/data" 4 64x48 12 >/dev/null
    cat >"$TINY/base.ini" <<INI
log_level = info

[model]
path = $TINY/model
dtype = fp32

[data]
data_root = $TINY/data
caption_column = prompts.txt
video_column = videos.txt
train_resolution = 9x48x64
store = $TINY/store.h5

[precompute]
latent_dtype = fp32
embedding_dtype = fp32

[train]
mixed_precision = no
learning_rate = 1e-3
lr_scheduler = constant
lr_warmup_steps = 0
checkpointing_steps = 2
checkpointing_limit = 0

[lora]
rank = 4
alpha = 4
INI
    OMP_NUM_THREADS=1 mpirun "${mpirun_flags[@]}" -np 2 "$BUILD/cvx_precompute" --config "$TINY/base.ini" \
      >"$TINY/precompute.log" 2>&1 || { cat "$TINY/precompute.log"; exit 1; }
    touch "$TINY/.ready"
  ) 9>"$TINY/.lock" || fail "could not make the tiny model, dataset and store in $TINY"
}

# train_cmd NP OUTPUT_DIR ARGS...: the mpirun command line of a cvx_train run on the tiny setup.
train_cmd() {
  local np=$1 out=$2
  shift 2
  echo mpirun "${mpirun_flags[@]}" -np "$np" "$BUILD/cvx_train" --config "$TINY/base.ini" --train.output_dir "$out" "$@"
}

# last_loss METRICS_FILE / last_step METRICS_FILE / metrics_lines METRICS_FILE
last_loss() { tail -n 1 "$1" | sed -n 's/.*"loss":\([^,}]*\).*/\1/p'; }
last_step() { tail -n 1 "$1" | sed -n 's/.*"step":\([0-9]*\).*/\1/p'; }
metrics_lines() {
  if [ -f "$1" ]; then grep -c . "$1"; else echo 0; fi
}

# reference_loss STEPS [ARGS...]: the final loss of an uninterrupted 2-rank run of STEPS steps
# (made once per STEPS and ARGS).
reference_loss() {
  local steps=$1
  shift
  local ref
  ref=$TINY/reference-$steps-$(echo "$*" | cksum | cut -d' ' -f1)
  (
    flock 9
    if [ ! -f "$ref/done" ]; then
      rm -rf "$ref"
      OMP_NUM_THREADS=1 $(train_cmd 2 "$ref" --train.train_steps "$steps" "$@") >"$ref.log" 2>&1 ||
        { cat "$ref.log"; exit 1; }
      touch "$ref/done"
    fi
  ) 9>"$TINY/.lock-reference" || fail "the uninterrupted reference run of $steps steps failed"
  last_loss "$ref/metrics.jsonl"
}

# wait_for_lines FILE N PID TIMEOUT_S: polls until FILE has N lines; fails if PID ends first.
wait_for_lines() {
  local file=$1 n=$2 pid=$3 limit=$4 start=$SECONDS
  while [ "$(metrics_lines "$file")" -lt "$n" ]; do
    kill -0 "$pid" 2>/dev/null || fail "the run ended before $file had $n lines"
    [ $((SECONDS - start)) -lt "$limit" ] || fail "$file did not reach $n lines in $limit s"
    sleep 0.05
  done
}

# Same world size, same samples and draws: a resumed run reproduces the uninterrupted one bit for bit
# (the rule of TrainE2E.StoppedAndResumedRunReproducesTheUninterruptedLossCurveBitwise).
expect_same_loss() {
  local got=$1 want=$2 what=$3
  [ -n "$got" ] || fail "$what: no final loss"
  [ "$got" = "$want" ] || fail "$what: final loss $got, the uninterrupted run's is $want"
  echo "ok: $what ends with the uninterrupted run's final loss $want"
}
