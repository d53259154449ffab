#!/usr/bin/env bash
# Benchmark runs on a lent GPU machine that outlive one command (docs/results/README.md, "GPU sessions").
#
# A command on the device machine may run 10 minutes, and only files under $OUT come back, at most 16 MiB each:
# a paper-size checkpoint with its optimizer state does not fit. So the runners are started once, detached
# (setsid), and keep training while the machine stays warm between commands; every later command only watches
# them and copies the small outputs (each run's result JSON and log, the summaries) to $OUT every 30 seconds,
# so whatever a command had gathered when it ended comes back. A run that is still training when the machine
# goes back is lost and is reported as unfinished, never as a result.
#
#   bench/gpu_session.sh start SECONDS PROTOCOL:JOBS:RUN[,RUN...][:SEED[,SEED...]] [PROTOCOL:JOBS:RUN...]
#   (SEEDS, when given, picks those seeds of the runs; one protocol may appear in several specs)
#   bench/gpu_session.sh watch SECONDS     (returns early once every runner has ended)
#
# ``start`` installs the wheels carried in .whl (RecBole and the few packages the machine lacks), copies the
# carried converted datasets (bench/work/dataset) to bench/work/gpu/runs/dataset, starts CUDA MPS when the machine has it
# (small kernels of concurrent runs then share the GPU instead of time-slicing), starts one detached
# ``bench.run_benchmark`` per protocol with its own --jobs and --only, then watches for SECONDS.
# Carry: .whl and bench/work/dataset, and bench/work/<protocol> to skip the runs finished in an earlier session
# (their result JSONs are copied in; a run with a log but no result starts again from epoch 0). The machine goes back 30 s after a command ends, so the next ``watch`` must
# follow at once.
set -u
# Inside the repository (ignored, never carried, so kept between commands): the runner records every path relative
# to the repository root, and the summaries hold no path of the device machine.
W=bench/work/gpu
OUT=${OUT:-$W/out}
mode=$1; seconds=$2; shift 2

gather() {
    mkdir -p "$OUT"
    # The runner's own summary, rewritten from what is in the work folders: finished runs with their metrics,
    # unfinished ones with their epochs and best validation score, crashed ones with their error.
    while read -r name protocol; do
        python3 -m bench.run_benchmark "$protocol" --summary-only --work $W/runs/$name --out $W/summaries \
            >/dev/null 2>&1
    done < $W/protocols
    (cd $W && tar czf "$OUT/state.tgz.part" --exclude='*.pth' --exclude=dataset runs summaries 2>/dev/null) \
        && mv "$OUT/state.tgz.part" "$OUT/state.tgz"
    {
        date -u +%FT%TZ
        nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null
        for summary in $W/summaries/*.md; do
            [ -f "$summary" ] || continue
            echo "$(basename "$summary" .md):"
            grep -E '^\| [^|]+ \| [0-9]+ \| test \||not finished' "$summary" | cut -c1-240
        done
    } > "$OUT/progress.txt"
}

if [ "$mode" = start ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
    # RecBole's quick_start imports ray at the top; where the machine lacks it, an empty stand-in does (the
    # benchmarks never tune with Ray, and the real wheel is far over the carry limit).
    if ! python3 -c "import ray" 2>/dev/null; then
        mkdir -p /tmp/site/ray && printf 'from . import tune\n' > /tmp/site/ray/__init__.py && touch /tmp/site/ray/tune.py
        echo "ray missing: an empty stand-in is used"
    fi
    # the runners find their data folder next to their work folders
    mkdir -p $W/runs $W/summaries && cp -r bench/work/dataset $W/runs/dataset && : > $W/protocols
    if command -v nvidia-cuda-mps-control >/dev/null && nvidia-cuda-mps-control -d 2>/dev/null; then
        sleep 2
        if python3 -c "import torch; torch.zeros(1, device='cuda'); print('MPS client ok')"; then
            echo "CUDA MPS on"
        else
            echo quit | nvidia-cuda-mps-control; echo "CUDA MPS failed its check; off"
        fi
    else
        echo "CUDA MPS not available; runs time-slice the GPU"
    fi
    python3 -c "import torch, numpy, recbole, recbole_diffureason; print('torch', torch.__version__, 'numpy', numpy.__version__, 'recbole', recbole.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')" || exit 1
    i=0
    for spec in "$@"; do
        IFS=: read -r protocol jobs runs seeds <<< "$spec"
        name=$(basename "$protocol" .yaml); i=$((i + 1))
        # finished runs carried in (bench/work/<protocol>) are skipped by the runner, not repeated
        mkdir -p $W/runs/$name
        grep -qx "$name $protocol" $W/protocols || echo "$name $protocol" >> $W/protocols
        [ -d "bench/work/$name" ] && cp bench/work/$name/*.json $W/runs/$name/ 2>/dev/null
        setsid nohup python3 -m bench.run_benchmark "$protocol" --jobs "$jobs" --threads "$jobs" \
            --only ${runs//,/ } ${seeds:+--seeds ${seeds//,/ }} --work $W/runs/$name --out $W/summaries \
            > $W/runner-$i-$name.log 2>&1 < /dev/null &
        echo "started $name: jobs $jobs, runs ${runs//,/ }${seeds:+, seeds ${seeds//,/ }}"
    done
fi

# Watch until SECONDS have passed or no runner is left (the bracket keeps pgrep from matching a command line
# that merely quotes the pattern, such as the one that started this script).
end=$(( $(date +%s) + seconds ))
while [ "$(date +%s)" -lt "$end" ]; do
    gather
    [ "$mode" = start ] || pgrep -f "bench[.]run_benchmark" >/dev/null || break
    sleep 30
done
gather
cat "$OUT/progress.txt"
tail -n 3 $W/runner-*.log
