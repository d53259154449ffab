#!/usr/bin/env bash
# Rebuild docs/results/beauty_comparison.{json,md}: every finished model of the CPU protocol's settings in one
# table, from the summaries of beauty_cpu (CPU) and beauty_gpu_baselines (GPU). Trains nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
"${PYTHON:-python}" -m bench.compare_results docs/results/beauty_cpu.json docs/results/beauty_gpu_baselines.json \
  --name beauty_comparison --title "Beauty, CPU protocol settings: every model" \
  --notes bench/protocols/beauty_comparison.notes.md \
  --description "Beauty (22,363 users, 12,101 items, 5-core), chronological leave-one-out, history 20, full ranking; \
the settings of bench/protocols/beauty_cpu.yaml for every row (hidden 64, 2 heads, inner 256, dropout 0.5, CE, \
batch 2048, lr 1e-3, up to 50 epochs, patience 5 on valid NDCG@10; LARES up to 50 epochs per stage). beauty_cpu ran \
on one pinned CPU core, beauty_gpu_baselines on an H100 (too slow on this CPU); each row's change is against the \
SASRec of its own summary (the Baselines line below, read from the summaries). DiffuReasonSASRec is the paper's configuration; \
DiffuReasonSASRec-condres-aux adds two named deviations (denoiser_output=cond_residual with zero init, \
backbone_rec_weight=1) chosen on validation in the GPU sweeps. No gradient clipping in any row. One seed per row. \
Time columns: see each source summary, beauty_gpu_timing and beauty_cpu_timing."
