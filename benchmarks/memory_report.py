"""Memory per device from XLA's analysis of the train step, on 1 and 8 devices.

  .venv/bin/python benchmarks/memory_report.py [--out results/benchmarks/memory_report.txt]

Cases: full OGBG with NadamW and NadamW+LAWA(L=20); full Criteo 1TB
(DLRM-small, its 4,194,304 x 128 table, AlgoPerf's batch of 262,144) with
NadamW, NadamW+EMA and NadamW+LAWA(L=20), the averages with and without
``offload`` (buffers in host memory). The table's rows are sharded over the
devices (the workload's param_partition_specs), and so are its moments and
the averaging buffers. Each device count runs in its own process (XLA fixes
the CPU device count at start-up). Nothing is allocated.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = """
from algoperf_avg import registry
from algoperf_avg.training import memory, runner, sharding

mesh = sharding.make_mesh()
lawa, ema = {"lawa_window": 20}, {"ema_decay": 0.9}
cases = [("ogbg", "nadamw", {}), ("ogbg", "nadamw_lawa", lawa),
         ("criteo1tb", "nadamw", {})]
for offload in (False, True):
  cases += [("criteo1tb", "nadamw_ema", dict(ema, offload=offload)),
            ("criteo1tb", "nadamw_lawa", dict(lawa, offload=offload))]
for name, submission, hp in cases:
  workload = registry.get_workload(name)
  sub = registry.load_submission(submission)
  hparams = runner.resolve_hparams(workload, sub, hp)
  rep = memory.report(workload, sub, hparams, mesh, runner.global_batch_size(workload, sub))
  text = rep.format()
  if hp.get("offload"):
    text = text.replace(submission, submission + " (offload)", 1)
  print(text + "\\n", flush=True)
"""


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=os.path.join(ROOT, "results", "benchmarks",
                                                    "memory_report.txt"))
  args = parser.parse_args()
  sections = ["# " + __doc__.splitlines()[0],
              "# command: .venv/bin/python benchmarks/memory_report.py", ""]
  for devices in (1, 8):
    env = dict(os.environ, PYTHONPATH=ROOT,
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         env=env, cwd=ROOT, check=False)
    if out.returncode:
      sys.exit(out.stderr[-3000:])
    sections.append(out.stdout)
    print(out.stdout, flush=True)
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  tmp = args.out + ".tmp"
  with open(tmp, "w") as f:
    f.write("\n".join(sections))
  os.replace(tmp, args.out)


if __name__ == "__main__":
  main()
