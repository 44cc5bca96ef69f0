"""Steps to the OGBG-small validation target per power-EMA width (CSV on stdout).

Reads the folders scripts/power_ema_ogbg_small.sh writes: the raw run
(EXP/run/snapshots), its online power EMAs (EXP/run/nadamw_powerema_*) and the
synthesised widths (EXP/posthoc/*). Usage: power_ema_table.py EXP GAMMA...
(the online gammas, named by their sigma_rel).
"""

from __future__ import annotations

import csv
import glob
import os
import sys

from algoperf_avg import averaging, targets
from algoperf_avg.training import logs


def _first_reach(rows, key, target):
  for row in rows:
    if row.get(key) is not None and row[key] >= target:
      return int(row["global_step"])
  return None


def main(exp: str, online_gammas: list[str]) -> None:
  goal = targets.TARGETS["ogbg_small"]
  key = f"validation/{goal.metric}"
  found = [("training weights", "nadamw", f"{exp}/run/snapshots")]
  for gamma in online_gammas:
    sigma = averaging.gamma_to_sigma_rel(float(gamma))
    found.append((f"sigma{sigma:.3g}", "online (sweep_averages)",
                  f"{exp}/run/nadamw_powerema_every1_gamma{gamma}"))
  found += [(os.path.basename(d).split("_powerema_")[1], "posthoc synthesis", d)
            for d in sorted(glob.glob(f"{exp}/posthoc/*"))]
  writer = csv.writer(sys.stdout, lineterminator="\n")
  writer.writerow(["width", "kind", "steps_to_target", "eval_every", "final_" + key,
                   "max_fit_relative_error"])
  for width, kind, folder in found:
    [path] = glob.glob(f"{folder}/**/eval_measurements.csv", recursive=True)
    rows = logs.read_rows(path)
    errors = [r["posthoc_fit_relative_error"] for r in rows
              if r.get("posthoc_fit_relative_error") is not None]
    writer.writerow([width, kind, _first_reach(rows, key, goal.validation),
                     goal.eval_every_steps, f"{rows[-1][key]:.4f}",
                     f"{max(errors):.2e}" if errors else ""])


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2:])
