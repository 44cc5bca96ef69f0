"""One OGBG-small run with its data, width or reference learning rate changed.

The exploration behind OGBG-small's calibration (results/calibration/README.md):
the reference NadamW for the whole step budget, warmup + cosine or a constant
learning rate, on a variant of the generated data or model, without touching
the registered workload. Appends the run's validation curve to a CSV:

  .venv/bin/python scripts/explore_ogbg_small.py --latent=128 --lr=0.012 \\
      --schedule=constant --out=results/calibration/ogbg_small_exploration.csv
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from algoperf_avg import registry  # noqa: E402
from algoperf_avg.training import sharding  # noqa: E402
from scripts import explore_small  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_train", type=int, default=3_600 * 128,
                      help="training graphs (3,600 x 128: one pass per run)")
  parser.add_argument("--label_noise", type=float, default=0.2,
                      help="fraction of training labels flipped")
  parser.add_argument("--graded", action="store_true",
                      help="graded labels (synthetic.Config.graded): drawn, not flipped")
  parser.add_argument("--eval_label_noise", type=float, default=None,
                      help="validation/test label_noise (default: the workload's)")
  parser.add_argument("--latent", type=int, default=128, help="GNN width")
  parser.add_argument("--message_passing_steps", type=int, default=3,
                      help="GNN message-passing steps (the full size has 5)")
  parser.add_argument("--lr", type=float, default=0.012, help="peak learning rate")
  parser.add_argument("--schedule", default="cosine", choices=("cosine", "constant"))
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default=os.path.join(
      ROOT, "results", "calibration", "ogbg_small_exploration.csv"))
  args = parser.parse_args()
  sharding.cpu_device_flags()
  from workloads.ogbg import synthetic
  from workloads.ogbg import workload as ogbg

  data = dataclasses.replace(ogbg.SMALL_DATA, num_train=args.num_train,
                             label_noise=args.label_noise, graded=args.graded)
  if args.eval_label_noise is not None:
    data = dataclasses.replace(data, eval_label_noise=args.eval_label_noise)
  ogbg.small_dataset = functools.lru_cache(maxsize=1)(lambda: synthetic.Dataset(data))
  hparams = dict(ogbg.SMALL.reference_hparams, learning_rate=args.lr)
  ogbg.OgbgWorkload.configs = dict(ogbg.OgbgWorkload.configs, small=dataclasses.replace(
      ogbg.SMALL, num_train_examples=args.num_train, latent_dim=args.latent,
      hidden_dims=(args.latent,), reference_hparams=hparams,
      num_message_passing_steps=args.message_passing_steps))
  workload = registry.get_workload("ogbg", "small")
  eval_rows = explore_small.train_reference(workload, args.schedule, args.seed)
  name = (f"train{args.num_train}_{'graded' if args.graded else 'noise'}{args.label_noise}_"
          f"{'' if args.eval_label_noise is None else f'eval{args.eval_label_noise}_'}width{args.latent}_"
          f"{'' if args.message_passing_steps == 3 else f'mp{args.message_passing_steps}_'}lr{args.lr}_"
          f"{args.schedule}_seed{args.seed}")
  print(name, explore_small.append_curve(args.out, name, workload, eval_rows))

if __name__ == "__main__":
  main()
