#!/usr/bin/env bash
# Writes results/ogbg_small/all_submissions/: NadamW vs NadamW+EMA, +LAWA, +SWA and
# Schedule-Free AdamW on OGBG-small, one seed each, whole budget (no early
# stop, evals every 200 steps so curves line up), then scores and plots.
# Five runs of the whole 3,200-step budget.
set -euo pipefail
cd "$(dirname "$0")/.."
exp=experiments/ogbg_small_all_submissions
out=results/ogbg_small/all_submissions
rm -rf "$exp"
mkdir -p "$out"
.venv/bin/algoperf-avg benchmark --workload=ogbg --size=small \
  --submissions=nadamw,nadamw_ema,nadamw_lawa,nadamw_swa,schedule_free_adamw \
  --experiment_dir="$exp" --nostop_at_target --eval_every_steps=200 | tee "$out/benchmark.txt"
.venv/bin/algoperf-avg score "$exp" --reference=nadamw --steps --out="$out/scores_steps.csv" | tee "$out/scores_steps.txt"
.venv/bin/algoperf-avg score "$exp" --reference=nadamw --out="$out/scores_seconds.csv" | tee "$out/scores_seconds.txt"
.venv/bin/algoperf-avg plot "$exp" --reference=nadamw --steps --out="$out"
