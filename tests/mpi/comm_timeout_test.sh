#!/usr/bin/env bash
# A collective that a live but stuck peer never joins must end the job once the communicator's
# timeout (2 s in the probe) has passed: mpirun returns non-zero long before `timeout 60`, and
# rank 0's error names the collective.
set -u
mpirun_cmd=$1; probe=$2
start=$SECONDS
out=$(timeout 60 $mpirun_cmd -np 2 "$probe" 2>&1); rc=$?
elapsed=$((SECONDS - start))
echo "$out"
[ $rc -ne 0 ] || { echo "FAIL: job exited 0"; exit 1; }
[ $rc -ne 124 ] || { echo "FAIL: job hung until the timeout"; exit 1; }
echo "$out" | grep -q "all_gather .*timed out after 2 s on rank 0 of group mpi:world" \
  || { echo "FAIL: no error line naming the collective, the rank and the group"; exit 1; }
[ $elapsed -le 30 ] || { echo "FAIL: took ${elapsed} s to abort (timeout 2 s)"; exit 1; }
echo "PASS: aborted with rc $rc after ${elapsed} s"
