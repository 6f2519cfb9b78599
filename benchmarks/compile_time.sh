#!/usr/bin/env bash
# How long a user's program takes to compile: the README's first program
# (examples/quickstart/main.cpp: SequenceModel, Adam, fit) built the way the README builds it,
# one compiler line and none of dynrnn's CMake flags, several times, with the median wall and
# user seconds. With BASELINE, the same program is also built against another copy of the
# headers in the same run, the two alternating, and the ratio of the medians is printed.
#
#   benchmarks/compile_time.sh                                  # g++ -O3 -march=native -fopenmp, 3 rounds
#   ROUNDS=5 CXX=clang++ CXXFLAGS="-O2 -fopenmp" benchmarks/compile_time.sh
#   BASELINE=/path/to/other/dynrnn/include benchmarks/compile_time.sh
#
# PROGRAM names another source file to build instead. Objects go to
# $DYNRNN_BUILD_DIR/compile_time/ (default build/compile_time/); ccache is not used.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out=${DYNRNN_BUILD_DIR:-build}/compile_time
rounds=${ROUNDS:-3}
cxx=${CXX:-g++}
program=${PROGRAM:-examples/quickstart/main.cpp}
read -r -a flags <<< "${CXXFLAGS:--O3 -march=native -fopenmp}"
mkdir -p "$out"

includes=("$PWD/include")
if [[ -n ${BASELINE:-} ]]; then
  [[ -f $BASELINE/dynrnn/dynrnn.hpp ]] || { echo "compile_time.sh: BASELINE=$BASELINE has no dynrnn/dynrnn.hpp" >&2; exit 2; }
  includes+=("$BASELINE")
fi

echo "compile_time.sh: $cxx ${flags[*]} $program, $rounds rounds" >&2
: > "$out/times"
TIMEFORMAT="%R %U"  # bash's own timer: wall and user seconds
for ((round = 1; round <= rounds; ++round)); do
  for i in "${!includes[@]}"; do
    seconds=$( { time "$cxx" -std=c++17 "${flags[@]}" -I"${includes[$i]}" -I/usr/include/eigen3 -c "$program" \
                   -o "$out/program$i.o" 2>&3; } 3>&2 2>&1 )
    echo "$i $seconds" >> "$out/times"
    echo "compile_time.sh: round $round, headers $i: ${seconds%% *} s" >&2
  done
done

python3 - "$out/times" "$rounds" "${includes[@]}" <<'EOF'
import statistics, sys
path, rounds, includes = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
lines = [l.split() for l in open(path) if l.strip()]
wall = {i: statistics.median(float(l[1]) for l in lines if l[0] == str(i)) for i in range(len(includes))}
user = {i: statistics.median(float(l[2]) for l in lines if l[0] == str(i)) for i in range(len(includes))}
for i, inc in enumerate(includes):
    print(f"{inc}: median wall {wall[i]:.1f} s, user {user[i]:.1f} s")
if len(includes) == 2:
    print(f"this tree / BASELINE: wall {wall[0] / wall[1]:.3f}, user {user[0] / user[1]:.3f}")
EOF
