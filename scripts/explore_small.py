"""One small-variant run with its generated data, hyperparameters or budget changed.

The exploration behind a small variant's calibration (results/calibration/
README.md), for any registered workload (``--data`` only for those whose
size config holds their generated data's config, `DATA_FIELDS`): the
reference NadamW for the whole step budget, warmup + cosine or a constant
learning rate, without touching the registered workload. Appends the run's validation curve to a CSV:

  .venv/bin/python scripts/explore_small.py --workload=fastmri --hp=learning_rate=0.03 \\
      --schedule=constant --step_hint=2000

(OGBG's and Criteo's data options: scripts/explore_ogbg_small.py,
scripts/explore_criteo1tb_small.py.)
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from algoperf_avg import registry, targets  # noqa: E402
from algoperf_avg.training import logs, runner, sharding  # noqa: E402

# The size-config field that holds a workload's generated-data config.
DATA_FIELDS = {"imagenet_vit": "synthetic", "imagenet_resnet": "synthetic",
               "fastmri": "generated"}


def _pairs(text: str) -> dict[str, float | int]:
  """``a=1,b=0.5`` -> {"a": 1, "b": 0.5}."""
  out = {}
  for part in filter(None, text.split(",")):
    key, value = part.split("=")
    out[key] = float(value) if any(c in value for c in ".e") else int(value)
  return out


def train_reference(workload, schedule: str, seed: int, **hparams) -> list[dict]:
  """The eval rows of the reference NadamW over the whole step budget (no early stop)."""
  row = targets.TARGETS[workload.workload_id]
  sub = registry.load_submission("nadamw")
  hp = runner.resolve_hparams(workload, sub, {"schedule": schedule, **hparams})
  result = runner.train_once(workload, sub, hp, seed, None, None, runner.RunOptions(
      stop_at_target=False, save_checkpoints=False, max_global_steps=row.step_budget,
      eval_every_steps=row.eval_every_steps))
  return result.eval_rows


def append_curve(out: str, name: str, workload, eval_rows: list[dict], **columns) -> str:
  """Writes run ``name``'s validation curve into the CSV ``out`` (replacing an
  earlier run of that name), with constant ``columns``; returns it as text."""
  metric = f"validation/{workload.target_metric_name}"
  old = []
  if os.path.exists(out):
    with open(out, newline="") as f:
      old = [r for r in csv.DictReader(f) if r["run"] != name]
  new = [{"run": name, "global_step": r["global_step"], metric: r[metric], **columns}
         for r in eval_rows]
  logs.atomic_write_text(out, logs.format_csv(old + new))
  return " ".join(f"{r['global_step']}:{r[metric]:.4f}" for r in eval_rows)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workload", required=True)
  parser.add_argument("--data", default="", help="fields of the generated data's config, "
                      "e.g. class_colour_rate=1.0,max_distractors=0")
  parser.add_argument("--hp", default="", help="reference hyperparameters, "
                      "e.g. learning_rate=0.03")
  parser.add_argument("--step_hint", type=int, default=None,
                      help="budget and cosine length in steps (default: the target row's)")
  parser.add_argument("--schedule", default="cosine", choices=("cosine", "constant"))
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  sharding.cpu_device_flags()
  cls = registry.workload_class(args.workload)
  small = cls.configs["small"]
  data_changes, hp_changes = _pairs(args.data), _pairs(args.hp)
  changes = {"reference_hparams": dict(small.reference_hparams, **hp_changes)}
  if data_changes:
    if args.workload not in DATA_FIELDS:
      raise SystemExit(f"--data: {args.workload}'s small config holds no generated-data "
                       f"config; choose from {sorted(DATA_FIELDS)}")
    field = DATA_FIELDS[args.workload]
    changes[field] = dataclasses.replace(getattr(small, field), **data_changes)
  cls.configs = dict(cls.configs, small=dataclasses.replace(small, **changes))
  workload = registry.get_workload(args.workload, "small")
  row = targets.TARGETS[workload.workload_id]
  if args.step_hint:
    row = dataclasses.replace(row, step_hint=args.step_hint, step_budget=args.step_hint)
    targets.TARGETS[workload.workload_id] = row
  eval_rows = train_reference(workload, args.schedule, args.seed)
  name = "_".join([f"{k}{v}" for k, v in {**data_changes, **hp_changes}.items()]
                  + [f"steps{row.step_budget}", args.schedule, f"seed{args.seed}"])
  out = args.out or os.path.join(ROOT, "results", "calibration",
                                 f"{workload.workload_id}_exploration.csv")
  print(name, append_curve(out, name, workload, eval_rows))


if __name__ == "__main__":
  main()
