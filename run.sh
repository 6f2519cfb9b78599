#!/usr/bin/env bash
# dynrnn's one entry point for people and CI. It installs the Debian packages the build
# needs (apt-get, with sudo when not root), configures a Release build in ./build, then:
#
#   ./run.sh example [count_ones flags]   build and train the count-ones example
#   ./run.sh char_model [flags]           build and train the character model on a word list
#   ./run.sh adding_problem [flags]       build and train an LSTM on the adding problem
#   ./run.sh distributed [N] [flags]      train count-ones data-parallel on N local processes (MPI; N=2)
#   ./run.sh test                         build everything and run every test (ctest)
#   ./run.sh bench [benchmark flags]      build and run the benchmarks
#   ./run.sh deps [package...]            only install the packages (and any named ones)
#
# Environment: DYNRNN_BUILD_DIR (default build), CXX (compiler), JOBS (default nproc).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage
mode=$1
shift

packages=(cmake make g++ libeigen3-dev libgtest-dev libbenchmark-dev libcli11-dev nlohmann-json3-dev wamerican)
case "${CXX:-}" in *clang*) packages+=(clang libomp-dev) ;; esac  # OpenMP for clang++
case "$mode" in test | distributed) packages+=(libopenmpi-dev openmpi-bin) ;; esac  # data parallelism
[ "$mode" = deps ] && packages+=("$@")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "run.sh: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

build=${DYNRNN_BUILD_DIR:-build}
jobs=${JOBS:-$(nproc)}
configure() { cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release "$@"; }

case "$mode" in
  example)
    configure
    cmake --build "$build" -j "$jobs" --target count_ones
    exec "$build/examples/count_ones/count_ones" --csv "$build/count_ones_loss.csv" \
      --checkpoint "$build/count_ones.safetensors" "$@"
    ;;
  char_model)
    configure
    cmake --build "$build" -j "$jobs" --target char_model
    exec "$build/examples/char_model/char_model" --checkpoint "$build/char_model.safetensors" "$@"
    ;;
  adding_problem)
    configure
    cmake --build "$build" -j "$jobs" --target adding_problem
    exec "$build/examples/adding_problem/adding_problem" --checkpoint "$build/adding_problem.safetensors" \
      --csv "$build/adding_problem_loss.csv" "$@"
    ;;
  distributed)
    ranks=2
    if [ $# -ge 1 ] && [[ $1 =~ ^[0-9]+$ ]]; then ranks=$1; shift; fi
    configure
    cmake --build "$build" -j "$jobs" --target count_ones
    # One thread per rank unless the cores leave more; mpirun refuses root unless told, and
    # --oversubscribe lets N exceed the cores (for trying it on a small machine).
    threads=$(( $(nproc) / ranks )); [ "$threads" -ge 1 ] || threads=1
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$threads}
    [ "$(id -u)" -ne 0 ] || export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    exec mpirun -np "$ranks" --oversubscribe --bind-to none -x OMP_NUM_THREADS \
      "$build/examples/count_ones/count_ones" --csv "$build/count_ones_loss.csv" \
      --checkpoint "$build/count_ones.safetensors" "$@"
    ;;
  test)
    configure -DDYNRNN_WERROR=ON
    cmake --build "$build" -j "$jobs"
    ctest --test-dir "$build" --output-on-failure -j "$jobs"
    ;;
  bench)
    configure
    cmake --build "$build" -j "$jobs" --target dynrnn_benchmarks
    exec "$build/benchmarks/dynrnn_benchmarks" "$@"
    ;;
  deps) ;;
  *) usage ;;
esac
