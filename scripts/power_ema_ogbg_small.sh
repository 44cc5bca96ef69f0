#!/usr/bin/env bash
# OGBG-small: one NadamW run keeping two power EMAs (gamma 6.94, 16.97: sigma_rel
# 0.10, 0.05) every 50 steps, with two online power EMAs (sigma_rel 0.07 and
# 0.15, neither stored) evaluated alongside (--sweep_averages: what
# nadamw_power_ema logs online, same trajectory) -> post-hoc synthesis of 5
# widths -> steps to target per width. Writes results/power_ema/.
# Usage: scripts/power_ema_ogbg_small.sh [EXP_DIR]
set -euo pipefail
EXP=${1:-/tmp/power_ema_ogbg_small}
PY=${PYTHON:-python}
OUT=results/power_ema
mkdir -p "$OUT" "$EXP"
G07=$($PY -c "from algoperf_avg import averaging; print(repr(averaging.sigma_rel_to_gamma(0.07)))")
G15=$($PY -c "from algoperf_avg import averaging; print(repr(averaging.sigma_rel_to_gamma(0.15)))")
$PY -m algoperf_avg.cli run --workload=ogbg --size=small --submission=nadamw --rng_seed=0 \
  --nostop_at_target --posthoc_grid=powerema:50:6.94,powerema:50:16.97 \
  --sweep_averages="powerema:1:$G07,powerema:1:$G15" --experiment_dir="$EXP/run/snapshots"
TRIAL="$EXP/run/snapshots/study_0/ogbg_small_jax/trial_1"
$PY -m algoperf_avg.cli posthoc "$TRIAL" --ema_sigma_rel=0.05,0.07,0.1,0.15,0.2 \
  --out="$EXP/posthoc" | tee "$OUT/posthoc_fit.txt"
du -sk "$TRIAL/params" "$TRIAL/power_ema"/* | tee "$OUT/snapshot_disk_kib.txt"
$PY scripts/power_ema_table.py "$EXP" "$G07" "$G15" > "$OUT/ogbg_small_steps_to_target.csv"
cat "$OUT/ogbg_small_steps_to_target.csv"
