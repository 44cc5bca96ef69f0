"""Calibrate a small variant's target: what tuned NadamW reaches at 75% of budget.

Trains the workload's reference NadamW for the whole budget (no early stop),
several seeds, and reports the validation metric of the last evaluation at or
before 75% of the budget. The median over seeds becomes the small variant's
validation target in algoperf_avg/targets.py (the test target likewise).

  .venv/bin/python scripts/calibrate_small.py --workload=ogbg --seeds=0,1,2
writes results/calibration/<workload_id>.csv (one row per seed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from algoperf_avg import registry  # noqa: E402
from algoperf_avg.training import logs, runner, sharding  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workload", default="ogbg")
  parser.add_argument("--size", default="small")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--fraction", type=float, default=0.75)
  parser.add_argument("--out", default=os.path.join(ROOT, "results", "calibration"))
  args = parser.parse_args()
  workload = registry.get_workload(args.workload, args.size)
  sub = registry.load_submission("nadamw")
  metric = workload.target_metric_name
  rows = []
  for seed in (int(s) for s in args.seeds.split(",")):
    hp = runner.resolve_hparams(workload, sub, {})
    result = runner.train_once(workload, sub, hp, seed, None, None, runner.RunOptions(
        stop_at_target=False, save_checkpoints=False))
    cutoff = args.fraction * workload.max_allowed_runtime_sec
    before = [r for r in result.eval_rows if r["score"] <= cutoff]
    at = before[-1]
    final = result.eval_rows[-1]
    rows.append({
        "seed": seed, "steps_at_fraction": at["global_step"], "score_at_fraction": at["score"],
        f"validation/{metric}_at_fraction": at[f"validation/{metric}"],
        f"test/{metric}_at_fraction": at.get(f"test/{metric}"),
        "final_steps": final["global_step"], f"final_validation/{metric}": final[f"validation/{metric}"],
        "devices": len(sharding.make_mesh().devices),
    })
    print(rows[-1], flush=True)
  val = statistics.median(r[f"validation/{metric}_at_fraction"] for r in rows)
  test = statistics.median(r[f"test/{metric}_at_fraction"] for r in rows)
  print(f"{workload.workload_id}: median at {args.fraction:.0%} of budget: "
        f"validation {val:.4f}, test {test:.4f}")
  os.makedirs(args.out, exist_ok=True)
  logs.atomic_write_text(os.path.join(args.out, f"{workload.workload_id}.csv"),
                         logs.format_csv(rows))


if __name__ == "__main__":
  sharding.cpu_device_flags()
  main()
