#!/usr/bin/env bash
# The speed a user's program gets with and without -march: builds the benchmarks twice the
# way a user builds a program (one g++ line, none of dynrnn's CMake flags), once for this CPU
# and once for any x86-64, as a CMake project that links dynrnn::dynrnn and sets no flags
# gets, runs the two builds in turn, and prints each row's medians and their ratio.
#
#   benchmarks/flags.sh                                   # float32, bfloat16, int8 at M and L
#   ROUNDS=5 FILTER='^dynrnn/train/M/threads:1/' benchmarks/flags.sh
#   NATIVE="-O3 -march=native -fopenmp" PLAIN="-O2 -fopenmp" benchmarks/flags.sh
#
# Each round runs the native build, then the plain one; a row's figure is the median over
# the rounds, and the ratio is plain over native (1: the plain build is as fast). Output goes
# to $DYNRNN_BUILD_DIR/flags/ (default build/flags/).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out=${DYNRNN_BUILD_DIR:-build}/flags
rounds=${ROUNDS:-3}
cxx=${CXX:-g++}
filter=${FILTER:-'^dynrnn(-bf16|-int8)?/(forward|train)/(M|L)/threads:1/'}
read -r -a native <<< "${NATIVE:--O3 -march=native -fopenmp}"
read -r -a plain <<< "${PLAIN:--O2 -fopenmp}"
mkdir -p "$out"

compile() {  # compile NAME FLAGS...
  local name=$1
  shift
  echo "flags.sh: $name: $cxx $* benchmarks/bench_lstm.cpp" >&2
  "$cxx" -std=c++17 "$@" -Iinclude -I/usr/include/eigen3 benchmarks/bench_lstm.cpp \
    -o "$out/bench_$name" -lbenchmark -lpthread
}
compile native "${native[@]}"
compile plain "${plain[@]}"

for ((round = 1; round <= rounds; ++round)); do
  for build in native plain; do
    echo "flags.sh: round $round of $rounds, $build" >&2
    "$out/bench_$build" --benchmark_filter="$filter" --benchmark_format=json \
      --benchmark_out_format=json --benchmark_out="$out/$build.$round.json" >/dev/null
  done
done

python3 - "$out" "$rounds" "${native[*]}" "${plain[*]}" <<'EOF'
import json, statistics, sys
out, rounds, native_flags, plain_flags = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
times = {}
for build in ("native", "plain"):
    for r in range(1, rounds + 1):
        for b in json.load(open(f"{out}/{build}.{r}.json"))["benchmarks"]:
            times.setdefault((b["run_name"], build), []).append(b["real_time"])
names = sorted({name for name, _ in times}, key=lambda n: n.split("/")[2:] + n.split("/")[:2])
print(f"medians of {rounds} rounds, ms; plain ({plain_flags}) over native ({native_flags})\n")
print("| benchmark | native | plain | plain / native |")
print("|---|---|---|---|")
for name in names:
    n, p = (statistics.median(times.get((name, b), [float("nan")])) for b in ("native", "plain"))
    print(f"| {name.removesuffix('/real_time')} | {n:.3g} | {p:.3g} | {p / n:.2f} |")
EOF
