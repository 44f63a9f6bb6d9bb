# Sourced by slurm/*.sbatch (sbatch runs a copy of the script, so they find this file through
# $CVX_ROOT, default the submit directory): the per-job log folder, the launcher, and the stop
# protocol that makes a job checkpoint and requeue itself before its time runs out.
#
#   cvx_job_start               logs of this job (every restart appends) go to $CVX_LOG_DIR,
#                               default logs/<job name>-<job id>/job.out
#   cvx_run_ranks MODE PROG ARGS...
#                               runs PROG on every task with the launcher ($CVX_LAUNCHER: srun, mpirun
#                               or auto = srun --mpi=pmix when this Slurm offers pmix, else mpirun).
#                               SIGUSR1 or SIGTERM to the batch shell is passed on as SIGUSR1 (mpirun
#                               forwards USR1 to the ranks; a TERM would make it kill them within a
#                               second). MODE checkpoint: the program checkpoints and exits 75, then
#                               the job is requeued. MODE kill: the program is resumable as it is
#                               (cvx_precompute), so it is stopped and the job requeued.
#                               Returns the program's exit status.
# Environment: CVX_BIN (programs, default build), CVX_LAUNCHER, CVX_MPIRUN_FLAGS (extra mpirun flags,
# e.g. "--allow-run-as-root --oversubscribe"), CVX_SRUN_FLAGS, CVX_LOG_DIR.

cvx_exit_requeue=75  # cvx::kExitStoppedToResume: checkpointed after a stop signal, requeue me

cvx_job_start() {
  CVX_LOG_DIR=${CVX_LOG_DIR:-logs/${SLURM_JOB_NAME:-cvx}-${SLURM_JOB_ID:-local}}
  mkdir -p "$CVX_LOG_DIR"
  # Slurm's own --output file gets this one line; it cannot create folders, so the script does.
  echo "cvx: job ${SLURM_JOB_ID:-?} restart ${SLURM_RESTART_COUNT:-0}: log in $CVX_LOG_DIR/job.out"
  exec >>"$CVX_LOG_DIR/job.out" 2>&1
  echo "==== $(date -u '+%F %T') UTC job ${SLURM_JOB_ID:-?} (${SLURM_JOB_NAME:-}) restart ${SLURM_RESTART_COUNT:-0}" \
    "on ${SLURM_JOB_NODELIST:-$(hostname)}: ${SLURM_NTASKS:-1} task(s)"
}

cvx_launcher() {
  local launcher=${CVX_LAUNCHER:-auto}
  if [ "$launcher" = auto ]; then
    # Debian's OpenMPI 4.1 starts under srun with Slurm's pmix plugin (not pmi2); any other setup
    # still works with mpirun inside the allocation.
    if srun --mpi=list 2>&1 | grep -qw pmix; then launcher=srun; else launcher=mpirun; fi
  fi
  echo "$launcher"
}

cvx_stop_requested=0
cvx_on_stop_signal() {  # $1 = the signal the batch shell got
  cvx_stop_requested=1
  if [ "$cvx_stop_mode" = checkpoint ]; then
    echo "cvx: $1 received at $(date -u '+%T') UTC: asking the ranks to finish their step and checkpoint"
    kill -USR1 "$cvx_launcher_pid" 2>/dev/null || true
  else
    echo "cvx: $1 received at $(date -u '+%T') UTC: stopping the ranks (a rerun continues where they stopped)"
    kill -TERM "$cvx_launcher_pid" 2>/dev/null || true
  fi
}

cvx_run_ranks() {
  cvx_stop_mode=$1
  shift
  local program=${CVX_BIN:-build}/$1
  shift
  local launcher cmd rc
  launcher=$(cvx_launcher)
  case "$launcher" in
    srun) cmd=(srun --mpi=pmix --cpu-bind=cores --kill-on-bad-exit=1 ${CVX_SRUN_FLAGS:-}) ;;
    mpirun) cmd=(mpirun --bind-to core --map-by "slot:PE=${SLURM_CPUS_PER_TASK:-1}" ${CVX_MPIRUN_FLAGS:-}) ;;
    *)
      echo "cvx: CVX_LAUNCHER=$launcher: expected srun, mpirun or auto"
      return 2
      ;;
  esac
  echo "cvx: launching with $launcher: ${cmd[*]} $program $*"
  "${cmd[@]}" "$program" "$@" &
  cvx_launcher_pid=$!
  trap 'cvx_on_stop_signal SIGUSR1' USR1
  trap 'cvx_on_stop_signal SIGTERM' TERM
  # `wait` returns early (status > 128) when a trapped signal arrives: wait again until it is gone.
  while :; do
    wait "$cvx_launcher_pid"
    rc=$?
    if [ $rc -gt 128 ] && kill -0 "$cvx_launcher_pid" 2>/dev/null; then continue; fi
    break
  done
  trap - USR1 TERM
  echo "cvx: $(basename "$program") exited with status $rc at $(date -u '+%T') UTC"
  if [ $rc -eq $cvx_exit_requeue ] || { [ "$cvx_stop_mode" = kill ] && [ $cvx_stop_requested -eq 1 ]; }; then
    # Exiting alone does not requeue (--requeue covers node failure and preemption only).
    if [ -n "${SLURM_JOB_ID:-}" ]; then
      echo "cvx: stopped on request: requeueing job $SLURM_JOB_ID (it resumes where it stopped)"
      scontrol requeue "$SLURM_JOB_ID"
    else
      echo "cvx: stopped on request outside Slurm: run the same command again to resume"
    fi
  fi
  return $rc
}
