#!/usr/bin/env bash
# Run (or resume) a CPU benchmark in the background, pinned to one CPU core with one thread, so that every
# run is timed under the same conditions. Restarting it resumes where it stopped.
#   bench/run_cpu_benchmark.sh [protocol] [core] [runner options, e.g. --only NAME ... --source-root DIR]
# The first run converts the dataset from the protocol's source file under --source-root DIR (or
# $RECBOLE_DR_SOURCE_ROOT); later runs need neither. Relative paths are taken from the repository root.
# Two runners on two cores may share one protocol if their --only lists do not overlap.
set -euo pipefail
cd "$(dirname "$0")/.."
protocol=${1:-bench/protocols/beauty_cpu.yaml}
core=${2:-0}
shift $(( $# > 2 ? 2 : $# ))
name=$(basename "$protocol" .yaml)
mkdir -p bench/work
PYTHON=${PYTHON:-python}
log="bench/work/$name.core$core.runner.log"
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nohup taskset -c "$core" "$PYTHON" -m bench.run_benchmark "$protocol" --threads 1 "$@" \
  > "$log" 2>&1 &
echo "started $name on core $core (pid $!); progress: $log, results: docs/results/$name.{json,md}"
