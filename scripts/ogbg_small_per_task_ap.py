"""OGBG-small's validation AP per task along one reference NadamW run.

The diagnosis behind results/calibration/README.md: which of the generated
tasks make the mean AP move. Trains the registered OGBG-small with the
reference NadamW (warmup + cosine, or a constant LR) for the step budget,
evaluating every ``--every`` steps, and prints after each evaluation one
``PERTASK <eval> <AP per task>`` line (tasks in `synthetic.TASKS` order,
printed first), then the validation mAP curve.

  .venv/bin/python scripts/ogbg_small_per_task_ap.py --seed=1 --schedule=cosine
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from algoperf_avg.training import sharding  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--schedule", default="cosine", choices=("cosine", "constant"))
  parser.add_argument("--every", type=int, default=200, help="steps between evaluations")
  args = parser.parse_args()
  sharding.cpu_device_flags()
  import numpy as np

  from algoperf_avg import registry, targets
  from algoperf_avg.training import runner
  from workloads.ogbg import metrics, synthetic

  mean_ap = metrics.mean_average_precision
  calls = [0]

  def per_task_then_mean(logits, labels, mask):
    calls[0] += 1
    if calls[0] % 3 == 2:  # each evaluation scores eval_train, validation, test
      probs = metrics.sigmoid(np.asarray(logits, np.float32))
      known, labels_ = np.asarray(mask).astype(bool), np.asarray(labels)
      aps = []
      for task in range(labels_.shape[1]):
        y = labels_[known[:, task], task]
        both = np.any(y == 1) and np.any(y == 0)
        aps.append(metrics.average_precision(y, probs[known[:, task], task])
                   if both else float("nan"))
      print("PERTASK", calls[0] // 3 + 1, " ".join(f"{a:.2f}" for a in aps), flush=True)
    return mean_ap(logits, labels, mask)

  metrics.mean_average_precision = per_task_then_mean
  workload = registry.get_workload("ogbg", "small")
  row = targets.TARGETS[workload.workload_id]
  submission = registry.load_submission("nadamw")
  hparams = runner.resolve_hparams(workload, submission, {"schedule": args.schedule})
  print("TASKS", "|".join(synthetic.TASKS))
  result = runner.train_once(workload, submission, hparams, args.seed, None, None,
                             runner.RunOptions(stop_at_target=False, save_checkpoints=False,
                                               max_global_steps=row.step_budget,
                                               eval_every_steps=args.every))
  print("MAP", " ".join(f"{r['global_step']}:{r[f'validation/{row.metric}']:.4f}"
                        for r in result.eval_rows))


if __name__ == "__main__":
  main()
