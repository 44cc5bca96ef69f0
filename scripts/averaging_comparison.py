"""NadamW vs NadamW+LAWA vs NadamW+EMA on a small variant, the paper's way.

1. Sweep (one seed): the reference NadamW trains for the whole step budget
   while LAWA (window L) and EMA (decay beta) are evaluated alongside it for
   every nu in --nus (`--sweep_averages`: each average logged exactly as the
   online submission would log it, from one training run).
2. For each method, the nu with the fewest steps to the target is fixed
   (ties: the higher best validation value, then the smaller nu).
3. Every seed: NadamW with the two fixed averages alongside; steps to target
   per method and its ratio to NadamW's.

  .venv/bin/python scripts/averaging_comparison.py --workload=ogbg [--jobs=2] [--reuse]

(--jobs: the seeds after the sweep train side by side, one process each;
--reuse: runs that completed in experiments/ with the same hyperparameters are
read back, so an interrupted comparison goes on where it stopped.)
writes results/<workload>_small/ (with --bn_policy=latest|recompute, for
batch-norm models: results/<workload>_small/bn_<policy>/): sweep.csv,
comparison.csv (per seed), summary.csv (median ratios beside the paper's),
curves.csv + curves.png (validation metric vs step: averaged solid, online
dashed). Run logs go to experiments/<workload>_small_comparison[_bn_<policy>]/
(not committed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from algoperf_avg import registry  # noqa: E402
from algoperf_avg.averaging.snapshots import GridPoint  # noqa: E402
from algoperf_avg.training import logs, runner, sharding  # noqa: E402

# Steps-to-target ratios to NadamW at full scale, Ajroldi, Orvieto & Geiping,
# "When, Where and Why to Average Weights?" (ICML 2025), as quoted in this
# project's issues: (LAWA, EMA).
PAPER_RATIOS = {
    "criteo1tb": (0.79, 0.80), "fastmri": (0.72, 0.73), "imagenet_vit": (0.85, 0.80),
    "wmt": (0.71, 0.73), "librispeech_conformer": (0.87, 0.86),
    "librispeech_deepspeech": (0.89, 0.85),
}


def steps_to_target(workload, rows, key: str) -> int | None:
  for r in rows:
    if workload.targets.reached(r.get(key)):
      return int(r["global_step"])
  return None


def train(workload, seed: int, points, exp: str, bn_policy: str | None = None,
          reuse: bool = False):
  """NadamW on ``seed`` with ``points`` averaged alongside: (its eval rows,
  {point: the average's eval rows}). With ``reuse``, a completed run of the
  same hyperparameters already in ``exp`` (every point included) is read."""
  sub = registry.load_submission("nadamw")
  hp = runner.resolve_hparams(workload, sub, {"bn_policy": bn_policy} if bn_policy else {})
  log_dir = logs.trial_dir(os.path.join(exp, f"seed{seed}", "nadamw"), 0,
                           workload.workload_id, 1)
  sweep_dir = os.path.join(exp, f"seed{seed}")
  folders = {point: logs.trial_dir(os.path.join(sweep_dir, f"nadamw_{point.label}"), 0,
                                   workload.workload_id, 1) for point in points}
  if reuse and logs.completed_with(log_dir, hp) and all(
      logs.completed_with(folder, dict(hp) | point.hparams(workload.step_hint))
      for point, folder in folders.items()):
    print(f"seed {seed}: reusing the completed run in {log_dir}", flush=True)
    rows = logs.read_rows(os.path.join(log_dir, "eval_measurements.csv"))
  else:
    rows = runner.train_once(workload, sub, hp, seed, None, log_dir, runner.RunOptions(
        stop_at_target=False, save_checkpoints=False, sweep_averages=tuple(points),
        sweep_dir=sweep_dir)).eval_rows
  averaged = {point: logs.read_rows(os.path.join(folder, "eval_measurements.csv"))
              for point, folder in folders.items()}
  return rows, averaged


def _train_job(job):
  """One seed's run in a worker process (``--jobs``): the workload is rebuilt there."""
  name, seed, points, exp, bn_policy, reuse = job
  sharding.cpu_device_flags()
  return train(registry.get_workload(name, "small"), seed, points, exp, bn_policy, reuse)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workload", required=True)
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--nus", default="1,2,4,8,16,32")
  parser.add_argument("--lawa_window", type=int, default=20)
  parser.add_argument("--ema_decay", type=float, default=0.9)
  parser.add_argument("--out", default=None)
  parser.add_argument("--bn_policy", choices=("latest", "recompute"), default=None,
                      help="batch statistics of the averaged weights (batch-norm "
                      "workloads); results go to results/<workload>/bn_<policy>/")
  parser.add_argument("--jobs", type=int, default=1,
                      help="seed runs after the sweep at a time, one process each "
                      "(same results as --jobs=1; one run keeps about one CPU core busy)")
  parser.add_argument("--sweep_every_seed", action="store_true",
                      help="evaluate every nu on every seed (nu is still chosen on the "
                      "first seed); with --reuse, a later change of the target needs no "
                      "new training")
  parser.add_argument("--reuse", action="store_true",
                      help="read runs that completed with the same hyperparameters in "
                      "experiments/ instead of training them again (an interrupted "
                      "comparison picks up where it stopped)")
  parser.add_argument("--plot_only", action="store_true",
                      help="redraw curves.png from the curves.csv in --out (no training)")
  args = parser.parse_args()
  workload = registry.get_workload(args.workload, "small")
  out = args.out or os.path.join(ROOT, "results", workload.workload_id,
                                 *([f"bn_{args.bn_policy}"] if args.bn_policy else []))
  if args.plot_only:
    curves = logs.read_rows(os.path.join(out, "curves.csv"))
    plot(curves, workload, f"validation/{workload.target_metric_name}",
         os.path.join(out, "curves.png"))
    return
  exp = os.path.join(ROOT, "experiments", f"{workload.workload_id}_comparison"
                     + (f"_bn_{args.bn_policy}" if args.bn_policy else ""))
  key = f"validation/{workload.target_metric_name}"
  seeds = [int(s) for s in args.seeds.split(",")]
  nus = [int(n) for n in args.nus.split(",")]

  def lawa(nu):
    return GridPoint("lawa", nu, window=args.lawa_window)

  def ema(nu):
    return GridPoint("ema", nu, decay=args.ema_decay)

  # 1-2. The sweep on the first seed, and the nu fixed per method.
  base_rows, swept = train(workload, seeds[0], [f(n) for f in (lawa, ema) for n in nus], exp,
                           args.bn_policy, args.reuse)
  sweep_table, chosen = [], {}
  for method, make in (("lawa", lawa), ("ema", ema)):
    ranked = []
    for nu in nus:
      rows = swept[make(nu)]
      steps = steps_to_target(workload, rows, key)
      best = max(r[key] for r in rows) if workload.target_direction == "max" else min(
          r[key] for r in rows)
      sweep_table.append({"method": method, "every": nu, "steps_to_target": steps,
                          f"best_{key}": best, "seed": seeds[0]})
      sign = 1 if workload.target_direction == "max" else -1
      ranked.append((steps if steps is not None else float("inf"), -sign * best, nu))
    chosen[method] = min(ranked)[2]
    print(f"{method}: nu = {chosen[method]} ({min(ranked)[0]} steps)", flush=True)

  # 3. Every seed with the fixed nus (the first seed's runs are reused; the
  # others ``--jobs`` at a time).
  fixed = [lawa(chosen["lawa"]), ema(chosen["ema"])]
  runs = {seeds[0]: (base_rows, {p: swept[p] for p in fixed})}
  # --sweep_every_seed: the other seeds carry the whole grid too (only the
  # fixed points are reported), so they can train before the target is final.
  points = [f(n) for f in (lawa, ema) for n in nus] if args.sweep_every_seed else fixed
  jobs = [(args.workload, seed, points, exp, args.bn_policy, args.reuse) for seed in seeds[1:]]
  if args.jobs > 1 and len(jobs) > 1:
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(min(args.jobs, len(jobs))) as pool:
      runs.update(zip(seeds[1:], pool.map(_train_job, jobs), strict=True))
  else:
    runs.update((job[1], train(workload, *job[1:])) for job in jobs)
  comparison, curves = [], []
  for seed in seeds:
    rows, averaged = runs[seed]
    averaged = {p: averaged[p] for p in fixed}
    nadamw_steps = steps_to_target(workload, rows, key)
    entry = {"seed": seed, "nadamw": nadamw_steps}
    for method, point in zip(("lawa", "ema"), fixed, strict=True):
      steps = steps_to_target(workload, averaged[point], key)
      entry[f"nadamw_{method}"] = steps
      entry[f"{method}_ratio"] = (steps / nadamw_steps if steps and nadamw_steps else None)
    comparison.append(entry)
    for r in rows:
      curves.append({"seed": seed, "run": "nadamw", "global_step": r["global_step"],
                     "averaged": r[key], "online": r[key]})
    for method, point in zip(("lawa", "ema"), fixed, strict=True):
      for r in averaged[point]:
        curves.append({"seed": seed, "run": f"nadamw_{method}", "global_step": r["global_step"],
                       "averaged": r[key], "online": r.get(f"validation_online/{key[11:]}")})
    print(entry, flush=True)

  paper = PAPER_RATIOS.get(args.workload, (None, None))
  summary = []
  for (method, point), paper_ratio in zip(zip(("lawa", "ema"), fixed, strict=True), paper,
                                          strict=True):
    ratios = [c[f"{method}_ratio"] for c in comparison if c[f"{method}_ratio"] is not None]
    summary.append({"method": method, "every": point.every,
                    "window_or_decay": point.window or point.decay,
                    "seeds_reaching": len(ratios), "seeds": len(seeds),
                    "median_steps_ratio": statistics.median(ratios) if ratios else None,
                    "paper_full_scale_ratio": paper_ratio})
  os.makedirs(out, exist_ok=True)
  for name, table in (("sweep", sweep_table), ("comparison", comparison),
                      ("summary", summary), ("curves", curves)):
    logs.atomic_write_text(os.path.join(out, f"{name}.csv"), logs.format_csv(table))
  plot(curves, workload, key, os.path.join(out, "curves.png"))
  for row in summary:
    print(row)


def plot(curves, workload, key, path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(7, 4.5))
  colours = {"nadamw": "black", "nadamw_lawa": "tab:blue", "nadamw_ema": "tab:orange"}
  for run, colour in colours.items():
    for seed in sorted({c["seed"] for c in curves}):
      points = [c for c in curves if c["run"] == run and c["seed"] == seed]
      steps = [c["global_step"] for c in points]
      label = run if seed == min(c["seed"] for c in curves) else None
      ax.plot(steps, [c.get("averaged") for c in points], color=colour, lw=1.2, label=label)
      if run != "nadamw":
        ax.plot(steps, [c.get("online") for c in points], color=colour, lw=0.8, ls="--")
  ax.axhline(workload.validation_target_value, color="grey", lw=0.8, ls=":",
             label="target")
  ax.set_xlabel("step")
  ax.set_ylabel(key)
  ax.set_title(f"{workload.workload_id}: averaged (solid) vs online (dashed)")
  # Zoom on the approach to the target: the worst fifth of the values (the
  # first evals) would flatten the rest.
  values = sorted(c["averaged"] for c in curves if c.get("averaged") is not None)
  if values and workload.target_direction == "max":
    ax.set_ylim(bottom=min(values[len(values) // 5], workload.validation_target_value))
  elif values:
    top = max(values[-1 - len(values) // 5], workload.validation_target_value)
    ax.set_ylim(values[0] - 0.05 * (top - values[0]), top)
  ax.legend()
  fig.tight_layout()
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=120)
  os.replace(tmp, path)
  plt.close(fig)


if __name__ == "__main__":
  sharding.cpu_device_flags()
  main()
