#!/usr/bin/env bash
# The Slurm scripts on a real one-node Slurm (tests/slurm/slurm_cluster.sh, started by the ctest
# fixture), with the tiny model on 2 tasks:
#   jobs_complete    sbatch slurm/precompute.sbatch, then slurm/train_t2v.sbatch: both complete, the
#                    store and the LoRA are written
#   time_limit       a job with --time=1 (and --signal=B:USR1@55) that cannot finish in time, launched
#                    with mpirun: it checkpoints on the signal, requeues itself, resumes from latest
#                    and ends with the uninterrupted run's final loss
#   scancel_usr1     `scancel --signal=USR1 --batch` mid-run, launched with srun: the same
# usage: slurm_jobs_test.sh SRC BUILD CLUSTER_DIR CASE
set -uo pipefail
SRC=$1 BUILD=$2 CLUSTER=$3 CASE=$4
# shellcheck source=../e2e/tiny_train_lib.sh
source "$SRC/tests/e2e/tiny_train_lib.sh"
export SLURM_CONF=$CLUSTER/slurm.conf
[ -f "$SLURM_CONF" ] && sinfo -h >/dev/null 2>&1 || skip "no test Slurm running in $CLUSTER (slurm_cluster_start skipped or failed)"
export OMP_NUM_THREADS=1  # sbatch passes the environment on; the same threads as the reference run
export CVX_ROOT=$SRC CVX_BIN=$BUILD CVX_MPIRUN_FLAGS="${mpirun_flags[*]}"
# Long enough that a time-limit signal (up to ~35 s in: slurmctld checks limits every 30 s) lands
# mid-run: a step of the tiny model takes ~0.012 s on an idle 2-core machine (2000 steps finished
# before the signal once), more under load; short enough to keep this suite at a few minutes.
STEPS=${CVX_SLURM_TEST_STEPS:-5000}
EVERY=(--train.checkpointing_steps 1000)
# The test machine has no GPUs and 2 cores: the scripts' cluster geometry is overridden.
geometry=(--nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --gpus-per-node=0)

tiny_setup "$BUILD/test_scratch/train_faults"
work=$BUILD/test_scratch/slurm_jobs/$CASE-$$
rm -rf "$work"
mkdir -p "$work"
cd "$work" || fail "cd $work"

job_field() { scontrol show job "$1" 2>/dev/null | grep -o "$2=[^ ]*" | head -n 1 | cut -d= -f2; }
# wait_job ID LIMIT_S: until the job is COMPLETED (or ends otherwise); a requeued job waiting for its
# BeginTime (about 2 min after a requeue) is started at once.
wait_job() {
  local id=$1 limit=$2 start=$SECONDS state reason
  while :; do
    state=$(job_field "$id" JobState)
    reason=$(job_field "$id" Reason)
    case "$state" in
      COMPLETED) return 0 ;;
      FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE)
        echo "job $id ended $state"
        return 1
        ;;
    esac
    if [ "$state" = PENDING ] && [ "$reason" = BeginTime ]; then
      echo "job $id requeued (restarts $(job_field "$id" Restarts)), pending for BeginTime at $((SECONDS - start)) s: starting it now"
      [ -n "${on_requeue:-}" ] && $on_requeue "$id"
      # The previous run's step daemons must be gone first: the restarted job reuses the job id, and
      # srun's pmix socket of step ID.0 would still be bound (Slurm's own requeue delay covers this).
      while pgrep -f "slurmstepd: \[$id\." >/dev/null; do sleep 0.2; done
      scontrol update JobId="$id" StartTime=now || fail "scontrol update StartTime=now"
    fi
    [ $((SECONDS - start)) -lt "$limit" ] || { echo "job $id not done after $limit s (state $state, reason $reason)"; return 1; }
    sleep 0.5
  done
}
show_logs() {
  for f in "$work"/*.out "$work"/logs/*/job.out; do
    [ -f "$f" ] && { echo "---- $f"; cat "$f"; }
  done
}
submitted=$work/submitted
submit() {  # SBATCH_ARGS... SCRIPT ARGS...: prints the job id
  local id
  id=$(sbatch --parsable "$@") || fail "sbatch $*"
  echo "$id" >>"$submitted"
  echo "$id"
}
# Nothing of a failed test keeps running into the next one.
trap '[ -f "$submitted" ] && xargs -r scancel <"$submitted" 2>/dev/null' EXIT

