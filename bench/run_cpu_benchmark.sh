#!/usr/bin/env bash
# Run (or resume) the CPU benchmark in the background, pinned to CPU core 0 with one thread, so that the other
# core stays free and every run is timed under the same conditions. Restarting it resumes where it stopped.
#   bench/run_cpu_benchmark.sh [protocol]     (default: bench/protocols/beauty_cpu.yaml)
set -euo pipefail
cd "$(dirname "$0")/.."
protocol=${1:-bench/protocols/beauty_cpu.yaml}
name=$(basename "$protocol" .yaml)
mkdir -p bench/work
PYTHON=${PYTHON:-python}
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nohup taskset -c 0 "$PYTHON" bench/run_benchmark.py "$protocol" --threads 1 \
  > "bench/work/$name.runner.log" 2>&1 &
echo "started $name (pid $!); progress: bench/work/$name.runner.log, results: docs/results/$name.{json,md}"
