"""One criteo1tb-small run with its generated data or reference learning rate changed.

The exploration behind criteo1tb-small's calibration (results/calibration/
README.md): the reference NadamW for the whole step budget, warmup + cosine or
a constant learning rate, on a variant of the generated click logs, without
touching the registered workload. Appends the run's validation curve to a CSV:

  .venv/bin/python scripts/explore_criteo1tb_small.py --max_cardinality=20 \\
      --lr=0.03 --schedule=constant
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from algoperf_avg import registry  # noqa: E402
from algoperf_avg.training import sharding  # noqa: E402
from scripts import explore_small  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--max_cardinality", type=int, default=20,
                      help="values per categorical column at most (synthetic.Config)")
  parser.add_argument("--lr", type=float, default=0.03, help="peak learning rate")
  parser.add_argument("--schedule", default="cosine", choices=("cosine", "constant"))
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default=os.path.join(
      ROOT, "results", "calibration", "criteo1tb_small_exploration.csv"))
  args = parser.parse_args()
  sharding.cpu_device_flags()
  from workloads.criteo1tb import prepare
  from workloads.criteo1tb import workload as criteo

  data = dataclasses.replace(criteo.SMALL_DATA, max_cardinality=args.max_cardinality)
  build = criteo.small_data_dir
  criteo.small_data_dir = lambda data_config=data: build(data_config)
  workload = registry.get_workload("criteo1tb", "small")
  eval_rows = explore_small.train_reference(workload, args.schedule, args.seed,
                                            learning_rate=args.lr)
  generator = prepare.read_manifest(criteo.small_data_dir())["generator"]
  name = f"card{args.max_cardinality}_lr{args.lr}_{args.schedule}_seed{args.seed}"
  curve = explore_small.append_curve(
      args.out, name, workload, eval_rows,
      planted_model_loss=generator["validation_bayes_loss"],
      click_rate_loss=generator["validation_prior_loss"])
  print(name, f"floor {generator['validation_bayes_loss']:.4f}", curve)

if __name__ == "__main__":
  main()
