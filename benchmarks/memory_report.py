"""Memory per device from XLA's analysis of the train step, on 1 and 8 devices.

  .venv/bin/python benchmarks/memory_report.py [--out results/benchmarks/memory_report.txt]

Cases: full OGBG with NadamW and NadamW+LAWA(L=20); a toy with Criteo's
4,194,304 x 128 embedding table (tests/toy.py:EmbeddingToy) with NadamW+LAWA
(L=20), its buffers split over the devices (the default placement), with the
table replicated and with its rows sharded. Each device count runs in its own
process (XLA fixes the CPU device count at start-up). Nothing is allocated.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = """
import dataclasses, sys
import jax
from jax.sharding import PartitionSpec
from algoperf_avg import registry
from algoperf_avg.training import memory, runner, sharding
from tests.toy import EmbeddingToy
from workloads.ogbg.workload import OgbgWorkload

class RowShardedToy(EmbeddingToy):
  def param_partition_specs(self):
    return {"embedding_table": PartitionSpec("batch", None),
            "Dense_0": {"kernel": None, "bias": None}}

mesh = sharding.make_mesh()
cases = [(OgbgWorkload("full"), "nadamw", {}), (OgbgWorkload("full"), "nadamw_lawa",
         {"lawa_window": 20}), (EmbeddingToy(), "nadamw_lawa", {"lawa_window": 20})]
if jax.device_count() > 1:
  cases.append((RowShardedToy(), "nadamw_lawa", {"lawa_window": 20}))
for workload, name, hp in cases:
  sub = registry.load_submission(name)
  if isinstance(workload, EmbeddingToy):
    sub = dataclasses.replace(sub, get_batch_size=lambda _: 8192)
  hparams = runner.resolve_hparams(workload, sub, hp)
  label = "EmbeddingToy 4,194,304 x 128" + (", table rows sharded"
                                             if isinstance(workload, RowShardedToy) else "")
  rep = memory.report(workload, sub, hparams, mesh, runner.global_batch_size(workload, sub))
  text = rep.format()
  if isinstance(workload, EmbeddingToy):
    text = text.replace(rep.workload, label, 1)
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
