#!/usr/bin/env bash
# A rank that dies mid-run (SIGKILL) must end the whole data-parallel job with a message,
# not leave the other ranks waiting in a collective forever; and the last checkpoint, which
# rank 0 writes atomically, must stay loadable.
#   kill_rank.sh MPIEXEC COUNT_ONES WORK_DIR
set -euo pipefail
mpiexec=$1 count_ones=$2 work=$3
rm -rf "$work"
mkdir -p "$work"
cd "$work"

"$mpiexec" -np 2 --oversubscribe "$count_ones" --steps 100000000 --checkpoint-every 20 --validate-every 0 \
  --log-every 1000 --checkpoint ck.safetensors --csv loss.csv > job.log 2>&1 &
job=$!

for _ in $(seq 300); do [ -f ck.safetensors ] && break; sleep 0.1; done
if [ ! -f ck.safetensors ]; then
  echo "kill_rank: no checkpoint after 30 s"; cat job.log; kill -9 "$job"; exit 1
fi

# Rank 1: the count_ones process whose environment says so.
victim=""
for pid in $(pgrep -f -- "$count_ones"); do
  if tr '\0' '\n' < "/proc/$pid/environ" 2> /dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1"; then victim=$pid; fi
done
if [ -z "$victim" ]; then
  echo "kill_rank: rank 1 not found"; kill -9 "$job"; exit 1
fi
kill -9 "$victim"
echo "kill_rank: killed rank 1 (pid $victim)"

for _ in $(seq 600); do kill -0 "$job" 2> /dev/null || break; sleep 0.1; done
if kill -0 "$job" 2> /dev/null; then
  echo "kill_rank: the job still runs 60 s after rank 1 died"; kill -9 "$job"; exit 1
fi
status=0
wait "$job" || status=$?
echo "kill_rank: the job ended with status $status:"
sed 's/^/  | /' job.log | tail -12
if [ "$status" -eq 0 ]; then echo "kill_rank: the job reported success"; exit 1; fi
if ! grep -q "signal 9" job.log; then echo "kill_rank: the job's output does not say that a rank was killed"; exit 1; fi

# The checkpoint loads (asking for fewer steps than it holds: load, report, evaluate).
out=$("$count_ones" --resume ck.safetensors --steps 1 --checkpoint-every 0 --csv resume.csv --eval 20 2>&1) || {
  echo "kill_rank: the checkpoint does not load:"; echo "$out"; exit 1; }
echo "$out" | grep "already at step"
echo "kill_rank: the job ended, and its checkpoint loads"
