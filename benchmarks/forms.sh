#!/usr/bin/env bash
# The speed a user's own program gets from each calling form: builds the benchmarks the way a
# user builds a program (one g++ line, none of dynrnn's CMake flags), runs the reusing and the
# returning forms of forward and training and SequenceModel's training step, interleaved, and
# prints the ratios per workload.
#
#   benchmarks/forms.sh                        # 5 interleaved repetitions
#   REPETITIONS=9 CXXFLAGS="-O2 -fopenmp" benchmarks/forms.sh
#
# A ratio is the speed of the returning form over the speed of the reusing form (above 1:
# the returning form is faster), from medians of one run. Output goes to
# $DYNRNN_BUILD_DIR/forms/ (default build/forms/).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out=${DYNRNN_BUILD_DIR:-build}/forms
reps=${REPETITIONS:-5}
cxx=${CXX:-g++}
read -r -a flags <<< "${CXXFLAGS:--O3 -march=native -fopenmp}"
mkdir -p "$out"

echo "forms.sh: $cxx ${flags[*]} benchmarks/bench_lstm.cpp" >&2
"$cxx" -std=c++17 "${flags[@]}" -Iinclude -I/usr/include/eigen3 benchmarks/bench_lstm.cpp \
  -o "$out/bench_user" -lbenchmark -lpthread
echo "forms.sh: running, $reps repetitions" >&2
"$out/bench_user" --benchmark_filter='^dynrnn(-returning|-model)?/(forward|train)/' \
  --benchmark_repetitions="$reps" --benchmark_enable_random_interleaving=true \
  --benchmark_report_aggregates_only=true --benchmark_out_format=json \
  --benchmark_out="$out/forms.json" >/dev/null

python3 - "$out/forms.json" <<'EOF'
import json, sys
med = {}
for b in json.load(open(sys.argv[1]))["benchmarks"]:
    if b.get("aggregate_name") != "median":
        continue
    system, kind, workload, threads = b["run_name"].split("/")[:4]
    med[(system, kind, workload, threads.split(":")[1])] = b["real_time"]
print("returning form / reusing form, speed ratio of medians (reusing ms -> returning ms)\n")
print("| workload | infer, 1 thread | train, 1 thread | infer, 2 threads | train, 2 threads |")
print("|---|---|---|---|---|")
for w in ["S", "M", "M-var", "L"]:
    cells = []
    for threads in ["1", "2"]:
        for kind in ["forward", "train"]:
            a, b = med.get(("dynrnn", kind, w, threads)), med.get(("dynrnn-returning", kind, w, threads))
            cells.append("—" if a is None or b is None else f"{a / b:.2f} ({a:.3g} -> {b:.3g})")
    print(f"| {w} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} |")
print("\nSequenceModel::train_step / the hand-written step, speed ratio of medians\n")
print("| workload | train, 1 thread | train, 2 threads |")
print("|---|---|---|")
for w in ["S", "M", "M-var", "L"]:
    cells = []
    for threads in ["1", "2"]:
        a, b = med.get(("dynrnn", "train", w, threads)), med.get(("dynrnn-model", "train", w, threads))
        cells.append("—" if a is None or b is None else f"{a / b:.3f} ({a:.3g} -> {b:.3g})")
    print(f"| {w} | {cells[0]} | {cells[1]} |")
EOF
