#!/usr/bin/env bash
# Run (or resume) a CPU benchmark in the background, pinned to one CPU core with one thread, so that every
# run is timed under the same conditions. Restarting it resumes where it stopped.
#   bench/run_cpu_benchmark.sh [protocol] [core] [runner options, e.g. --only NAME ...]
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
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nohup taskset -c "$core" "$PYTHON" bench/run_benchmark.py "$protocol" --threads 1 "$@" \
  > "$log" 2>&1 &
echo "started $name on core $core (pid $!); progress: $log, results: docs/results/$name.{json,md}"
