#!/usr/bin/env bash
# A rank that fails must abort the job: mpirun returns non-zero well before the timeout, and the
# error names the failing rank.
set -u
mpirun_cmd=$1; probe=$2; np=${3:-2}
out=$(timeout 60 $mpirun_cmd -np "$np" "$probe" 2>&1); rc=$?
echo "$out"
[ $rc -ne 0 ] || { echo "FAIL: job exited 0"; exit 1; }
[ $rc -ne 124 ] || { echo "FAIL: job hung until the timeout"; exit 1; }
echo "$out" | grep -q "failed on rank 1/$np" || { echo "FAIL: no error line naming rank 1"; exit 1; }
echo "$out" | grep -q "deliberate failure on rank 1" || { echo "FAIL: error message lost"; exit 1; }
echo "PASS: aborted with rc $rc"
