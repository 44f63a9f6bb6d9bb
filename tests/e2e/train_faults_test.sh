#!/usr/bin/env bash
# What happens to a 2-rank cvx_train run when things go wrong, and that a rerun with
# `--train.resume_from_checkpoint latest` (or latest_valid) picks up from the last good checkpoint
# and ends with the uninterrupted run's final loss.
# usage: train_faults_test.sh SRC BUILD CASE [TRAIN_CRASH_PROBE]
#   stop_signal       SIGUSR1 and SIGTERM to the ranks mid-run: every rank finishes its step,
#                     checkpoints, exits 75; the later signal is logged as ignored (signals go to the
#                     ranks themselves: a TERM to mpirun makes it kill them; the forwarding of USR1
#                     by mpirun and srun is what tests/slurm checks)
#   kill9             kill -9 of one rank mid-step: mpirun and every rank end non-zero within the
#                     bound below, no cvx_train is left behind
#   checkpoint_crash  rank 0 aborts with a checkpoint staged but not renamed (train_crash_probe):
#                     the previous checkpoint stays `latest`
#   disk_full         output_dir on a tmpfs too small for the next checkpoint: a clear error naming
#                     the file and "No space left on device", the previous checkpoint intact
#   corrupt_shard     a damaged shard of the newest checkpoint: `latest` refuses naming the file,
#                     `latest_valid` resumes from the one before
set -uo pipefail
SRC=$1 BUILD=$2 CASE=$3 PROBE=${4:-$2/tests/train_crash_probe}
# shellcheck source=tiny_train_lib.sh
source "$SRC/tests/e2e/tiny_train_lib.sh"
export OMP_NUM_THREADS=1
# A step of the tiny model takes ~0.03 s here, so a run of 100 steps (a checkpoint every 2) lasts
# seconds: long enough to be hit mid-run by polling metrics.jsonl, not by sleeping.
STEPS=100
# mpirun ends the whole job when a rank dies (measured here: about 1 s, see README "Training on a
# cluster"); a job still running this long after the kill has hung.
KILL_BOUND_S=20

tiny_setup "$BUILD/test_scratch/train_faults"
work=$BUILD/test_scratch/train_faults/$CASE-$$
rm -rf "$work"
mkdir -p "$work"
want=$(reference_loss $STEPS)
echo "uninterrupted run of $STEPS steps: final loss $want"

resume_and_check() {  # OUT EXPECTED_START_STEP [resume value]
  local out=$1 start=$2 how=${3:-latest} log=$work/resume.log
  $(train_cmd 2 "$out" --train.train_steps $STEPS --train.resume_from_checkpoint "$how") >"$log" 2>&1 ||
    { cat "$log"; fail "the rerun with resume_from_checkpoint $how failed"; }
  grep -q "resumed from .*checkpoint-$start at step $start" "$log" ||
    { cat "$log"; fail "the rerun did not resume from checkpoint-$start"; }
  [ "$(last_step "$out/metrics.jsonl")" = $STEPS ] || fail "the rerun did not reach step $STEPS"
  expect_same_loss "$(last_loss "$out/metrics.jsonl")" "$want" "the rerun from checkpoint-$start"
}

