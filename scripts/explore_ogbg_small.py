"""One OGBG-small run with its data, width or reference learning rate changed.

The exploration behind OGBG-small's calibration (results/calibration/README.md):
the reference NadamW for the whole step budget, warmup + cosine or a constant
learning rate, on a variant of the generated data or model, without touching
the registered workload. Appends the run's validation curve to a CSV:

  .venv/bin/python scripts/explore_ogbg_small.py --lr=0.012 --schedule=constant

(every option defaults to the registered small workload's value).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from algoperf_avg import registry, targets  # noqa: E402
from algoperf_avg.training import sharding  # noqa: E402
from scripts import explore_small  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=None,
                      help="step budget and cosine length (default: the target row's)")
  parser.add_argument("--num_train", type=int, default=None,
                      help="training graphs (default: steps x 128, one pass per run)")
  parser.add_argument("--label_model", default=None, choices=("flip", "graded", "logistic"),
                      help="how labels are made (synthetic.Config.label_model; "
                      "default: the workload's)")
  parser.add_argument("--label_noise", type=float, default=None,
                      help="training labels' noise (synthetic.Config.label_noise; "
                      "default: the workload's)")
  parser.add_argument("--eval_label_noise", type=float, default=None,
                      help="validation/test label_noise (default: the workload's)")
  parser.add_argument("--latent", type=int, default=None, help="GNN width")
  parser.add_argument("--message_passing_steps", type=int, default=None,
                      help="GNN message-passing steps (the full size has 5)")
  parser.add_argument("--lr", type=float, default=None, help="peak learning rate")
  parser.add_argument("--schedule", default="cosine", choices=("cosine", "constant"))
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default=os.path.join(
      ROOT, "results", "calibration", "ogbg_small_exploration.csv"))
  args = parser.parse_args()
  sharding.cpu_device_flags()
  from workloads.ogbg import synthetic
  from workloads.ogbg import workload as ogbg

  row = targets.TARGETS["ogbg_small"]
  small, data = ogbg.SMALL, ogbg.SMALL_DATA
  steps = args.steps or row.step_hint
  num_train = args.num_train or steps * small.train_batch_size
  if num_train % data.block_size:
    parser.error(f"num_train {num_train} (steps x {small.train_batch_size} by default) must "
                 f"be a multiple of the generator's block of {data.block_size} graphs")
  changes = {k: v for k, v in (("label_model", args.label_model),
                               ("label_noise", args.label_noise),
                               ("eval_label_noise", args.eval_label_noise)) if v is not None}
  data = dataclasses.replace(data, num_train=num_train, **changes)
  latent = args.latent or small.latent_dim
  mp_steps = args.message_passing_steps or small.num_message_passing_steps
  lr = args.lr or small.reference_hparams["learning_rate"]
  ogbg.small_dataset = functools.lru_cache(maxsize=1)(lambda: synthetic.Dataset(data))
  ogbg.OgbgWorkload.configs = dict(ogbg.OgbgWorkload.configs, small=dataclasses.replace(
      small, num_train_examples=num_train, latent_dim=latent, hidden_dims=(latent,),
      reference_hparams=dict(small.reference_hparams, learning_rate=lr),
      num_message_passing_steps=mp_steps))
  targets.TARGETS["ogbg_small"] = dataclasses.replace(row, step_hint=steps, step_budget=steps)
  workload = registry.get_workload("ogbg", "small")
  eval_rows = explore_small.train_reference(workload, args.schedule, args.seed)
  labels = {"flip": "noise", "graded": "graded", "logistic": "logistic"}[data.label_model]
  evaluated = "" if args.eval_label_noise is None else f"eval{args.eval_label_noise}_"
  mp = "" if mp_steps == 3 else f"mp{mp_steps}_"
  name = (f"train{num_train}_{labels}{data.label_noise}_{evaluated}width{latent}_{mp}"
          f"lr{lr}_{args.schedule}_seed{args.seed}")
  print(name, explore_small.append_curve(args.out, name, workload, eval_rows))


if __name__ == "__main__":
  main()
