"""Steps/s of a small workload vs the number of simulated CPU devices.

XLA gives a CPU process one device by default, which leaves cores idle on
small models; data parallelism over several host devices uses them. This
measures the train-step rate for each device count, each in a fresh process
(XLA_FLAGS is read once per process), and prints ratios to 1 device.
The harness's default (sharding.DEFAULT_CPU_DEVICES) comes from this table.

  .venv/bin/python benchmarks/cpu_devices.py --workload=ogbg --size=small
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = """
import json, sys, time
import jax
from algoperf_avg import registry
from algoperf_avg.training import runner
workload = registry.get_workload(sys.argv[1], sys.argv[2])
sub = registry.load_submission("nadamw")
hp = runner.resolve_hparams(workload, sub, {})
steps = int(sys.argv[3])
times = []
class Clock:
  def __call__(self, p):
    times.append((p.global_step, time.perf_counter()))
options = runner.RunOptions(max_global_steps=steps, eval_every_steps=10**9,
                            stop_at_target=False, save_checkpoints=False,
                            progress=Clock())
runner.train_once(workload, sub, hp, 0, None, None, options)
# Rate over the second half: compilation and warm-up excluded.
(s0, t0), (s1, t1) = times[len(times) // 2], times[-2]
print(json.dumps({"devices": jax.device_count(), "steps_per_sec": (s1 - s0) / (t1 - t0)}))
"""


def measure(workload: str, size: str, devices: int, steps: int) -> float:
  env = dict(os.environ, PYTHONPATH=ROOT,
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  out = subprocess.run([sys.executable, "-c", CHILD, workload, size, str(steps)],
                       capture_output=True, text=True, env=env, cwd=ROOT, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])["steps_per_sec"]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workload", default="ogbg")
  parser.add_argument("--size", default="small")
  parser.add_argument("--devices", default="1,2,4,8")
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--repeats", type=int, default=2)
  args = parser.parse_args()
  counts = [int(c) for c in args.devices.split(",")]
  rates = {c: [] for c in counts}
  for _ in range(args.repeats):  # interleaved, so load drifts hit all alike
    for c in counts:
      rates[c].append(measure(args.workload, args.size, c, args.steps))
  best = {c: max(r) for c, r in rates.items()}
  print(f"{args.workload}/{args.size}, nadamw, {os.cpu_count()} CPU cores, "
        f"best of {args.repeats}")
  print(f"{'devices':>8}{'steps/s':>10}{'vs 1 device':>13}")
  for c in counts:
    print(f"{c:>8}{best[c]:>10.2f}{best[c] / best[counts[0]]:>13.2f}")


if __name__ == "__main__":
  main()