case "$CASE" in
  jobs_complete)
    store=$work/store.h5
    id=$(submit "${geometry[@]}" "$SRC/slurm/precompute.sbatch" "$TINY/base.ini" --data.store "$store")
    wait_job "$id" 300 || { show_logs; fail "the precompute job did not complete"; }
    [ -f "$store" ] || { show_logs; fail "no store $store"; }
    id=$(submit "${geometry[@]}" "$SRC/slurm/train_t2v.sbatch" "$TINY/base.ini" --data.store "$store" \
      --train.output_dir "$work/run" --train.train_steps 4)
    wait_job "$id" 300 || { show_logs; fail "the training job did not complete"; }
    show_logs
    [ "$(job_field "$id" ExitCode)" = 0:0 ] || fail "training job exit code $(job_field "$id" ExitCode)"
    [ -f "$work/run/pytorch_lora_weights.safetensors" ] || fail "no LoRA export"
    [ -f "$work/logs/cvx-train-t2v-$id/job.out" ] || fail "no per-job log folder logs/cvx-train-t2v-$id/"
    grep -q "launching with srun" "$work/logs/cvx-train-t2v-$id/job.out" || fail "auto did not choose srun"
    ;;
  time_limit | scancel_usr1)
    want=$(reference_loss "$STEPS" "${EVERY[@]}")
    echo "uninterrupted run of $STEPS steps: final loss $want"
    run=$work/run
    if [ "$CASE" = time_limit ]; then
      # The resumed job gets room to finish (it would otherwise be cut at a minute again, which works
      # too, only slower).
      raise_limit() { scontrol update JobId="$1" TimeLimit=10 || fail "scontrol update TimeLimit"; }
      on_requeue=raise_limit
      id=$(CVX_LAUNCHER=mpirun submit "${geometry[@]}" --time=1 --signal=B:USR1@55 "$SRC/slurm/train_t2v.sbatch" \
        "$TINY/base.ini" --train.output_dir "$run" --train.train_steps "$STEPS" "${EVERY[@]}")
    else
      id=$(submit "${geometry[@]}" "$SRC/slurm/train_t2v.sbatch" "$TINY/base.ini" --train.output_dir "$run" \
        --train.train_steps "$STEPS" "${EVERY[@]}")
      start=$SECONDS
      until [ "$(metrics_lines "$run/metrics.jsonl")" -ge 3 ]; do
        case "$(job_field "$id" JobState)" in
          COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL) show_logs; fail "job $id ended before it could be signalled" ;;
        esac
        [ $((SECONDS - start)) -lt 300 ] || { show_logs; fail "no training steps after 300 s"; }
        sleep 0.2
      done
      scancel --signal=USR1 --batch "$id" || fail "scancel --signal=USR1 --batch"
    fi
    t0=$SECONDS
    wait_job "$id" 600 || { show_logs; fail "job $id did not complete"; }
    echo "job $id completed $((SECONDS - t0)) s after submission/signal"
    show_logs
    log=$work/logs/cvx-train-t2v-$id/job.out
    [ "$(job_field "$id" Restarts)" -ge 1 ] || fail "the job was not requeued (Restarts 0): did it finish before the signal?"
    grep -q "stop requested by SIGUSR1: finishing step" "$log" || fail "no 'stop requested by SIGUSR1' in $log"
    grep -q "exited with status 75" "$log" || fail "cvx_train did not exit with 75"
    grep -q "requeueing job $id" "$log" || fail "the batch script did not requeue"
    grep -q "restart 1 on" "$log" || fail "no restart 1 in the appended log"
    grep -q "resumed from $run/checkpoint-" "$log" || fail "the requeued job did not resume from a checkpoint"
    [ "$(last_step "$run/metrics.jsonl")" = "$STEPS" ] || fail "the requeued job did not reach step $STEPS"
    [ -f "$run/pytorch_lora_weights.safetensors" ] || fail "no LoRA export after the resumed run"
    expect_same_loss "$(last_loss "$run/metrics.jsonl")" "$want" "the requeued job"
    ;;
  *)
    echo "unknown case $CASE"
    exit 2
    ;;
esac
echo "PASS: $CASE"