newest_checkpoint_step() {  # complete checkpoints only (trainer_state.json is written last)
  local dir=$1 best=-1 s
  for f in "$dir"/checkpoint-*/trainer_state.json; do
    [ -f "$f" ] || continue
    s=${f%/trainer_state.json}
    s=${s##*checkpoint-}
    [ "$s" -gt "$best" ] && best=$s
  done
  echo "$best"
}

case "$CASE" in
  stop_signal)
    out=$work/run
    $(train_cmd 2 "$out" --train.train_steps $STEPS) >"$work/run.log" 2>&1 &
    pid=$!
    wait_for_lines "$out/metrics.jsonl" 3 $pid 300
    ranks=$(pgrep -P $pid -f cvx_train | tr '\n' ' ')
    [ "$(echo $ranks | wc -w)" -eq 2 ] || fail "expected 2 cvx_train ranks under mpirun $pid, found '$ranks'"
    # Different signals never merge into one pending signal; which of the two a rank handles first
    # is up to the kernel (both may be delivered at once), so either may be "the first".
    kill -USR1 $ranks
    kill -TERM $ranks
    wait $pid
    rc=$?
    cat "$work/run.log"
    [ $rc -eq 75 ] || fail "exit status $rc after SIGUSR1, expected 75 (checkpointed, requeue me)"
    grep -Eq "stop requested by SIG(USR1|TERM): finishing step [0-9]+, then checkpoint" "$work/run.log" ||
      fail "no 'stop requested by SIGUSR1' line"
    grep -Eq "1 more stop signal\(s\) \(last SIG(USR1|TERM)\) while stopping: ignored" "$work/run.log" ||
      fail "the second signal was not reported as ignored"
    stopped=$(last_step "$out/metrics.jsonl")
    [ "$stopped" -lt $STEPS ] || fail "the run was not stopped early (step $stopped)"
    [ -f "$out/checkpoint-$stopped/trainer_state.json" ] || fail "no checkpoint of the step it stopped at ($stopped)"
    [ ! -f "$out/pytorch_lora_weights.safetensors" ] || fail "a stopped run must not write the final export"
    resume_and_check "$out" "$stopped"
    ;;
  kill9)
    out=$work/run
    $(train_cmd 2 "$out" --train.train_steps $STEPS) >"$work/run.log" 2>&1 &
    pid=$!
    wait_for_lines "$out/metrics.jsonl" 5 $pid 300
    ranks=$(pgrep -P $pid -f cvx_train | tr '\n' ' ')
    [ "$(echo $ranks | wc -w)" -eq 2 ] || fail "expected 2 cvx_train ranks under mpirun $pid, found '$ranks'"
    victim=$(echo $ranks | cut -d' ' -f2)
    start_ns=$(date +%s%N)
    kill -9 "$victim"
    # Bounded: a hang here is the failure this test looks for.
    ended=0
    for _ in $(seq $((KILL_BOUND_S * 10))); do
      kill -0 $pid 2>/dev/null || { ended=1; break; }
      sleep 0.1
    done
    elapsed_ms=$((($(date +%s%N) - start_ns) / 1000000))
    if [ $ended -eq 0 ]; then
      kill -9 $pid $ranks 2>/dev/null
      fail "mpirun still running ${KILL_BOUND_S} s after kill -9 of rank pid $victim"
    fi
    wait $pid
    rc=$?
    echo "mpirun exited with status $rc ${elapsed_ms} ms after kill -9 of one rank"
    [ $rc -ne 0 ] || fail "mpirun exited 0 after a rank was killed"
    # A zombie (exited, not yet reaped by the init process it was handed to) runs nothing.
    for r in $ranks; do
      state=$(ps -o stat= -p "$r" 2>/dev/null)
      [ -z "$state" ] || [ "${state:0:1}" = Z ] || fail "rank pid $r is still running (state $state) after mpirun ended"
    done
    good=$(newest_checkpoint_step "$out")
    [ "$good" -ge 2 ] || fail "no complete checkpoint before the kill"
    resume_and_check "$out" "$good"
    ;;
  checkpoint_crash)
    out=$work/run
    $(train_cmd 2 "$out" --train.train_steps $STEPS | sed "s|$BUILD/cvx_train|$PROBE 6|") \
      >"$work/run.log" 2>&1
    rc=$?
    cat "$work/run.log"
    [ $rc -ne 0 ] || fail "the crashing run exited 0"
    grep -q "aborting rank 0 with checkpoint 6 staged" "$work/run.log" || fail "the probe did not crash at step 6"
    [ ! -e "$out/checkpoint-6" ] || fail "checkpoint-6 exists although its save crashed before the rename"
    [ -d "$out/checkpoint-6.partial" ] || fail "the staged checkpoint-6.partial is not there (did the probe run?)"
    [ "$(newest_checkpoint_step "$out")" = 4 ] || fail "the newest complete checkpoint is not checkpoint-4"
    resume_and_check "$out" 4
    [ ! -e "$out/checkpoint-6.partial" ] || fail "the stale checkpoint-6.partial was not cleaned up"
    ;;
  disk_full)
    # The size of one checkpoint, then a tmpfs with room for the run folder and one checkpoint and a
    # half: the second or third save (small files round up to pages) fails part-way.
    $(train_cmd 2 "$work/probe" --train.train_steps 2) >"$work/probe.log" 2>&1 || { cat "$work/probe.log"; fail "probe run"; }
    ckpt_kb=$(du -sk "$work/probe/checkpoint-2" | cut -f1)
    mnt=$work/tmpfs
    out=$mnt/run
    mkdir -p "$mnt"
    mount -t tmpfs -o size=$((ckpt_kb * 3 / 2 + 64))k tmpfs "$mnt" 2>"$work/mount.err" ||
      skip "cannot mount a tmpfs here ($(cat "$work/mount.err")): needs root or CAP_SYS_ADMIN"
    trap 'umount "$mnt" 2>/dev/null' EXIT
    $(train_cmd 2 "$out" --train.train_steps $STEPS) >"$work/run.log" 2>&1
    rc=$?
    cat "$work/run.log"
    [ $rc -ne 0 ] || fail "the run on a full disk exited 0"
    grep -q "No space left on device" "$work/run.log" || fail "the error does not say 'No space left on device'"
    failed=$(grep "No space left on device" "$work/run.log" | grep -o "$out/checkpoint-[0-9]*\.partial/[^\"]*" |
      head -n 1)
    [ -n "$failed" ] || fail "the error does not name the file of the checkpoint it could not write"
    echo "the save failed writing $failed"
    failed_step=$(echo "$failed" | sed 's|.*/checkpoint-\([0-9]*\)\.partial/.*|\1|')
    good=$(newest_checkpoint_step "$out")
    [ "$good" -ge 2 ] && [ "$good" = $((failed_step - 2)) ] ||
      fail "the newest complete checkpoint is $good, expected the one before the failed save ($((failed_step - 2)))"
    # Free space (as a user would), then resume.
    mount -o remount,size=256m "$mnt" || fail "remount"  # (every checkpoint of the rerun is kept)
    resume_and_check "$out" "$good"
    ;;
  corrupt_shard)
    out=$work/run
    $(train_cmd 2 "$out" --train.train_steps 6) >"$work/run.log" 2>&1 || { cat "$work/run.log"; fail "first run"; }
    shard=$out/checkpoint-6/state/shard-00001-of-00002.safetensors
    [ -f "$shard" ] || fail "no $shard"
    # One flipped byte in the middle of the tensor data: same size, other content.
    size=$(stat -c %s "$shard")
    printf '\x5a' | dd of="$shard" bs=1 seek=$((size - 17)) conv=notrunc status=none
    $(train_cmd 2 "$out" --train.train_steps $STEPS --train.resume_from_checkpoint latest) >"$work/latest.log" 2>&1
    rc=$?
    cat "$work/latest.log"
    [ $rc -ne 0 ] || fail "resume_from_checkpoint latest accepted a corrupt shard"
    grep -q "checkpoint file $shard is corrupt" "$work/latest.log" || fail "the error does not name $shard"
    grep -q "latest_valid" "$work/latest.log" || fail "the error does not point at latest_valid"
    resume_and_check "$out" 4 latest_valid
    grep -q "skipping $out/checkpoint-6: checkpoint file $shard is corrupt" "$work/resume.log" ||
      fail "latest_valid did not log why it skipped checkpoint-6"
    ;;
  *)
    echo "unknown case $CASE"
    exit 2
    ;;
esac
echo "PASS: $CASE"
