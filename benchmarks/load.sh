#!/usr/bin/env bash
# Speed on a shared machine: every workload alone and next to N busy processes, at 1 and 2
# threads, for dynrnn and (when it is installed) PyTorch. Builds the programs the way a user
# builds them (one g++ line each, none of dynrnn's CMake flags, default settings), then runs
# ROUNDS rounds; each round measures every program alone and then next to BUSY shell busy
# loops (`while :; do :; done`), so a noisy moment of the host falls on both. Prints the
# medians and, per workload, the ratios the robustness targets are about:
#   - loaded 2 threads / loaded 1 thread: at most 1 (two threads no slower than one);
#   - loaded 2 threads / alone 2 threads: at most 2.
#
#   benchmarks/load.sh                       # 1 busy process, 5 rounds (about 15 minutes)
#   BUSY=2 ROUNDS=3 benchmarks/load.sh
#   PYTORCH=0 WORKLOADS="S M" benchmarks/load.sh
#
# dynrnn's workloads are bench_lstm.cpp's (ms per forward pass or training step); count_ones
# and char_model are the examples with their default model (seconds of training: 1000 steps
# of count-ones, CHAR_STEPS steps of char_model). PyTorch runs
# benchmarks/peers/pytorch_lstm.py (the best of its thread settings, and of padded and packed
# batches, per workload) and
# pytorch_count_ones.py, once alone and once loaded, with ROUNDS repetitions each. Output
# goes to $DYNRNN_BUILD_DIR/load/ (default build/load/): load.jsonl (every measurement) and
# table.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)

out=${DYNRNN_BUILD_DIR:-build}/load
rounds=${ROUNDS:-5}
busy_count=${BUSY:-1}
workloads=${WORKLOADS:-S M M-var L}
char_steps=${CHAR_STEPS:-200}
cxx=${CXX:-g++}
read -r -a flags <<< "${CXXFLAGS:--O3 -march=native -fopenmp}"
mkdir -p "$out"
pytorch=${PYTORCH:-1}
if [ "$pytorch" = 1 ] && ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
  echo "load.sh: PyTorch not importable by /usr/bin/python3 (apt-get install python3-torch); dynrnn only" >&2
  pytorch=0
fi

build() {  # output source [libraries...]
  echo "load.sh: $cxx ${flags[*]} $2" >&2
  "$cxx" -std=c++17 "${flags[@]}" -Iinclude -Iexamples -I/usr/include/eigen3 "$2" -o "$out/$1" "${@:3}"
}
build bench_user benchmarks/bench_lstm.cpp -lbenchmark -lpthread
build count_ones examples/count_ones/main.cpp
build char_model examples/char_model/main.cpp

