#!/usr/bin/env bash
# Training throughput of data parallelism on this machine: sequences per second at M and L for
#   1 process x 1 thread, 1 process x 2 threads, 2 processes x 1 thread (overlap on and off),
# each round running every configuration once, interleaved, so that a noisy moment hits them
# all; then the medians over the rounds and the ratios to 1 x 1. Also the share of a step the
# 2-process runs spend in the communicator (summing gradients, not hidden by overlap).
#
#   benchmarks/data_parallel.sh                 # ROUNDS=5 WORKLOADS="M L"
#   ROUNDS=7 STEPS=10 WORKLOADS=M benchmarks/data_parallel.sh
#
# Builds data_parallel_benchmark in ${DYNRNN_BUILD_DIR:-build} (needs MPI: libopenmpi-dev, openmpi-bin).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=${DYNRNN_BUILD_DIR:-build}
rounds=${ROUNDS:-5}
workloads=${WORKLOADS:-M L}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build "$build" -j "$(nproc)" --target data_parallel_benchmark > /dev/null
bin=$build/benchmarks/data_parallel_benchmark
[ "$(id -u)" -ne 0 ] || export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
out=$(mktemp)
trap 'rm -f "$out"' EXIT

for w in $workloads; do
  case $w in L) steps=${STEPS:-3} ;; *) steps=${STEPS:-10} ;; esac
  for r in $(seq "$rounds"); do
    echo "round $r/$rounds, $w ..." >&2
    OMP_NUM_THREADS=1 "$bin" "$w" --steps "$steps" --rounds 1 | sed 's/^/1x1 /' >> "$out"
    OMP_NUM_THREADS=2 "$bin" "$w" --steps "$steps" --rounds 1 | sed 's/^/1x2 /' >> "$out"
    mpirun -np 2 --oversubscribe --bind-to core -x OMP_NUM_THREADS=1 "$bin" "$w" --steps "$steps" --rounds 1 \
      | sed 's/^/2x1 /' >> "$out"
    mpirun -np 2 --oversubscribe --bind-to core -x OMP_NUM_THREADS=1 "$bin" "$w" --steps "$steps" --rounds 1 \
      --no-overlap | sed 's/^/2x1-no-overlap /' >> "$out"
  done
done

python3 - "$out" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    config, workload = f[0], f[2]
    v = dict(zip(f[3::2], f[4::2]))
    rows.setdefault((workload, config), []).append(v)
print("| workload | processes x threads | seq/s (median) | step ms | vs 1x1 | comm ms/step | comm share |")
print("|---|---|---|---|---|---|---|")
for workload in dict.fromkeys(w for w, _ in rows):
    base = statistics.median(float(v["seq/s"]) for v in rows[(workload, "1x1")])
    for config in ("1x1", "1x2", "2x1", "2x1-no-overlap"):
        vs = rows.get((workload, config))
        if not vs: continue
        seq = statistics.median(float(v["seq/s"]) for v in vs)
        step = statistics.median(float(v["step_ms"]) for v in vs)
        comm = statistics.median(float(v["comm_ms"]) for v in vs)
        share = statistics.median(float(v["comm_share"]) for v in vs)
        shown = config.replace("-no-overlap", " (overlap off)")
        cm = f"{comm:.3f}" if config.startswith("2") else "-"
        sh = f"{100 * share:.2f}%" if config.startswith("2") else "-"
        print(f"| {workload} | {shown} | {seq:.1f} | {step:.2f} | {seq / base:.2f} | {cm} | {sh} |")
PY
