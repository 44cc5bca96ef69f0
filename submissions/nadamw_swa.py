"""NadamW (AlgoPerf baseline) + SWA: evaluate the mean of all checkpoints since a start.

Records every ``swa_every`` steps from ``swa_start_fraction`` of the step hint
on, all weighted equally (Polyak averaging when ``swa_every`` is 1).
"""

from __future__ import annotations

import optax

from algoperf_avg import averaging
from submissions import nadamw

HPARAMS = nadamw.HPARAMS + ("swa_start_fraction", "swa_every", "offload")
DEFAULT_HPARAMS = {"swa_start_fraction": 0.5, "swa_every": 1, "offload": False}


def make_optimizer(hparams, workload, step_hint: int) -> optax.GradientTransformation:
  """NadamW, then `averaging.swa` as the last link."""
  return optax.chain(
      nadamw.make_optimizer(hparams, workload, step_hint),
      averaging.swa(
          start_step=int(hparams["swa_start_fraction"] * step_hint),
          every=int(hparams["swa_every"]),
          offload=bool(hparams["offload"]),
      ),
  )