busy_pids=()
start_busy() {
  for _ in $(seq "$busy_count"); do
    (while :; do :; done) &
    busy_pids+=($!)
  done
  sleep 0.5
}
stop_busy() {
  if [ ${#busy_pids[@]} -gt 0 ]; then
    kill "${busy_pids[@]}" 2>/dev/null || true
    wait "${busy_pids[@]}" 2>/dev/null || true
  fi
  busy_pids=()
}
trap stop_busy EXIT

results=$out/load.jsonl
: > "$results"
record() {  # system condition kind workload threads value unit
  if [ -z "$6" ]; then
    echo "load.sh: no time from $1 $3 $4 at $5 thread(s), $2; left out" >&2
    return
  fi
  printf '{"system": "%s", "condition": "%s", "kind": "%s", "workload": "%s", "threads": %s, "value": %s, "unit": "%s"}\n' \
    "$@" >> "$results"
}
seconds_of() { grep -o 'in [0-9.]* s' | head -1 | awk '{print $2}'; }

filter="^dynrnn/(forward|train)/($(echo "$workloads" | sed 's/ /|/g'))/threads:[12]/"
cd "$out"  # the examples write their loss curves and checkpoints here
run_dynrnn() {  # condition
  ./bench_user --benchmark_filter="$filter" --benchmark_min_time=0.3 --benchmark_format=json 2>/dev/null |
    /usr/bin/env python3 -c '
import json, sys
for b in json.load(sys.stdin)["benchmarks"]:
    system, kind, workload, threads = b["run_name"].split("/")[:4]
    print(kind, workload, threads.split(":")[1], b["real_time"])' |
    while read -r kind workload threads ms; do record dynrnn "$1" "$kind" "$workload" "$threads" "$ms" ms; done
  for threads in 1 2; do
    s=$(OMP_NUM_THREADS=$threads ./count_ones --checkpoint-every 0 --validate-every 0 --log-every 1000 | seconds_of)
    record dynrnn "$1" train count_ones "$threads" "$s" s
    s=$(OMP_NUM_THREADS=$threads ./char_model --max-steps "$char_steps" --checkpoint-every 0 --samples 0 \
          --log-every 1000 --csv char_model_loss.csv | grep '^trained' | seconds_of)
    record dynrnn "$1" train char_model "$threads" "$s" s
  done
}
run_pytorch() {  # condition
  /usr/bin/python3 "$root"/benchmarks/peers/pytorch_lstm.py workloads.jsonl --repetitions "$rounds" 2>/dev/null |
    /usr/bin/env python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print(r["kind"], r["workload"], r["threads"], r["ms"], r["mode"])' |
    while read -r kind workload threads ms mode; do record pytorch "$1" "$kind/$mode" "$workload" "$threads" "$ms" ms; done
  for threads in 1 2; do
    for _ in $(seq "$rounds"); do
      s=$(/usr/bin/python3 "$root"/benchmarks/peers/pytorch_count_ones.py --threads "$threads" | seconds_of)
      record pytorch "$1" train count_ones "$threads" "$s" s
    done
  done
}

for round in $(seq "$rounds"); do
  echo "load.sh: round $round of $rounds, alone" >&2
  run_dynrnn alone
  echo "load.sh: round $round of $rounds, next to $busy_count busy process(es)" >&2
  start_busy
  run_dynrnn loaded
  stop_busy
done
if [ "$pytorch" = 1 ]; then
  ./bench_user --workloads-json | grep -E "\"name\": \"($(echo "$workloads" | sed 's/ /|/g'))\"" > workloads.jsonl
  echo "load.sh: PyTorch alone" >&2
  run_pytorch alone
  echo "load.sh: PyTorch next to $busy_count busy process(es)" >&2
  start_busy
  run_pytorch loaded
  stop_busy
fi
cd - >/dev/null

{
  echo "Run on $(date -u +%Y-%m-%d), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores;"
  echo "dynrnn $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $cxx ${flags[*]}; $rounds rounds, next to $busy_count busy process(es)."
  echo
  python3 - "$results" <<'EOF'
import json, statistics, sys
from collections import defaultdict
values = defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    values[(r["system"], r["kind"], r["workload"], r["threads"], r["condition"])].append((r["value"], r["unit"]))
rows = sorted({k[:3] for k in values}, key=lambda k: (k[0], ["S", "M", "M-var", "L", "count_ones", "char_model"].index(k[2]) if k[2] in ["S", "M", "M-var", "L", "count_ones", "char_model"] else 9, k[1]))
def med(key):
    v = values.get(key)
    return (statistics.median(x for x, _ in v), v[0][1]) if v else (None, "")
print("Medians; ratios of times (below 1: faster). Targets: loaded 2t / loaded 1t <= 1, loaded 2t / alone 2t <= 2.\n")
print("| system | workload | kind | unit | 1t alone | 2t alone | 1t loaded | 2t loaded | 2t loaded / 1t loaded | 2t loaded / 2t alone |")
print("|---|---|---|---|---|---|---|---|---|---|")
for system, kind, workload in rows:
    cells = {}
    unit = ""
    for t in (1, 2):
        for c in ("alone", "loaded"):
            cells[(t, c)], u = med((system, kind, workload, t, c))
            unit = unit or u
    fmt = lambda x: "—" if x is None else f"{x:.3g}"
    ratio = lambda a, b: "—" if a is None or b is None else f"{a / b:.2f}"
    print(f"| {system} | {workload} | {kind} | {unit} | {fmt(cells[(1, 'alone')])} | {fmt(cells[(2, 'alone')])} | "
          f"{fmt(cells[(1, 'loaded')])} | {fmt(cells[(2, 'loaded')])} | "
          f"{ratio(cells[(2, 'loaded')], cells[(1, 'loaded')])} | {ratio(cells[(2, 'loaded')], cells[(2, 'alone')])} |")
EOF
} | tee "$out/table.md"
