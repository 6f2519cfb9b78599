#!/usr/bin/env bash
# Builds and runs dynrnn's benchmarks and its peers' in one go, then prints one table:
# workload x system x threads, with ms per step (median), GFLOP/s, the time relative to
# dynrnn and the share of the machine's GEMM peak.
#
#   benchmarks/compare.sh                 # 5 repetitions of everything (about 10 minutes)
#   REPETITIONS=3 FILTER=S benchmarks/compare.sh
#
# Peers run when they are installed: oneDNN (libdnnl-dev, built as a benchmark) and
# PyTorch (Debian's python3-torch, for /usr/bin/python3). Results and the table go to
# $DYNRNN_BUILD_DIR/compare/ (default build/compare/).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build=${DYNRNN_BUILD_DIR:-build}
reps=${REPETITIONS:-5}
filter=${FILTER:-}
out=$build/compare
mkdir -p "$out"

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
targets=(dynrnn_benchmarks gemm_peak_benchmarks)
# The oneDNN peer is built only when oneDNN is usable (cmake/dynrnnOptionalDependencies.cmake).
if cmake --build "$build" --target help | grep -q onednn_lstm_benchmarks; then
  targets+=(onednn_lstm_benchmarks onednn_accuracy)
fi
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}"

gbench=(--benchmark_repetitions="$reps" --benchmark_report_aggregates_only=true --benchmark_out_format=json)
run() {  # name binary [filter]
  echo "compare.sh: running $1" >&2
  "$2" "${gbench[@]}" --benchmark_out="$out/$1.json" ${3:+--benchmark_filter="$3"} >/dev/null
}

"$build/benchmarks/dynrnn_benchmarks" --workloads-json > "$out/workloads.jsonl"
if [ -n "$filter" ]; then
  grep "\"name\": \"$filter\"" "$out/workloads.jsonl" > "$out/workloads.tmp" && mv "$out/workloads.tmp" "$out/workloads.jsonl"
fi
run gemm "$build/benchmarks/gemm_peak_benchmarks" "/2048/"
run dynrnn "$build/benchmarks/dynrnn_benchmarks" "${filter:+/$filter/}"
rm -f "$out/onednn.json" "$out/pytorch.jsonl"
if [ -x "$build/benchmarks/onednn_lstm_benchmarks" ]; then
  run onednn "$build/benchmarks/onednn_lstm_benchmarks" "${filter:+/$filter/}"
fi
if /usr/bin/python3 -c "import torch" 2>/dev/null; then
  echo "compare.sh: running pytorch" >&2
  /usr/bin/python3 benchmarks/peers/pytorch_lstm.py "$out/workloads.jsonl" --repetitions "$reps" > "$out/pytorch.jsonl"
else
  echo "compare.sh: PyTorch not importable by /usr/bin/python3 (apt-get install python3-torch); skipped" >&2
fi

{
  echo "Run on $(date -u +%Y-%m-%d), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores."
  echo "dynrnn $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(c++ --version | head -1), Eigen $(dpkg-query -W -f='${Version}' libeigen3-dev 2>/dev/null), oneDNN $(dpkg-query -W -f='${Version}' libdnnl-dev 2>/dev/null || echo '-'), PyTorch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)' 2>/dev/null || echo '-')."
  echo
  python3 benchmarks/compare.py "$out"
  if [ -x "$build/benchmarks/onednn_accuracy" ]; then
    echo
    echo "bfloat16 and int8 against float32 (relative Frobenius difference), each system on the same inputs:"
    echo
    "$build/benchmarks/onednn_accuracy" ${filter:+"$filter"}
  fi
} | tee "$out/table.md"
