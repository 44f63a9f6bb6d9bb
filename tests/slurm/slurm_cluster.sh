#!/usr/bin/env bash
# A throwaway one-node Slurm (slurmctld + slurmd + munged, all as root, no cgroups) living in DIR,
# for the slurm-labelled tests; see /work/shared/notes/slurm-local.md for why each setting is there.
#   tests/slurm/slurm_cluster.sh start DIR   installs slurm-wlm/munge if missing, writes DIR/slurm.conf
#                                            and a munge key, starts the daemons, waits for the node
#                                            to be idle; then `export SLURM_CONF=DIR/slurm.conf`
#   tests/slurm/slurm_cluster.sh stop DIR    cancels every job and stops the daemons (by their pids)
# Exit status 77 from start: Slurm cannot run here (no root, no apt); the caller skips.
set -euo pipefail
action=${1:?usage: slurm_cluster.sh start|stop DIR}
dir=${2:?usage: slurm_cluster.sh start|stop DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
export SLURM_CONF=$dir/slurm.conf

stop_pid_file() {  # the daemon whose pid is in $1, TERM then KILL
  local f=$1 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

stop() {
  if [ -f "$SLURM_CONF" ] && [ -f "$dir/slurmctld.pid" ]; then
    scancel --full --user=root >/dev/null 2>&1 || true
    # Job processes (mpirun, cvx_*) are children of slurmstepd, which slurmd's stop does not wait for.
    for _ in $(seq 50); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.2; done
  fi
  stop_pid_file "$dir/slurmd.pid"
  stop_pid_file "$dir/slurmctld.pid"
  stop_pid_file "$dir/munged.pid"
}

if [ "$action" = stop ]; then
  stop
  echo "slurm_cluster: stopped ($dir)"
  exit 0
fi
[ "$action" = start ] || { echo "usage: slurm_cluster.sh start|stop DIR" >&2; exit 2; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "slurm_cluster: slurm-wlm/munge are not installed and cannot be (needs root and apt)" >&2
    exit 77
  fi
  echo "slurm_cluster: installing slurm-wlm munge"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null ||
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null; }
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "slurm_cluster: needs root (slurmd runs jobs as their user)" >&2
  exit 77
fi
# A failed start leaves nothing running.
trap 'rc=$?; if [ $rc -ne 0 ]; then echo "slurm_cluster: start failed; logs in $dir" >&2; stop; fi' EXIT
stop  # leftovers of an earlier run in this folder

host=$(hostname -s)
cpus=$(nproc --all)  # plain nproc honours OMP_NUM_THREADS (ctest sets 1): the node would get one CPU
mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 / 2)}' /proc/meminfo)  # under the real size, so the node is not drained
mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
chmod 700 "$dir/munge"
rm -rf "${dir:?}/state/"* "${dir:?}/spool/"*
head -c 1024 /dev/urandom >"$dir/munge/munge.key"
chmod 400 "$dir/munge/munge.key"
munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
  --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munge/seed"

cat >"$SLURM_CONF" <<CONF
ClusterName=cvxtest
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldPort=${CVX_SLURMCTLD_PORT:-6817}
SlurmdPort=${CVX_SLURMD_PORT:-6818}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobRequeue=1
MinJobAge=600
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF

slurmctld -c
slurmd
for _ in $(seq 150); do
  state=$(sinfo -h -o %T 2>/dev/null || true)
  [ "$state" = idle ] && { echo "slurm_cluster: node $host idle (SLURM_CONF=$SLURM_CONF)"; exit 0; }
  sleep 0.2
done
echo "slurm_cluster: node $host not idle after 30 s (state '${state:-?}')" >&2
exit 1
