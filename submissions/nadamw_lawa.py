"""NadamW (AlgoPerf baseline) + LAWA: evaluate the mean of the last L checkpoints.

A checkpoint is taken every ``lawa_every`` (ν) steps from ``lawa_start_fraction``
of the step hint on; evaluation uses the mean of the latest ``lawa_window`` (L).
"""

from __future__ import annotations

import optax

from algoperf_avg import averaging
from submissions import nadamw

HPARAMS = nadamw.HPARAMS + ("lawa_window", "lawa_every", "lawa_start_fraction", "offload")
DEFAULT_HPARAMS = {"lawa_window": 10, "lawa_every": 20, "lawa_start_fraction": 0.0,
                   "offload": False}


def make_optimizer(hparams, workload, step_hint: int) -> optax.GradientTransformation:
  """NadamW, then `averaging.lawa` as the last link."""
  return optax.chain(
      nadamw.make_optimizer(hparams, workload, step_hint),
      averaging.lawa(
          window=int(hparams["lawa_window"]),
          every=int(hparams["lawa_every"]),
          start_step=int(hparams["lawa_start_fraction"] * step_hint),
          offload=bool(hparams["offload"]),
      ),
  )
